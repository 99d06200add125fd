"""A persistent XLA compilation cache, so that a second run does not compile again.

Every jitted stage of ``nanoshape analyze`` (the detector's network on each pyramid level,
crops, the CNN, the image fit, the refinement) is compiled for each padded shape it meets;
on two CPU cores that is tens of seconds per run. JAX can keep compiled executables on
disk (``jax_compilation_cache_dir``); by default it stores only those that took over a
second to compile, so on the CPU most of nanoshape's would not be kept: the thresholds are
set to keep every one.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_cache_dir", "enable_compilation_cache"]

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
