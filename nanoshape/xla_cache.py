"""A persistent XLA compilation cache, so that a second run does not compile again.

Every jitted stage of ``nanoshape analyze`` (the detector's network on each pyramid level,
crops, the CNN, the image fit, the refinement) is compiled for each padded shape it meets;
on two CPU cores that is tens of seconds per run. JAX can keep compiled executables on
disk (``jax_compilation_cache_dir``); by default it stores only those that took over a
second to compile, so on the CPU most of nanoshape's would not be kept: the thresholds are
set to keep every one.

The compiled executable is looked up only after the function has been traced, and tracing
nanoshape's larger stages (the image fit's vmapped Levenberg-Marquardt scan, the
refinement) takes about a second each in every new process. :func:`keep_traces` keeps
those traces too, as serialised StableHLO (``jax.export``), in the compilation cache's folder.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import re
import warnings
from pathlib import Path
from typing import Any

__all__ = ["default_cache_dir", "enable_compilation_cache", "keep_traces"]

#: the value of ``compilation_cache=`` that switches the cache off
OFF = "off"


def default_cache_dir() -> Path:
    """``$JAX_COMPILATION_CACHE_DIR`` where it is set (JAX's own variable: a test session or a
    cluster job chooses the folder for every process it starts), else
    ``$XDG_CACHE_HOME/nanoshape/xla`` (``~/.cache/nanoshape/xla`` when that is not set)."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return Path(os.environ["JAX_COMPILATION_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nanoshape" / "xla"


def enable_compilation_cache(directory: str = "") -> Path | None:
    """Keep every compiled XLA executable in ``directory`` and reuse it in later processes.

    Args:
      directory: where the cache lives (created); empty: :func:`default_cache_dir`;
        ``"off"``: no persistent cache (nothing is changed).

    Returns:
      the cache directory, or None when switched off or when it cannot be created (the run
      then compiles as usual: a cache is never a reason to stop).

    The cache is keyed by JAX on the computation, the compiler options, the backend and the
    jax/jaxlib versions, so a changed model or upgrade compiles anew. Call before the first
    compilation of the process: JAX opens the cache once.
    """
    import jax

    if directory.strip().lower() == OFF:
        return None
    path = Path(directory).expanduser() if directory else default_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    if not os.access(path, os.W_OK):
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    # the defaults (1 s, and XLA's own autotuning caches) keep almost nothing on the CPU
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


#: The folder of the traces :func:`keep_traces` keeps, inside the compilation cache's (whose
#: own files JAX names ``*-cache`` and ``*-atime``: it leaves other files alone), so that
#: removing the cache removes them.
_TRACES = "nanoshape-traces"


@functools.cache
def _source_digest() -> str:
    """A digest of nanoshape's own source: a kept trace is of the code that traced it."""
    digest = hashlib.sha256()
    root = Path(__file__).parent
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _traces_dir() -> Path | None:
    """The folder of kept traces: in the compilation cache in use (none without one)."""
    import jax

    cache = jax.config.jax_compilation_cache_dir
    return Path(cache) / _TRACES if cache else None


def keep_traces(*, static_argnames: tuple[str, ...] = ()):
    """``jax.jit`` whose traces are kept on disk for later processes (in the compilation cache's folder).

    The decorated function is jitted with ``static_argnames`` as usual. Where a persistent
    compilation cache is on (:func:`enable_compilation_cache`), each call is instead served
    by ``jax.export``: the function traced for these static values and these input shapes
    and dtypes is serialised once into ``<cache>/nanoshape-traces/`` and read back by later
    processes, which then only load the compiled executable from the cache. A trace is
    keyed on the function, the static values' ``repr`` (object addresses left out), the
    inputs' tree, shapes and dtypes, the backend, the jax, jaxlib, flax and optax versions
    and a digest of nanoshape's source (a changed line traces anew). Where a trace cannot
    be made, kept, read or run, the function warns once and is plain ``jax.jit`` for the
    rest of the process: a cache is never a reason to stop.

    The static values must have a ``repr`` that says all that matters (frozen dataclasses,
    numbers, strings, an ``nnx`` graph definition).
    """

    def decorate(fun):
        import jax

        jitted = jax.jit(fun, static_argnames=static_argnames)
        signature = inspect.signature(fun)
        memory: dict[str, Any] = {}  # key -> jax.export.Exported
        failed: list[Exception] = []

        @functools.wraps(fun)
        def call(*args, **kwargs):
            directory = _traces_dir()
            if directory is None or failed:
                return jitted(*args, **kwargs)
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            static = {k: v for k, v in bound.arguments.items() if k in static_argnames}
            dynamic = {k: v for k, v in bound.arguments.items() if k not in static_argnames}
            leaves, tree = jax.tree.flatten(dynamic)
            try:
                leaves = [jax.numpy.asarray(leaf) for leaf in leaves]
                key = _trace_key(fun, static, tree, leaves)
                exported = memory.get(key) or _load_trace(directory, key)
                if exported is None:
                    exported = _export(fun, static, tree, leaves)
                    _save_trace(directory, key, exported)
                memory[key] = exported
                return exported.call(*leaves)
            except Exception as error:  # noqa: BLE001 - a cache is never a reason to stop
                # once is enough: the process goes on with the plain jitted function
                failed.append(error)
                warnings.warn(f"nanoshape: {fun.__qualname__}'s trace could not be kept or read "
                              f"({type(error).__name__}: {error}); tracing it as usual", stacklevel=2)
                return jitted(*args, **kwargs)

        def clear_cache() -> None:
            """Forget this process's traces and compilations (those kept on disk stay)."""
            jitted.clear_cache()
            memory.clear()
            failed.clear()

        call.clear_cache = clear_cache
        return call

    return decorate


def _stable_repr(value) -> str:
    """``repr`` without object addresses (``<function relu at 0x7f...>``), which change per process."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))


def _trace_key(fun, static: dict, tree, leaves) -> str:
    import flax
    import jax
    import jaxlib
    import optax

    parts = [fun.__module__, fun.__qualname__, _stable_repr(sorted(static.items())), _stable_repr(tree),
             repr([(tuple(leaf.shape), str(leaf.dtype)) for leaf in leaves]), jax.default_backend(),
             jax.__version__, jaxlib.__version__, flax.__version__, optax.__version__, _source_digest()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _export(fun, static: dict, tree, leaves):
    """``fun`` traced for these inputs into an ``Exported`` over the flat leaves (its output as ``fun`` returns it:
    containers jax serialises, and NamedTuples registered with ``jax.export.register_namedtuple_serialization``)."""
    import jax
    from jax import export

    def flat(*flat_leaves):
        return fun(**jax.tree.unflatten(tree, flat_leaves), **static)

    return export.export(jax.jit(flat))(*[jax.ShapeDtypeStruct(leaf.shape, leaf.dtype) for leaf in leaves])


def _load_trace(directory: Path, key: str):
    from jax import export

    path = directory / f"{key}.trace"
    if not path.is_file():
        return None
    try:
        return export.deserialize(bytearray(path.read_bytes()))
    except Exception:  # noqa: BLE001 - a damaged file (a killed write, another jax): traced anew
        path.unlink(missing_ok=True)
        return None


def _save_trace(directory: Path, key: str, exported) -> None:
    serialized = exported.serialize()  # outside the try: an output jax cannot serialise is the caller's warning
    try:
        directory.mkdir(parents=True, exist_ok=True)
        temporary = directory / f"{key}.{os.getpid()}.tmp"
        temporary.write_bytes(serialized)
        os.replace(temporary, directory / f"{key}.trace")
    except OSError:
        pass  # kept in memory for this process only
