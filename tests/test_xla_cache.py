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
