"""Test configuration: strict JAX promotion so silent broadcasting bugs fail here, and one
persistent XLA compilation cache for the whole session (this process and every nanoshape
it starts), so the same stage is compiled once rather than once per test file and per
subprocess."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # a fresh cache per session: nothing stale is read
    _CACHE = tempfile.mkdtemp(prefix="nanoshape-test-xla-")
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
    os.environ |= {"JAX_COMPILATION_CACHE_DIR": _CACHE, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                   "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}

import jax  # noqa: E402  (after the cache is configured: jax reads it at import)
import pytest

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto``: one test process per core, at most four (each holds several GiB of
    compiled code and arrays; a test that starts nanoshape processes adds theirs)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(4, cores))


def shared_data(*parts: str) -> Path:
    """Path under ../shared/data, or skip the test with the reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (it lives beside the checkout in ../shared/data)")
    return path


@pytest.fixture(scope="session")
def bundled_run(tmp_path_factory):
    """``nanoshape analyze output=<dir> workers=0`` on the bundled examples, run once per test
    session and shared by the CLI, pipeline and report tests (the whole pipeline with its
    defaults on three micrographs, about a minute). Under pytest-xdist each worker has its own
    session, so the run is made by the first worker to ask, under a file lock in the directory
    the workers share, and read by the others. Returns (run directory, what the command printed).
    Tests must not write into it: copy it first."""
    import contextlib
    import io

    try:
        import fcntl
    except ImportError:  # Windows: no lock (a run with -n0 or one worker needs none)
        fcntl = None

    from nanoshape.cli import main

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    output, printed = shared / "bundled_run", shared / "bundled_run.stdout"
    with open(shared / "bundled_run.lock", "w") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        if not printed.exists():  # written last: a run that failed half way is made again
            buffer = io.StringIO()
            with contextlib.redirect_stdout(buffer):
                status = main(["analyze", f"output={output}", "workers=0"])
            assert status == 0, buffer.getvalue()
            printed.write_text(buffer.getvalue())
    return output, printed.read_text()
