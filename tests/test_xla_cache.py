"""The persistent compilation cache: a small jitted function is kept on disk and found by a second process."""

import json
import os
import subprocess
import sys

import pytest

PROGRAM = """
import json, sys, time
import jax, jax.numpy as jnp
from jax._src import monitoring
from nanoshape.xla_cache import enable_compilation_cache
hits = []
monitoring.register_event_listener(lambda name, **kw: hits.append(name) if "cache_hit" in name else None)
where = enable_compilation_cache(sys.argv[1])
f = jax.jit(lambda x: jnp.sin(x) * 3 + jnp.cos(x) ** 2)
f(jnp.arange(7.0)).block_until_ready()
print(json.dumps({"dir": None if where is None else str(where), "hits": hits}))
"""


def _run(directory: str, env=None) -> dict:
    out = subprocess.run([sys.executable, "-c", PROGRAM, directory], capture_output=True, text=True, check=True,
                         env=env, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_second_process_finds_what_the_first_compiled(tmp_path):
    cache = tmp_path / "cache"
    first = _run(str(cache))
    assert first["dir"] == str(cache) and not first["hits"]
    # kept although it compiled in far less than JAX's default threshold of one second
    assert any(cache.iterdir())
    second = _run(str(cache))
    assert second["hits"], "the second process compiled again"


def test_off_keeps_nothing_and_the_default_lives_in_the_user_cache(tmp_path):
    assert _run("off")["dir"] is None
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"} | {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    default = _run("", env=env)
    assert default["dir"] == str(tmp_path / "xdg" / "nanoshape" / "xla") and any((tmp_path / "xdg").rglob("*"))
    # JAX's own variable, where set (as the test session sets it for every process), wins over the user cache
    chosen = _run("", env=env | {"JAX_COMPILATION_CACHE_DIR": str(tmp_path / "chosen")})
    assert chosen["dir"] == str(tmp_path / "chosen") and any((tmp_path / "chosen").iterdir())


TRACES = """
import json, sys
import jax, jax.numpy as jnp
from nanoshape.xla_cache import enable_compilation_cache, keep_traces
enable_compilation_cache(sys.argv[1])
traced = []

@keep_traces(static_argnames=("power",))
def f(x, pair, power):
    traced.append(power)  # runs only while tracing
    return {"y": jnp.sin(x) ** power + pair[0] * pair[1], "n": jnp.sum(x)}

out = f(jnp.arange(6.0), (jnp.float32(2.0), jnp.ones(6)), int(sys.argv[2]))
print(json.dumps({"traced": traced, "y": out["y"].tolist(), "n": float(out["n"])}))
"""


def _traces(directory, power: int, env=None) -> dict:
    out = subprocess.run([sys.executable, "-c", TRACES, str(directory), str(power)], capture_output=True, text=True,
                         check=True, env=env, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_second_process_reads_the_trace_the_first_kept(tmp_path):
    import numpy as np

    cache = tmp_path / "xla"
    first = _traces(cache, 3)
    assert first["traced"] == [3]
    kept = list((cache / "nanoshape-traces").glob("*.trace"))
    assert len(kept) == 1
    second = _traces(cache, 3)
    assert second["traced"] == [], "the second process traced the function again"
    assert second == {**first, "traced": []}
    expected = np.sin(np.arange(6.0)) ** 3 + 2.0
    assert np.allclose(first["y"], expected, atol=1e-6) and first["n"] == 15.0
    # another static value is another trace
    assert _traces(cache, 2)["traced"] == [2] and len(list((cache / "nanoshape-traces").glob("*.trace"))) == 2
    # a damaged file is traced anew, not a failure
    kept[0].write_bytes(b"not a trace")
    assert _traces(cache, 3) == first


def test_a_kept_trace_is_of_the_code_that_made_it(monkeypatch):
    import jax
    import jax.numpy as jnp

    from nanoshape import xla_cache

    leaves = [jnp.zeros(3)]
    tree = jax.tree.structure({"x": 0})
    key = xla_cache._trace_key(test_a_kept_trace_is_of_the_code_that_made_it, {"p": 1}, tree, leaves)
    assert key == xla_cache._trace_key(test_a_kept_trace_is_of_the_code_that_made_it, {"p": 1}, tree, leaves)
    assert key != xla_cache._trace_key(test_a_kept_trace_is_of_the_code_that_made_it, {"p": 2}, tree, leaves)
    assert key != xla_cache._trace_key(test_a_kept_trace_is_of_the_code_that_made_it, {"p": 1}, tree, [jnp.zeros(4)])
    monkeypatch.setattr(xla_cache, "_source_digest", lambda: "another version of nanoshape")
    assert key != xla_cache._trace_key(test_a_kept_trace_is_of_the_code_that_made_it, {"p": 1}, tree, leaves)


def test_without_a_compilation_cache_nothing_is_kept(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"} | {"XDG_CACHE_HOME": str(tmp_path)}
    assert _traces("off", 3, env=env)["traced"] == [3] and not any(tmp_path.rglob("*.trace"))


def test_a_trace_that_cannot_be_made_warns_once_and_the_function_runs_as_jitted(monkeypatch, tmp_path):
    import jax.numpy as jnp

    from nanoshape import xla_cache

    monkeypatch.setattr(xla_cache, "_traces_dir", lambda: tmp_path)
    attempts = []

    def broken(*args):
        attempts.append(args)
        raise RuntimeError("no serialiser")

    monkeypatch.setattr(xla_cache, "_export", broken)

    @xla_cache.keep_traces()
    def double(x):
        return 2 * x

    with pytest.warns(UserWarning, match="could not be kept"):
        first = double(jnp.arange(3.0))
    second = double(jnp.arange(3.0))
    assert first.tolist() == second.tolist() == [0.0, 2.0, 4.0]
    assert len(attempts) == 1, "a failed trace was attempted again"
