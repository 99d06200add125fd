"""Where and when the micrographs of a run are analysed: serially in this process, or one task
per file on a Dask cluster (a local one, or an existing one by address).

The work on each file is the pipeline's (:func:`nanoshape.pipeline.run_analysis` hands it
over as :class:`FileSteps`); this module only decides where it runs. Results are the same
either way: each micrograph is analysed independently and deterministically.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

if TYPE_CHECKING:
    from nanoshape.io import Micrograph
    from nanoshape.pipeline import ImageResult

__all__ = ["DistributeOptions", "FileSteps", "run_files", "local_cluster", "SHAPE_QUEUE_PARTICLES",
           "SHAPE_QUEUE_MICROGRAPHS", "SHAPE_QUEUE_PIXELS"]


@dataclass(frozen=True)
class DistributeOptions:
    """Where micrographs are analysed.

    Attributes:
      scheduler: address of an existing Dask scheduler (e.g. ``tcp://host:8786``); empty
        for a local cluster or a serial run.
      workers: local Dask worker processes; 0 = serial in this process, -1 = automatic
        (one per core when there are at least ``min_files_for_cluster`` micrographs and at
        least ``min_cores_for_cluster`` cores).
      min_files_for_cluster: below this many micrographs a local cluster costs more than it saves.
      min_cores_for_cluster: below this many cores the automatic choice is serial: XLA already
        spreads the crops, the CNN and the fit over every core, and each worker would
        compile them again (41 EMPS micrographs on 2 cores: 1 min 34 s serial, 2 min 20 s
        on two workers).
    """

    scheduler: str = ""
    workers: int = -1
    min_files_for_cluster: int = 8
    min_cores_for_cluster: int = 4


class FileSteps(NamedTuple):
    """A run's work on each file, cut where the serial run batches the shape stages across micrographs.

    Attributes:
      start: read, calibrate and measure one file: its record when it ends there (finished
        already, or unreadable), else ``(micrograph, result)``.
      add_shapes: the shape stages over the results of many micrographs at once.
      end: finish one micrograph's result and write it: its record.
      failed: the record of a file whose shape stages raised.
      task: the whole analysis of one file as a Dask task, ``(function, args, kwargs)``.
      report: progress, called with (files done, files in all, the stem of the last one).
    """

    start: Callable[[Path], dict[str, Any] | tuple[Micrograph, ImageResult]]
    add_shapes: Callable[[list[ImageResult]], None]
    end: Callable[[Path, Micrograph, ImageResult], dict[str, Any]]
    failed: Callable[[Path, Exception], dict[str, Any]]
    task: Callable[[Path], tuple[Callable, tuple, dict]]
    report: Callable[[int, int, str], None]


def run_files(paths: list[Path], distribute: DistributeOptions, steps: FileSteps) -> list[dict[str, Any]]:
    """Every file's record (``{"stem", "file", "status", "reason"}``): serially, or one Dask task per file."""
    workers = distribute.workers
    if workers < 0:
        cores = os.cpu_count() or 1
        enough = len(paths) >= distribute.min_files_for_cluster and cores >= distribute.min_cores_for_cluster
        workers = cores if enough else 0
    if not distribute.scheduler and (workers <= 1 or len(paths) <= 1):
        return _run_serial(paths, steps)
    import logging

    from dask.distributed import Client, as_completed

    # Hydra sets the root logger to INFO: keep dask's connection chatter off the user's terminal
    logging.getLogger("distributed").setLevel(logging.WARNING)
    if distribute.scheduler:
        client, cluster = Client(distribute.scheduler), None
    else:
        cluster = local_cluster(workers)
        client = Client(cluster)
    try:
        futures = []
        for path in paths:
            function, args, kwargs = steps.task(path)
            futures.append(client.submit(function, *args, pure=False, **kwargs))
        records = []
        for future in as_completed(futures):
            record = future.result()
            records.append(record)
            steps.report(len(records), len(paths), record["stem"])
        return records
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


#: the serial run's shape stages wait until their queue holds this many particles (or
#: :data:`SHAPE_QUEUE_MICROGRAPHS` micrographs, or :data:`SHAPE_QUEUE_PIXELS` pixels of
#: micrograph: each waits with its image and label image, 8 bytes a pixel) and then run
#: over all of them at once
SHAPE_QUEUE_PARTICLES = 2048
SHAPE_QUEUE_MICROGRAPHS = 64
SHAPE_QUEUE_PIXELS = 2**26


def _run_serial(paths: list[Path], steps: FileSteps) -> list[dict[str, Any]]:
    """Every file in this process: read, segment, measure and crop each, then the shape stages over many at once
    (:class:`nanoshape.shapequeue.ShapeQueue`); each micrograph is written as soon as its batch is done.

    Returns the records of the files, in the order of ``paths``.
    """
    from nanoshape.shapequeue import ShapeQueue

    records: dict[int, dict[str, Any]] = {}

    def done(index: int, record: dict[str, Any]) -> None:
        records[index] = record
        steps.report(len(records), len(paths), record["stem"])

    def finish(item) -> None:
        index, micrograph, result = item
        done(index, steps.end(paths[index], micrograph, result))

    def failed(item, error: Exception) -> None:
        done(item[0], steps.failed(paths[item[0]], error))

    with ShapeQueue(lambda items: steps.add_shapes([item[2] for item in items]), finish, failed,
                    size=lambda item: len(item[2].particles), flush_particles=SHAPE_QUEUE_PARTICLES,
                    max_items=SHAPE_QUEUE_MICROGRAPHS, pixels=lambda item: item[2].labels.size,
                    max_pixels=SHAPE_QUEUE_PIXELS) as queue:
        for index, path in enumerate(paths):
            started = steps.start(path)
            if isinstance(started, dict):
                done(index, started)
            else:
                queue.put((index, *started))
    return [records[i] for i in range(len(paths))]


def local_cluster(workers: int):
    """One single-threaded worker process per core (the micrographs are the parallelism), each
    started with :func:`nanoshape.gpu.worker_environment` so that they share a GPU."""
    import logging

    from dask.distributed import LocalCluster

    from nanoshape.gpu import worker_environment

    return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                        silence_logs=logging.WARNING, env=worker_environment(workers))
