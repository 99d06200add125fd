"""What produced a run: nanoshape's version, the models' digests, the date, the command, the libraries.

:func:`provenance` gathers these facts once per run; ``nanoshape analyze`` writes them into
``summary.json`` (key ``provenance``), the footer of ``report.html`` and the schema metadata
of ``particles.parquet`` (key ``nanoshape``, JSON), so a table found on its own still says
what made it. :func:`write_parquet` is the one way the run's Parquet tables are written.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:  # `nanoshape --version` imports this module: no pandas at import time
    import pandas as pd

__all__ = ["DEPENDENCIES", "PARQUET_KEY", "version", "provenance", "write_parquet", "read_parquet_provenance"]

#: the distributions whose versions a run records (those that shape its numbers or files)
DEPENDENCIES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "scipy", "scikit-image", "scikit-learn",
                "pandas", "pyarrow", "matplotlib", "tifffile", "imagecodecs", "rosettasciio", "mrcfile", "hydra-core",
                "dask", "skops")

#: schema-metadata key of the provenance in the run's Parquet files
PARQUET_KEY = b"nanoshape"


def version() -> str:
    """nanoshape's version as installed (``pyproject.toml``), or ``unknown`` when it is not installed."""
    try:
        return metadata.version("nanoshape")
    except metadata.PackageNotFoundError:
        return "unknown"


def _git_commit() -> str | None:
    """The commit of the source tree nanoshape runs from, when it is a git checkout ('+dirty' if edited)."""
    source = Path(__file__).resolve().parent.parent
    if not (source / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "") if commit else None


def _dependency_versions(names: Sequence[str] = DEPENDENCIES) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


#: The command line as the user typed it, set by the ``nanoshape`` entry point before it
#: rewrites ``sys.argv`` into Hydra overrides (a positional input becomes ``input=...``).
typed_command_line: list[str] | None = None


def provenance(models: Mapping[str, str | None] = {}, *, argv: Sequence[str] | None = None,
               now: datetime.datetime | None = None) -> dict[str, Any]:
    """The facts that say what produced a run, JSON-safe.

    Args:
      models: digests of the models used, by name (e.g. ``shape_model_sha256``: the SHA-256
        over the model folder's files, as the run fingerprint has them); None where a model
        was not used.
      argv: the command line; when None, the one typed to ``nanoshape`` if it ran this, else
        the running process's (``sys.argv``).
      now: the time to record (UTC); the present time when None.

    Returns:
      ``nanoshape_version``, ``git_commit`` (None outside a git checkout), ``date_utc`` (ISO
      8601), ``command_line`` (shell-quoted), the model digests, ``python``, ``platform``,
      ``jax_backend`` and ``dependencies`` (distribution -> version).
    """
    argv = list(argv if argv is not None else typed_command_line or sys.argv)
    if argv:
        argv[0] = os.path.basename(argv[0])
    moment = (now or datetime.datetime.now(datetime.timezone.utc)).astimezone(datetime.timezone.utc)
    try:
        import jax

        backend = jax.default_backend()
    except Exception:  # provenance must never stop a run
        backend = None
    return {
        "nanoshape_version": version(),
        "git_commit": _git_commit(),
        "date_utc": moment.isoformat(timespec="seconds"),
        "command_line": shlex.join(argv),
        **dict(models),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "jax_backend": backend,
        "dependencies": _dependency_versions(),
    }


def write_parquet(table: pd.DataFrame, path: str | os.PathLike, facts: Mapping[str, Any] | None = None) -> None:
    """Write ``table`` as Parquet (no index), with ``facts`` as JSON under the schema key :data:`PARQUET_KEY`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrow = pa.Table.from_pandas(table, preserve_index=False)
    if facts is not None:
        arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), PARQUET_KEY: json.dumps(dict(facts))})
    pq.write_table(arrow, path)


def read_parquet_provenance(path: str | os.PathLike) -> dict[str, Any] | None:
    """The provenance stored in a Parquet file's schema by :func:`write_parquet`, or None."""
    import pyarrow.parquet as pq

    stored = (pq.read_schema(path).metadata or {}).get(PARQUET_KEY)
    return json.loads(stored) if stored else None
