"""Shared helpers of the benchmarks: the machine line and a robust timer."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from typing import Callable


def machine() -> str:
    """One line naming the machine, the Python and the JAX versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = f"Python {platform.python_version()}"
    try:
        import jax

        versions += f", jax {jax.__version__} ({jax.default_backend()})"
    except ImportError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; {versions}"


def command() -> str:
    return "python " + " ".join(sys.argv)


def interleaved_times(fns: dict[str, Callable[[], object]], *, rounds: int = 7, warmup: int = 1) -> dict[str, list[float]]:
    """Wall times of several functions timed in alternation: round r runs each once, in turn.

    On a shared machine the load drifts over a run; timing A five times and then B five
    times lets that drift enter the ratio A/B, while alternating gives each round its own
    ratio under the same load. Returns name -> the ``rounds`` times in seconds.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def median_time(fn: Callable[[], object], *, repeats: int = 7, warmup: int = 2, inner: int = 1) -> float:
    """Median wall time of ``inner`` back-to-back calls of ``fn``, per call, after ``warmup`` calls.

    ``fn`` must block until its result is ready (``jax.block_until_ready``).
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - start) / inner)
    return statistics.median(times)
