"""The run directory's contract: when a rerun may resume, who may write, when a run is done.

A run directory of ``nanoshape analyze`` is written by one run at a time and never holds
results that do not match what it says:

- ``run.json`` holds the run's fingerprint (every option that shapes a micrograph's results,
  and the shape model's digest); a rerun with another stops before writing and names each
  option that differs (:func:`open_run`); ``overwrite=True`` deletes nanoshape's own files.
- ``parts/info/<stem>.json`` records the SHA-256 of the input; a rerun whose input changed
  or is missing stops and names it, and damaged parts are redone (:func:`plan_resume`).
- ``.nanoshape.lock`` is ``flock``-ed while a run writes (a second run stops, naming the
  first's process id; the lock dies with its process).
- ``complete.json`` is written last and removed when a run starts.

Every file is written by :func:`atomic_write` (old or new, never half), and a killed run's
temporaries are removed by the next run, under the lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

__all__ = ["RUN_FILE", "COMPLETE_FILE", "LOCK_FILE", "RESULT_FOLDERS", "RunDirectoryError", "ResumePlan",
           "atomic_write", "file_sha256", "folder_sha256", "part_paths", "name_problem", "part_problem", "check_output", "open_run",
           "plan_resume", "mark_complete", "is_complete", "is_run_directory", "run_directory_holding"]

RUN_FORMAT = "nanoshape-run-1"
RUN_FILE = "run.json"
COMPLETE_FILE = "complete.json"
LOCK_FILE = ".nanoshape.lock"
#: folders of a run directory that hold its results (never micrographs to analyse)
RESULT_FOLDERS = ("parts", "labels", "overlays", "crops", "figures", "tables", "groups")
#: everything nanoshape writes into a run directory; ``overwrite`` removes these and nothing else
_OWNED = RESULT_FOLDERS + ("particles.csv", "particles.parquet", "dropped.csv", "summary.json", "report.html",
                           "config.yaml", RUN_FILE, COMPLETE_FILE)
_INFO_KEYS = ("image", "path", "sha256", "height_px", "width_px", "pixel_size_nm", "particles", "timings")


class RunDirectoryError(Exception):
    """The run directory cannot take this run; ``str()`` names it and says what to do."""


# ----------------------------------------------------------------------------- writing files


_TEMPORARY_NUMBERS = itertools.count()


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Write ``path`` through ``write(temporary)`` and a rename: never a half-written file.

    The temporary sits in the same folder (so the rename is atomic), is named
    ``.<start of the name>.tmp-<pid>-<n>`` (short, whatever the length of the name), and is
    removed if ``write`` fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name[:64]}.tmp-{os.getpid()}-{next(_TEMPORARY_NUMBERS)}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _remove_stale_temporaries(output: Path) -> None:
    """Delete half-written files left by a killed run (call under the lock)."""
    folders = [output]
    for name in RESULT_FOLDERS:
        if (output / name).is_dir():
            folders += [output / name, *(p for p in (output / name).rglob("*") if p.is_dir() and not p.is_symlink())]
    for folder in folders:
        for stale in folder.glob(".*.tmp-*"):
            with contextlib.suppress(OSError):
                stale.unlink()


def file_sha256(path: str | os.PathLike) -> str | None:
    """SHA-256 of a file's bytes (hex), or None where it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def folder_sha256(folder: str | os.PathLike) -> str | None:
    """SHA-256 over every file below a folder (relative names and bytes, in sorted order)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + (file_sha256(path) or "").encode())
    return digest.hexdigest()


# ----------------------------------------------------------------------------- parts of one micrograph


def part_paths(output: str | os.PathLike, stem: str) -> dict[str, Path]:
    """Where one micrograph's results go; ``particles`` is written last and marks it finished."""
    output = Path(output)
    return {
        "labels": output / "labels" / f"{stem}.tif",
        "overlay": output / "overlays" / f"{stem}.png",
        "crops": output / "crops" / f"{stem}.npy",
        "views": output / "parts" / "views" / f"{stem}.npz",
        "dropped": output / "parts" / "dropped" / f"{stem}.parquet",
        "info": output / "parts" / "info" / f"{stem}.json",
        "particles": output / "parts" / "particles" / f"{stem}.parquet",
    }


def name_problem(output: str | os.PathLike, stem: str) -> str | None:
    """Why a micrograph's results cannot be named after ``stem`` in ``output``, or None."""
    try:
        limit = os.pathconf(output, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        limit = 255
    longest = max(len(path.name.encode()) for path in part_paths(output, stem).values())
    if longest > limit:
        return (f"the file name is too long to name its results ({longest} bytes with the result's suffix, "
                f"{limit} at most on this file system); rename it shorter")
    return None


def part_problem(output: str | os.PathLike, stem: str, *, overlays: bool = False, crops: bool = False) -> str | None:
    """What is wrong with a finished micrograph's saved results, or None when they read back whole."""
    import pyarrow.parquet as pq
    import tifffile

    paths = part_paths(output, stem)
    relative = {name: path.relative_to(output) for name, path in paths.items()}
    for name in ("particles", "dropped"):
        try:
            pq.read_table(paths[name])
        except Exception as error:
            return f"{relative[name]} cannot be read ({_short(error)})"
    try:
        info = json.loads(paths["info"].read_text())
    except Exception as error:
        return f"{relative['info']} cannot be read ({_short(error)})"
    missing = [key for key in _INFO_KEYS if key not in info]
    if missing:
        return f"{relative['info']} lacks {missing}"
    try:
        with tifffile.TiffFile(paths["labels"]) as tif:
            page = tif.pages.first
            size = paths["labels"].stat().st_size
            if any(o + c > size for o, c in zip(page.dataoffsets, page.databytecounts)):
                return f"{relative['labels']} is truncated"
            shape = tuple(page.shape)
    except Exception as error:
        return f"{relative['labels']} cannot be read ({_short(error)})"
    if shape != (info["height_px"], info["width_px"]):
        return f"{relative['labels']} is {shape[0]} x {shape[1]} px, its micrograph {info['height_px']} x {info['width_px']}"
    if overlays and not _whole_png(paths["overlay"]):
        return f"{relative['overlay']} is missing or truncated"
    if crops:
        try:
            import numpy as np

            np.load(paths["crops"], mmap_mode="r", allow_pickle=False)
        except Exception as error:
            return f"{relative['crops']} cannot be read ({_short(error)})"
    return None


def _whole_png(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            if handle.read(8) != b"\x89PNG\r\n\x1a\n":
                return False
            handle.seek(-12, os.SEEK_END)
            return handle.read(12)[4:8] == b"IEND"
    except OSError:
        return False


def _short(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    if isinstance(error, OSError) and error.strerror:
        text = error.strerror
    return f"{type(error).__name__}: {text}"[:160]


# ----------------------------------------------------------------------------- opening a run


def check_output(output: str | os.PathLike) -> Path:
    """Create the output folder, or say in one sentence why it cannot take a run.

    Raises:
      RunDirectoryError: the path is a file, or the folder cannot be created or written
        (permissions, a read-only file system, a full disk), naming the path.
    """
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise RunDirectoryError(f"the output {output} is a file, not a folder; give output= a folder for the results")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunDirectoryError(f"cannot create the output folder {output}: {error.strerror or error}") from None
    probe = output / f".nanoshape-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise RunDirectoryError(f"cannot write into the output folder {output}: {error.strerror or error}") from None
    return output


def _lock(output: Path):
    import fcntl

    try:
        handle = open(output / LOCK_FILE, "a+")
    except OSError as error:
        raise RunDirectoryError(f"cannot write into the output folder {output}: {error.strerror or error}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "its process id not yet written"
        handle.close()
        raise RunDirectoryError(f"another nanoshape run ({holder}) is writing into {output}; wait for it to finish "
                                f"(running the same command again then resumes) or choose another output=") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"process {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}")
    handle.flush()
    return handle


@contextlib.contextmanager
def open_run(output: str | os.PathLike, fingerprint: Mapping[str, Any], *, overwrite: bool = False) -> Iterator[Path]:
    """Hold the run directory for one run: lock it, check or record its fingerprint.

    Args:
      output: the run directory (created).
      fingerprint: JSON-able description of everything that shapes a micrograph's results.
      overwrite: delete the directory's earlier results first and start over.

    Yields:
      the run directory, locked; ``complete.json`` removed; stale temporaries removed.

    Raises:
      RunDirectoryError: the directory cannot be written, another run holds it, or it holds
        results made with another fingerprint (each difference named).
    """
    output = check_output(output)
    handle = _lock(output)
    try:
        if overwrite:
            _clear_results(output)
        _check_fingerprint(output, fingerprint)
        (output / COMPLETE_FILE).unlink(missing_ok=True)
        _remove_stale_temporaries(output)
        yield output
    finally:
        handle.close()


def _clear_results(output: Path) -> None:
    if not is_run_directory(output):
        return
    for name in _OWNED:
        path = output / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def _canonical(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _check_fingerprint(output: Path, fingerprint: Mapping[str, Any]) -> None:
    record = {"format": RUN_FORMAT, **_canonical(dict(fingerprint))}
    run_file = output / RUN_FILE
    if not run_file.exists():
        if _holds_results(output):
            raise RunDirectoryError(
                f"{output} holds results of a run that did not record its options (an earlier nanoshape): a rerun "
                f"cannot tell whether they match. Choose another output=, or add overwrite=true to delete its results "
                f"and start over")
        atomic_write(run_file, lambda tmp: tmp.write_text(json.dumps(record, indent=1)))
        return
    try:
        stored = json.loads(run_file.read_text())
    except (OSError, ValueError) as error:
        raise RunDirectoryError(f"{run_file} cannot be read ({_short(error)}); add overwrite=true to start over") from None
    differences = _differences(stored, record)
    if differences:
        shown = "; ".join(differences[:8]) + (f"; and {len(differences) - 8} more" if len(differences) > 8 else "")
        raise RunDirectoryError(
            f"{output} holds a run made with other settings ({shown}), so its results would not match this run. "
            f"Rerun with the same options to resume, choose another output=, or add overwrite=true to delete its "
            f"results and start over")


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in list(dict.fromkeys([*new, *old])):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in old:
                out.append(f"{name}: not recorded there, {json.dumps(new[key])} now")
            elif key not in new:
                out.append(f"{name}: {json.dumps(old[key])} there, no such setting now")
            else:
                out += _differences(old[key], new[key], name)
        return out
    if json.dumps(old, sort_keys=True) != json.dumps(new, sort_keys=True):
        return [f"{prefix}: {json.dumps(old)} there, {json.dumps(new)} now"]
    return []


def _holds_results(output: Path) -> bool:
    return (output / "parts").is_dir() or (output / "summary.json").exists() or (output / "labels").is_dir()


# ----------------------------------------------------------------------------- resuming


@dataclass(frozen=True)
class ResumePlan:
    """What a rerun finds in its run directory.

    Attributes:
      finished: stems whose saved results are whole and whose input is unchanged.
      redone: stem -> why its saved results were damaged (its finished-marker removed, so
        it is analysed again).
    """

    finished: frozenset[str]
    redone: dict[str, str]


def plan_resume(output: str | os.PathLike, inputs: Mapping[str, tuple[Path, str | None]], *, overlays: bool = False,
                crops: bool = False) -> ResumePlan:
    """Check a run directory's finished micrographs against this run's inputs.

    Args:
      output: the run directory (held with :func:`open_run`).
      inputs: stem -> (file, SHA-256 of its bytes or None where unreadable).
      overlays, crops: whether each finished micrograph must have its overlay / crops.

    Returns:
      the plan; damaged micrographs' markers are removed.

    Raises:
      RunDirectoryError: a finished micrograph's input now holds other bytes, or the
        directory holds results of files that are not among the inputs (each named).
    """
    output = Path(output)
    marker_folder = output / "parts" / "particles"
    done = sorted(p.stem for p in marker_folder.glob("*.parquet")) if marker_folder.is_dir() else []
    finished, redone, changed = set(), {}, []
    for stem in done:
        if stem not in inputs:
            continue
        problem = part_problem(output, stem, overlays=overlays, crops=crops)
        if problem is None:
            info = json.loads(part_paths(output, stem)["info"].read_text())
            path, digest = inputs[stem]
            if digest is not None and info["sha256"] != digest:
                changed.append(f"{path} (analysed from {info['path']}, whose bytes were different)")
                continue
            finished.add(stem)
        else:
            redone[stem] = problem
            part_paths(output, stem)["particles"].unlink(missing_ok=True)
    if changed:
        raise RunDirectoryError(
            f"{output} holds results of inputs that have changed since: {'; '.join(changed[:5])}"
            + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
            + ". Choose another output=, or add overwrite=true to delete its results and start over")
    gone = [stem for stem in done if stem not in inputs]
    if gone:
        raise RunDirectoryError(
            f"{output} holds results of {len(gone)} micrograph(s) that are not among the inputs now "
            f"({', '.join(gone[:5])}{' ...' if len(gone) > 5 else ''}), so its tables would not match its labels. "
            f"Give the same input= as before, choose another output=, or add overwrite=true to start over")
    return ResumePlan(finished=frozenset(finished), redone=redone)


# ----------------------------------------------------------------------------- completion, discovery


def mark_complete(output: str | os.PathLike, record: Mapping[str, Any]) -> None:
    """Write ``complete.json``: the last file of a finished run."""
    body = {"format": RUN_FORMAT, "completed": time.strftime("%Y-%m-%dT%H:%M:%S"), **_canonical(dict(record))}
    atomic_write(Path(output) / COMPLETE_FILE, lambda tmp: tmp.write_text(json.dumps(body, indent=1)))


def is_complete(output: str | os.PathLike) -> bool:
    """Whether a run directory holds a finished run."""
    return (Path(output) / COMPLETE_FILE).is_file()


def is_run_directory(path: str | os.PathLike) -> bool:
    """Whether a folder is a nanoshape run directory (of this version or an earlier one)."""
    path = Path(path)
    try:
        if (path / RUN_FILE).is_file():
            return json.loads((path / RUN_FILE).read_text()).get("format", "").startswith("nanoshape-run")
        return (path / "parts" / "particles").is_dir() or ((path / "summary.json").is_file() and (path / "labels").is_dir())
    except (OSError, ValueError, AttributeError):
        return False


def run_directory_holding(path: str | os.PathLike) -> Path | None:
    """The run directory whose results a file is (it lies in one of its result folders), or None."""
    path = Path(os.path.abspath(path))
    for folder, parent in zip(path.parents, path.parents[1:]):
        if folder.name in RESULT_FOLDERS and is_run_directory(parent):
            return parent
    return None
