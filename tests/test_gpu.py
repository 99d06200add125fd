"""GPU readiness checked on the CPU: every local Dask worker starts without preallocating
75 % of a GPU's memory, with its share as the limit (nanoshape.gpu)."""

import os

from nanoshape.gpu import worker_environment


def test_workers_share_a_gpu_and_the_callers_settings_win():
    assert worker_environment(2, environ={}) == {"XLA_PYTHON_CLIENT_PREALLOCATE": "false",
                                                 "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.45",
                                                 "XLA_CLIENT_MEM_FRACTION": "0.45"}
    assert worker_environment(1, environ={})["XLA_CLIENT_MEM_FRACTION"] == "0.75"  # JAX's own default, no more
    assert float(worker_environment(7, environ={})["XLA_CLIENT_MEM_FRACTION"]) * 7 <= 0.9
    mine = worker_environment(4, environ={"XLA_PYTHON_CLIENT_MEM_FRACTION": ".5"})
    assert mine == {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    assert worker_environment(4, environ={"XLA_PYTHON_CLIENT_ALLOCATOR": "platform"}) == {}


def _worker_state():
    import sys

    names = ("XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION", "XLA_CLIENT_MEM_FRACTION")
    return {name: os.environ.get(name) for name in names}, "jax" in sys.modules


def test_each_worker_process_of_an_analysis_starts_with_the_gpu_settings(monkeypatch):
    """The cluster nanoshape analyze workers=N starts: its processes have the settings from the
    start (before JAX is imported there), without this process's environment changing."""
    from dask.distributed import Client

    from nanoshape.schedule import local_cluster

    for name in ("XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION", "XLA_CLIENT_MEM_FRACTION",
                 "XLA_PYTHON_CLIENT_ALLOCATOR"):
        monkeypatch.delenv(name, raising=False)
    with local_cluster(2) as cluster, Client(cluster) as client:
        states = client.run(_worker_state)
    assert len(states) == 2
    for env, jax_imported in states.values():
        assert env == {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.45",
                       "XLA_CLIENT_MEM_FRACTION": "0.45"}
    assert "XLA_PYTHON_CLIENT_PREALLOCATE" not in os.environ
