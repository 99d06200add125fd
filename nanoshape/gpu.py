"""How worker processes share a GPU: the environment each local Dask worker starts with.

JAX preallocates 75 % of a GPU's memory in every process on its first operation, so two
workers on one GPU would already fail. Each of ``n`` local workers therefore starts with
preallocation off and a memory limit of ``0.9 / n`` of the GPU (JAX's BFC allocator keeps
that limit when it grows on demand: https://docs.jax.dev/en/latest/gpu_memory_allocation.html).
The variables are set by the Dask nanny when it spawns the worker process, before anything
is imported there. Settings the caller made are kept (workers inherit them). On a CPU the
variables do nothing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

__all__ = ["GPU_MEMORY_SHARE", "worker_environment"]

#: share of a GPU's memory the local workers may take together
GPU_MEMORY_SHARE = 0.9

# JAX reads XLA_CLIENT_MEM_FRACTION; XLA_PYTHON_CLIENT_MEM_FRACTION is its older name
_FRACTION_NAMES = ("XLA_PYTHON_CLIENT_MEM_FRACTION", "XLA_CLIENT_MEM_FRACTION")


def worker_environment(n_workers: int, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment variables for each of ``n_workers`` local worker processes sharing one GPU.

    Args:
      n_workers: local worker processes.
      environ: the caller's environment (default ``os.environ``): a variable set there is
        left to it (the workers inherit it), as are all of them when it chose an allocator
        (``XLA_PYTHON_CLIENT_ALLOCATOR``).

    Returns:
      ``{name: value}`` to set in each worker before JAX is imported there.

    Example:
      >>> worker_environment(3, environ={})
      {'XLA_PYTHON_CLIENT_PREALLOCATE': 'false', 'XLA_PYTHON_CLIENT_MEM_FRACTION': '0.3', 'XLA_CLIENT_MEM_FRACTION': '0.3'}
    """
    environ = os.environ if environ is None else environ
    if "XLA_PYTHON_CLIENT_ALLOCATOR" in environ:
        return {}
    env = {}
    if "XLA_PYTHON_CLIENT_PREALLOCATE" not in environ:
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    if not any(name in environ for name in _FRACTION_NAMES):
        share = math.floor(1000 * min(0.75, GPU_MEMORY_SHARE / max(n_workers, 1))) / 1000  # never above the share
        fraction = f"{share:g}"
        env |= {name: fraction for name in _FRACTION_NAMES}
    return env
