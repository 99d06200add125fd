"""Read micrographs: pixels as float32, the pixel size in nm, and what the file said.

The first stage of the analysis, ``files --read--> Micrograph(pixels, pixel_size_nm, meta)``.
:func:`read_micrograph` reads one file (TIFF in its ImageJ, OME, FEI/Thermo, Zeiss and
Olympus flavours, and TVIPS, Gatan and JEOL SightX calibrations through rosettasciio; PNG, JPEG, BMP; Gatan DM3/DM4; MRC; Velox and Berkeley EMD) and
:func:`find_micrographs` turns a file, folder or glob into the list of files to read.
:func:`write_tiff` writes the ImageJ-calibrated TIFF that :func:`read_micrograph` reads back
with the same pixel size (example micrographs, label images).

Every problem with a file is a :class:`MicrographError` whose message starts with the path;
anything the reader fixed or guessed on its way (a colour image made grey, a stack cut to
its first frame, a pixel size it did not trust) is listed in ``meta["warnings"]``.
"""

from __future__ import annotations

import glob
import math
import os
import warnings as _warnings
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = [
    "read_file_table",
    "SUPPORTED_SUFFIXES",
    "MAX_PIXELS",
    "PIXEL_SIZE_NM_RANGE",
    "Micrograph",
    "MicrographError",
    "as_micrograph",
    "find_inputs",
    "find_micrographs",
    "read_micrograph",
    "write_csv",
    "write_labels",
    "write_tiff",
]

#: File name endings read by :func:`read_micrograph` (lower case).
SUPPORTED_SUFFIXES: tuple[str, ...] = (
    ".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".dm3", ".dm4", ".mrc", ".mrcs", ".emd",
)

_KIND_BY_SUFFIX = {
    ".tif": "tiff", ".tiff": "tiff", ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".bmp": "bmp",
    ".dm3": "dm", ".dm4": "dm", ".mrc": "mrc", ".mrcs": "mrc", ".emd": "hdf5",
}
_PILLOW_KINDS = frozenset({"png", "jpeg", "bmp", "gif"})
_KIND_NAMES = {"tiff": "TIFF", "png": "PNG", "jpeg": "JPEG", "bmp": "BMP", "gif": "GIF", "dm": "Gatan DM",
               "mrc": "MRC", "hdf5": "EMD (HDF5)"}

#: A pixel size outside this range (nm) cannot come from a microscope: 0.1 pm to 1 mm.
PIXEL_SIZE_NM_RANGE = (1e-4, 1e6)
_PIXEL_SIZE_NM_RANGE = PIXEL_SIZE_NM_RANGE
#: Largest image (height x width) read by default: a 16k x 16k montage fits; a header that
#: declares more is refused before anything is decoded (1.2 GB as float32, and the analysis
#: needs several times that).
MAX_PIXELS = 300_000_000
# Stored values whose magnitude lies outside [2^-64, 2^64] are scaled by a power of two
# (exact) before the float32 conversion: float32 cannot hold 1e40, and the analysis's
# statistics lose precision on values of 1e-30.
_VALUE_MAGNITUDE_LOG2_RANGE = (-64, 64)
# Resolution tags in inch/cm are calibrations only for pixels this small; larger ones
# (72 dpi = 352,778 nm, even 4800 dpi = 5,292 nm) are the dpi an image editor writes.
_RESOLUTION_TAG_MAX_NM = 1000.0
# ITU-R BT.709 luma weights, as skimage.color.rgb2gray.
_LUMA_WEIGHTS = (0.2125, 0.7154, 0.0721)
_WRITE_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.uint32), np.dtype(np.float32))

_NM_PER_UNIT = {
    "m": 1e9, "meter": 1e9, "metre": 1e9, "meters": 1e9, "metres": 1e9,
    "cm": 1e7, "mm": 1e6,
    "um": 1e3, "µm": 1e3, "micron": 1e3, "microns": 1e3, "micrometer": 1e3, "micrometre": 1e3,
    "micrometers": 1e3, "micrometres": 1e3,
    "nm": 1.0, "nanometer": 1.0, "nanometre": 1.0, "nanometers": 1.0, "nanometres": 1.0,
    "a": 0.1, "å": 0.1, "ang": 0.1, "angstrom": 0.1, "angstroms": 0.1,
    "pm": 1e-3, "picometer": 1e-3, "picometre": 1e-3,
    "in": 2.54e7, "inch": 2.54e7, "inches": 2.54e7,
}
_NO_UNITS = frozenset({"", "pixel", "pixels", "px", "none", "<auto>", "unknown", "a.u.", "au"})


class MicrographError(ValueError):
    """A file that cannot be analysed; ``str()`` is ``'<path>: <reason>'`` so users can act on it.

    Attributes:
      path: the file.
      reason: what is wrong with it, in words a user can act on.
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):
        # Dask sends errors between processes; the default pickling would call __init__
        # with the formatted message only.
        return (type(self), (self.path, self.reason))


@dataclass(frozen=True, eq=False)
class Micrograph:
    """One micrograph as the analysis sees it.

    Attributes:
      pixels: (H, W) float32, finite: the stored values with any calibration function of the
        file applied (e.g. ImageJ ``c0 + c1 * raw``).
      pixel_size_nm: nm per pixel, from the override or the metadata; None where neither gives one.
      path: the file read.
      meta: JSON-serialisable facts about the file: ``format``, ``dtype`` and ``shape`` as
        stored, ``pixel_size_source`` (``'metadata: ImageJ'``, ``'pixel_size_nm override'``, None, ...),
        ``pixel_size_nm_metadata`` and its source, vendor tags, ``warnings`` (list of str).
    """

    pixels: np.ndarray
    pixel_size_nm: float | None
    path: Path
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        # any real or boolean dtype is taken as its values in float32 (the analysis's type)
        if not isinstance(self.pixels, np.ndarray) or self.pixels.ndim != 2 or self.pixels.dtype.kind not in "biuf":
            raise ValueError(f"Micrograph.pixels must be a 2-D array of real numbers, got {_describe_array(self.pixels)}")
        if self.pixels.dtype != np.float32:
            object.__setattr__(self, "pixels", self.pixels.astype(np.float32))
        object.__setattr__(self, "path", Path(self.path))

    @property
    def stem(self) -> str:
        """The file name without its last suffix; names the micrograph's results."""
        return self.path.stem


def _describe_array(array: Any) -> str:
    shape = getattr(array, "shape", None)
    dtype = getattr(array, "dtype", type(array).__name__)
    return f"{dtype} of shape {shape}"


# --------------------------------------------------------------------------- public API


def read_micrograph(path: str | os.PathLike, *, pixel_size_nm: float | None = None,
                    max_pixels: int = MAX_PIXELS) -> Micrograph:
    """Read one micrograph file into float32 pixels with its pixel size.

    The format is chosen by the suffix and checked against the file's first bytes; a file
    whose content is another supported format (a PNG named ``.tif``) is read as what it is,
    with a warning. Colour images become grey (the channel itself where R = G = B, else
    BT.709 luminance with a warning), stacks give their first frame (with a warning), and
    non-finite pixels are replaced by the median of the finite ones (with a warning), and
    values of a magnitude float32 cannot hold well (above 2^64 or below 2^-64, e.g. counts
    scaled by 1e36 or 1e-30) are scaled by a power of two (with a warning; the intensity
    columns are then in those units).

    Args:
      path: the file; its suffix must be one of :data:`SUPPORTED_SUFFIXES`.
      pixel_size_nm: nm per pixel to use instead of the metadata (``meta`` keeps both).
      max_pixels: largest height x width read; a TIFF, PNG, JPEG, BMP or MRC header that
        declares more is refused before its pixels are decoded (DM and EMD files are
        checked once read).

    Returns:
      The :class:`Micrograph`.

    Raises:
      MicrographError: the file is missing, empty, truncated or corrupt, of an unsupported
        type, not a 2-D image, too large, all non-finite, or ``pixel_size_nm`` is not a
        number in :data:`PIXEL_SIZE_NM_RANGE`.
    """
    path = Path(path)
    if pixel_size_nm is not None:
        pixel_size_nm = _check_override(path, pixel_size_nm)
    kind = _check_file(path)
    notes = _Notes(max_pixels)
    head = _read_head(path)
    found = _sniff(head)
    if found is not None and found != kind:
        notes.warn(f"the content is {_KIND_NAMES[found]} although the name ends in {path.suffix}; "
                   f"read as {_KIND_NAMES[found]}")
        kind = found
    elif found is None and kind in ("tiff", "png", "jpeg", "bmp", "hdf5"):
        raise MicrographError(path, f"not a valid {_KIND_NAMES[kind]} file: it does not start with a "
                                    f"{_KIND_NAMES[kind]} signature (first bytes {head[:8]!r}); "
                                    f"corrupt, or another format")
    try:
        if kind == "tiff":
            raw, layout = _read_tiff(path, notes)
        elif kind in _PILLOW_KINDS:
            raw, layout = _read_pillow(path, head, notes)
        elif kind == "dm":
            raw, layout = _read_dm(path, notes)
        elif kind == "mrc":
            raw, layout = _read_mrc(path, notes)
        else:
            raw, layout = _read_emd(path, notes)
    except MicrographError:
        raise
    except MemoryError:
        raise MicrographError(path, "too large to read into memory") from None
    except Exception as error:
        raise MicrographError(path, f"cannot be read as {_KIND_NAMES[kind]} (truncated or corrupt file?): "
                                    f"{type(error).__name__}: {error}") from error
    grey = _to_grey_2d(path, raw, layout, notes)
    _check_pixel_count(path, *grey.shape, notes)
    pixels = _to_float32(_scale_extreme_values(grey, notes))
    del raw, grey  # free the stored samples now (a 16k x 16k uint16 image is 512 MB)
    _apply_value_calibration(pixels, notes)
    _replace_non_finite(path, pixels, notes)
    size_nm = _resolve_pixel_size(pixel_size_nm, notes)
    return Micrograph(pixels, size_nm, path, notes.finish())


def as_micrograph(image: Any, *, pixel_size_nm: float | None = None, name: str = "array") -> Micrograph:
    """A :class:`Micrograph` from an image array (a :class:`Micrograph` is returned as it is).

    The pixels are treated as a file's are: any real or boolean dtype (uint8, uint16, int,
    float64, bool, a JAX array...) becomes float32 values, values beyond float32's
    comfortable range are scaled by a power of two, non-finite pixels are replaced by the
    median of the others (each with a warning in ``meta``), and (H, W, 3) or (H, W, 4)
    colour arrays become grey as a colour file's pixels do.

    Args:
      image: (H, W) grey, or (H, W, 3|4) colour, array.
      pixel_size_nm: nm per pixel; None leaves sizes in px.
      name: the micrograph's name (its ``stem``: the ``image`` column of the particle table).

    Raises:
      MicrographError: not a 2-D image of real numbers, every pixel non-finite, or
        ``pixel_size_nm`` not a number in :data:`PIXEL_SIZE_NM_RANGE`.

    Example:
      >>> import numpy as np
      >>> micrograph = as_micrograph(np.full((4, 6), 200, np.uint8), pixel_size_nm=0.5, name="flat")
      >>> micrograph.pixels.dtype, micrograph.pixels.shape, micrograph.stem, micrograph.meta["pixel_size_source"]
      (dtype('float32'), (4, 6), 'flat', 'given with the array')
    """
    if isinstance(image, Micrograph):
        return image
    path = Path(name)
    if pixel_size_nm is not None:
        pixel_size_nm = _check_override(path, pixel_size_nm)
    raw = np.asarray(image)
    if raw.dtype.kind not in "biuf" or raw.ndim not in (2, 3) or (raw.ndim == 3 and raw.shape[-1] not in (3, 4)):
        raise MicrographError(path, f"an image must be a 2-D (H, W) or colour (H, W, 3|4) array of real numbers, "
                                    f"got {_describe_array(raw)}")
    notes = _Notes()
    notes.meta.update({"format": "array", "dtype": str(raw.dtype), "shape": list(raw.shape)})
    grey = _to_grey_2d(path, raw, "grey" if raw.ndim == 2 else "colour", notes)
    pixels = _to_float32(_scale_extreme_values(grey.astype(np.float32) if grey.dtype == bool else grey, notes))
    if np.shares_memory(pixels, raw):  # never change the caller's array in place
        pixels = pixels.copy()
    _apply_value_calibration(pixels, notes)
    _replace_non_finite(path, pixels, notes)
    notes.meta["pixel_size_nm"] = pixel_size_nm
    notes.meta["pixel_size_source"] = "given with the array" if pixel_size_nm is not None else None
    return Micrograph(pixels, pixel_size_nm, path, notes.finish())


def find_micrographs(spec: str | os.PathLike) -> list[Path]:
    """List the micrograph files a user means by one input (:func:`find_inputs` without its notes)."""
    return find_inputs(spec)[0]


def read_file_table(path: str | os.PathLike, column: str, what: str) -> list[tuple[int, str, str]]:
    """The rows of a ``file,<column>`` CSV that name a file: (row number, file, value), both stripped.

    Args:
      path: the CSV (UTF-8, a byte-order mark allowed).
      column: the second column's name.
      what: what the file is, for the messages ("scale bar label file").

    Raises:
      ValueError: the file is missing or lacks the two columns (the message names it).
    """
    import csv

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: {what} not found (a CSV with columns file,{column})")
    rows = []
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        names = [name.strip() for name in reader.fieldnames or []]
        if not {"file", column} <= set(names):
            raise ValueError(f"{path}: needs the columns file,{column} (has {reader.fieldnames})")
        reader.fieldnames = names
        for row_number, row in enumerate(reader, start=2):
            file = (row.get("file") or "").strip()
            if file:
                rows.append((row_number, file, (row.get(column) or "").strip()))
    return rows


def find_inputs(spec: str | os.PathLike) -> tuple[list[Path], list[str]]:
    """List the micrograph files a user means by one input, and what was passed over.

    Args:
      spec: a file (returned as is, whatever its suffix, so a bad one is reported when read),
        a folder (its files with a supported suffix, sorted, not recursive, hidden files
        skipped) or a glob pattern (``**`` recurses; matches without a supported suffix are
        dropped). Symbolic links that lead nowhere (dangling, or a loop) are listed, so
        that reading them reports why they were skipped. Files inside the result folders
        of a nanoshape run directory (``labels/``, ``overlays/``, ...) are results, not
        micrographs: they are passed over, with a note.

    Returns:
      The paths, sorted, and notes (one line per run directory passed over).

    Raises:
      MicrographError: the path does not exist, or the folder or pattern holds no micrograph.
    """
    from nanoshape.rundir import run_directory_holding

    text = os.path.expanduser(os.fspath(spec))
    path = Path(text)
    if path.is_file():
        return [path], []
    if path.is_dir():
        entries = [p for p in path.iterdir() if not p.name.startswith(".")]
        files = [p for p in entries if p.is_file() or _is_broken_link(p)]
        found = sorted(p for p in files if p.suffix.lower() in SUPPORTED_SUFFIXES)
        what = "no micrographs in this folder"
    elif any(char in text for char in "*?["):
        matches = [Path(m) for m in glob.glob(text, recursive=True)]
        files = [p for p in matches if p.is_file() or _is_broken_link(p)]
        found = sorted({p for p in files if p.suffix.lower() in SUPPORTED_SUFFIXES})
        what = "the pattern matches no micrographs"
    else:
        if _is_broken_link(path):
            return [path], []
        raise MicrographError(path, "no such file or folder")
    runs: dict[Path, int] = {}
    kept = []
    for file in found:
        run = run_directory_holding(file)
        if run is None:
            kept.append(file)
        else:
            runs[run] = runs.get(run, 0) + 1
    notes = [f"passed over {n} file(s) in the result folders of the nanoshape run directory {run}" for run, n in runs.items()]
    if not kept:
        others = f"{len(files) - len(found)} other files" + (f", {len(found)} in nanoshape run directories" if runs else "")
        raise MicrographError(path, f"{what} ({others}; supported suffixes: {_suffix_list()})")
    return kept, notes


def _is_broken_link(path: Path) -> bool:
    """A symbolic link whose target does not exist (or that loops)."""
    try:
        return path.is_symlink() and not path.exists()
    except OSError:
        return True


def write_csv(table, path: str | os.PathLike) -> None:
    """Write a table as CSV that a spreadsheet opens as data, never as formulas.

    Text cells starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return (which
    Excel, LibreOffice and Google Sheets would evaluate: ``=HYPERLINK(...)`` in a file name)
    get a leading ``'``, as OWASP recommends; numbers are left alone. The parquet tables
    keep the text as it is. A carriage return inside a cell would end the row for most
    readers unless the cell is quoted, and the csv writer quotes only for the characters of
    its line ending: a table holding one is written with RFC 4180's CRLF line endings.
    """
    out = table.copy()
    has_cr = False
    for column in out.columns:
        if out[column].dtype == object or str(out[column].dtype) in ("string", "str"):
            out[column] = out[column].map(_spreadsheet_text)
            has_cr = has_cr or bool(out[column].map(lambda v: isinstance(v, str) and "\r" in v).any())
    out.to_csv(path, index=False, lineterminator="\r\n" if has_cr else "\n")


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _spreadsheet_text(value: Any) -> Any:
    return "'" + value if isinstance(value, str) and value.startswith(_FORMULA_STARTS) else value


def write_tiff(path: str | os.PathLike, pixels: np.ndarray, *, pixel_size_nm: float | None = None) -> None:
    """Write a 2-D image as an ImageJ-calibrated TIFF that :func:`read_micrograph` reads back.

    The description holds ``unit=nm`` and XResolution/YResolution hold 1 / pixel size, as
    ImageJ/Fiji write a calibration; the data are zlib-compressed and keep their dtype.

    Args:
      path: the file to write (overwritten).
      pixels: (H, W) uint8, uint16, uint32 (label images) or float32.
      pixel_size_nm: nm per pixel; None writes no calibration.

    Raises:
      ValueError: pixels not 2-D or of another dtype; pixel_size_nm not a positive number.
    """
    import tifffile

    array = np.asarray(pixels)
    if array.ndim != 2:
        raise ValueError(f"write_tiff: pixels must be 2-D, got shape {array.shape}")
    if array.dtype not in _WRITE_DTYPES:
        raise ValueError(f"write_tiff: dtype {array.dtype} is not written; convert to uint8, uint16, uint32 or float32")
    description = "ImageJ=1.11a\n"
    options: dict[str, Any] = {}
    if pixel_size_nm is not None:
        if not _is_positive_number(pixel_size_nm):
            raise ValueError(f"write_tiff: pixel_size_nm must be a positive number, got {pixel_size_nm!r}")
        description += "unit=nm\n"
        options = {"resolution": (1.0 / float(pixel_size_nm), 1.0 / float(pixel_size_nm)),
                   "resolutionunit": tifffile.RESUNIT.NONE}
    # metadata=None: no tifffile JSON description; the ImageJ one (ImageJ's own format
    # does not allow uint32) carries the calibration for ImageJ, Fiji and this reader.
    tifffile.imwrite(path, array, photometric="minisblack", compression="zlib", description=description,
                     metadata=None, **options)


def write_labels(path: str | os.PathLike, labels: np.ndarray, *, pixel_size_nm: float | None = None) -> None:
    """Write an instance label image that Fiji opens as integer labels with the scale, and napari as labels.

    ImageJ's TIFF holds 8-, 16-bit and float images, not 32-bit integers (a uint32 file
    opens in Fiji as 32-bit float): ids up to 65,535 are written as an ImageJ hyperstack of
    uint16 with ``unit=nm`` and XResolution/YResolution = 1 / pixel size, so Fiji shows nm;
    more ids keep uint32 with the same ImageJ-style description (:func:`write_tiff`).

    Args:
      path: the file to write (overwritten).
      labels: (H, W) non-negative integer ids, 0 = background.
      pixel_size_nm: nm per pixel; None writes no calibration (Fiji shows pixels).

    Raises:
      ValueError: labels not 2-D, not integers or negative; pixel_size_nm not a positive number.
    """
    import tifffile

    array = np.asarray(labels)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"write_labels: labels must be a 2-D integer array, got {array.dtype} of shape {array.shape}")
    if array.size and array.min() < 0:
        raise ValueError("write_labels: label ids must be >= 0")
    largest = int(array.max()) if array.size else 0
    if largest > np.iinfo(np.uint16).max:
        write_tiff(path, array.astype(np.uint32), pixel_size_nm=pixel_size_nm)
        return
    metadata: dict[str, Any] = {"axes": "YX"}
    options: dict[str, Any] = {}
    if pixel_size_nm is not None:
        if not _is_positive_number(pixel_size_nm):
            raise ValueError(f"write_labels: pixel_size_nm must be a positive number, got {pixel_size_nm!r}")
        metadata["unit"] = "nm"
        options["resolution"] = (1.0 / float(pixel_size_nm), 1.0 / float(pixel_size_nm))
    tifffile.imwrite(path, array.astype(np.uint16), imagej=True, metadata=metadata, compression="zlib", **options)


# --------------------------------------------------------------------------- shared helpers


class _Notes:
    """What a reader learns about a file besides its pixels."""

    def __init__(self, max_pixels: int = MAX_PIXELS):
        self.max_pixels = max_pixels
        self.meta: dict[str, Any] = {}
        self.warnings: list[str] = []
        self.candidates: list[tuple[str, float]] = []  # (source, pixel size nm), best first
        self.value_calibration: tuple[float, float, str] | None = None  # (c0, c1, source)

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def pixel_size(self, source: str, value: Any, unit: Any = "nm") -> None:
        """Offer a pixel size from ``source`` in ``unit``; nonsense is dropped with a warning."""
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.warn(f"{source} gives a pixel size that is not a number ({value!r}); ignored")
            return
        nm_per_unit = _nm_per_unit(unit)
        if nm_per_unit is None:
            if _unit_text(unit) not in _NO_UNITS:
                self.warn(f"{source} gives a pixel size in an unknown or non-length unit ({unit!r}); ignored")
            return
        nm = number * nm_per_unit
        low, high = _PIXEL_SIZE_NM_RANGE
        if not (math.isfinite(nm) and low <= nm <= high):
            self.warn(f"{source} gives a pixel size of {number:g} {unit}, which cannot be right; ignored")
            return
        self.candidates.append((source, nm))

    def finish(self) -> dict[str, Any]:
        self.meta["warnings"] = list(self.warnings)
        return _json_safe(self.meta)


def _unit_text(unit: Any) -> str:
    text = str(unit).strip()
    for escaped in ("\\u00B5", "\\u00b5", "Âµ", "\u03bc"):  # ImageJ's escape, mis-decoded UTF-8, Greek mu
        text = text.replace(escaped, "µ")
    return text.replace("\u212b", "Å").replace("\u00c5", "Å").lower()


def _nm_per_unit(unit: Any) -> float | None:
    """nm per one ``unit`` of length, or None for no unit, pixels or anything else."""
    return _NM_PER_UNIT.get(_unit_text(unit))


def _suffix_list() -> str:
    return ", ".join(SUPPORTED_SUFFIXES)


def _is_positive_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _check_override(path: Path, value: Any) -> float:
    low, high = PIXEL_SIZE_NM_RANGE
    if not (_is_positive_number(value) and low <= value <= high):
        raise MicrographError(path, f"the pixel size given ({value!r} nm) must be a number from {low:g} to {high:g} nm")
    return float(value)


def _check_pixel_count(path: Path, height: int, width: int, notes: _Notes) -> None:
    """Refuse an image larger than ``max_pixels`` (call before decoding where the header tells)."""
    if int(height) * int(width) > notes.max_pixels:
        raise MicrographError(path, f"declares {int(height)} x {int(width)} pixels ({int(height) * int(width) / 1e6:.0f} "
                                    f"million), more than the {notes.max_pixels / 1e6:.0f} million pixels read at most "
                                    f"(max_megapixels=); refused before decoding")


def _scale_extreme_values(image: np.ndarray, notes: _Notes) -> np.ndarray:
    """``image`` times a power of two where its magnitude is beyond float32's comfortable range."""
    if image.dtype.kind != "f" or image.size == 0:
        return image
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN image is refused later
        low_value, high_value = float(np.nanmin(image)), float(np.nanmax(image))
    if math.isnan(low_value):
        return image
    if math.isfinite(low_value) and math.isfinite(high_value):
        magnitude = max(abs(low_value), abs(high_value))
    else:  # infinities are replaced later; measure the finite values
        finite = np.isfinite(image)
        magnitude = float(np.max(np.abs(image[finite]))) if finite.any() else 0.0
    if magnitude == 0.0:
        return image
    exponent = math.frexp(magnitude)[1]
    low, high = _VALUE_MAGNITUDE_LOG2_RANGE
    if low <= exponent <= high:
        return image
    shift = 16 - exponent  # the largest magnitude lands in [2^15, 2^16), like 16-bit counts
    notes.warn(f"pixel values reach {magnitude:.3g}, beyond what float32 holds well; multiplied by 2^{shift} "
               f"(the intensity columns are in these units)")
    notes.meta["value_scale"] = {"factor_log2": shift, "formula": "value = stored * 2**factor_log2"}
    return np.ldexp(image, shift)


def _check_file(path: Path) -> str:
    """The format the suffix promises, after checking that the file is there and not empty."""
    if not path.exists():
        if _is_broken_link(path):
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            try:
                path.resolve(strict=True)
            except RuntimeError:
                raise MicrographError(path, f"a symbolic link that loops (to {target})") from None
            except OSError as error:
                if error.errno == 40:  # ELOOP
                    raise MicrographError(path, f"a symbolic link that loops (to {target})") from None
            raise MicrographError(path, f"a broken symbolic link: its target {target} does not exist")
        raise MicrographError(path, "file not found")
    if path.is_dir():
        raise MicrographError(path, "is a folder, not a file (find_micrographs lists the files in a folder)")
    kind = _KIND_BY_SUFFIX.get(path.suffix.lower())
    if kind is None:
        raise MicrographError(path, f"unsupported file type {path.suffix or '(no suffix)'!r}; "
                                    f"supported suffixes: {_suffix_list()}")
    if path.stat().st_size == 0:
        raise MicrographError(path, "the file is empty (0 bytes)")
    return kind


def _read_head(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(2056)
    except OSError as error:
        raise MicrographError(path, f"cannot be opened: {error.strerror or error}") from None


def _sniff(head: bytes) -> str | None:
    """The format the first bytes of a file announce, or None."""
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    bmp_header_sizes = (12, 40, 52, 56, 64, 108, 124)
    if head[:2] == b"BM" and len(head) >= 18 and int.from_bytes(head[14:18], "little") in bmp_header_sizes:
        return "bmp"
    # HDF5 (EMD) puts its signature at 0 or after a user block of 512 * 2**k bytes
    if any(head[offset:offset + 8] == b"\x89HDF\r\n\x1a\n" for offset in (0, 512, 1024, 2048)):
        return "hdf5"
    if len(head) >= 16:
        version = int.from_bytes(head[:4], "big")
        if version == 3 and int.from_bytes(head[8:12], "big") in (0, 1):
            return "dm"
        if version == 4 and int.from_bytes(head[12:16], "big") in (0, 1):
            return "dm"
    if head[208:212] == b"MAP ":
        return "mrc"
    return None


def _to_grey_2d(path: Path, raw: np.ndarray, layout: str, notes: _Notes) -> np.ndarray:
    """Reduce ``raw`` to one (H, W) grey frame.

    ``layout`` says what a trailing axis is: ``'grey'`` (none; leading axes are frames),
    ``'colour'`` (RGB or RGBA samples) or ``'channels'`` (independent channels; the first is
    kept, an alpha sample is dropped).
    """
    if layout == "colour" and raw.ndim >= 3 and raw.shape[-1] in (3, 4):
        raw = _rgb_to_grey(raw[..., :3], notes)
    elif layout in ("colour", "channels") and raw.ndim >= 3:
        if raw.shape[-1] > 2:
            notes.warn(f"{raw.shape[-1]} channels per pixel; only the first was read")
        raw = raw[..., 0]  # grey + alpha, or the first channel
    image = np.squeeze(raw)
    if image.ndim > 2:
        frames = int(np.prod(image.shape[:-2]))
        notes.warn(f"holds {frames} frames of {image.shape[-2]} x {image.shape[-1]} pixels; only the first was read")
        image = image[(0,) * (image.ndim - 2)]
    if image.ndim != 2 or min(image.shape) < 2:
        raise MicrographError(path, f"not a 2-D image (data of shape {tuple(raw.shape)})")
    return image


def _rgb_to_grey(rgb: np.ndarray, notes: _Notes) -> np.ndarray:
    """Grey from (..., 3) colour: the red channel where R = G = B, else BT.709 luminance."""
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    if np.array_equal(red, green) and np.array_equal(green, blue):
        return red
    # one float32 plane per channel, combined in place: no (H, W, 3) float temporaries
    grey, g, b = (channel.astype(np.float32) for channel in (red, green, blue))
    spread = max(float(np.max(np.abs(grey - g))), float(np.max(np.abs(g - b))))
    grey *= np.float32(_LUMA_WEIGHTS[0])
    grey += np.multiply(g, np.float32(_LUMA_WEIGHTS[1]), out=g)
    grey += np.multiply(b, np.float32(_LUMA_WEIGHTS[2]), out=b)
    notes.warn(f"colour image (channels differ by up to {spread:g}) converted to grey by BT.709 luminance")
    notes.meta["colour_converted"] = True
    return grey


def _to_float32(image: np.ndarray) -> np.ndarray:
    """``image`` as a writable, C-contiguous float32 array we own, copying only if needed."""
    if (image.dtype == np.float32 and image.flags.c_contiguous and image.flags.writeable
            and not isinstance(image, np.memmap)):
        return image
    return np.array(image, dtype=np.float32, order="C")


def _apply_value_calibration(pixels: np.ndarray, notes: _Notes) -> None:
    if notes.value_calibration is None:
        notes.meta["value_calibration"] = None
        return
    c0, c1, source = notes.value_calibration
    if c1 != 1.0:
        pixels *= np.float32(c1)
    if c0 != 0.0:
        pixels += np.float32(c0)
    notes.meta["value_calibration"] = {"source": source, "c0": c0, "c1": c1, "formula": "value = c0 + c1 * stored"}


def _replace_non_finite(path: Path, pixels: np.ndarray, notes: _Notes) -> None:
    # min and max propagate NaN and show inf, so finite images pay two passes and no mask
    low, high = float(pixels.min()), float(pixels.max())
    if not (math.isfinite(low) and math.isfinite(high)):
        bad = ~np.isfinite(pixels)
        count = int(bad.sum())
        if count == pixels.size:
            raise MicrographError(path, "every pixel is NaN or infinite")
        median = float(np.median(pixels[~bad]))
        pixels[bad] = median
        notes.warn(f"{count} of {pixels.size} pixels were NaN or infinite; "
                   f"replaced by the median of the others ({median:g})")
        low, high = float(pixels.min()), float(pixels.max())
    notes.meta["value_range"] = [low, high]


def _resolve_pixel_size(override: float | None, notes: _Notes) -> float | None:
    source, value = notes.candidates[0] if notes.candidates else (None, None)
    if len(notes.candidates) > 1:
        notes.meta["pixel_size_candidates_nm"] = {s: v for s, v in notes.candidates}
        others = [f"{s}: {v:.6g} nm" for s, v in notes.candidates[1:] if abs(v / value - 1) > 0.01]
        if others:
            notes.warn(f"the file's calibrations disagree; used {source}: {value:.6g} nm over {', '.join(others)}")
    metadata_source = f"metadata: {source}" if source else None
    notes.meta["pixel_size_nm_metadata"] = value
    notes.meta["pixel_size_source_metadata"] = metadata_source
    if override is not None:
        value, metadata_source = override, "pixel_size_nm override"
    notes.meta["pixel_size_nm"] = value
    notes.meta["pixel_size_source"] = metadata_source
    return value


def _json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` made of dict, list, str, int, float (finite), bool and None only."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, np.bool_):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").rstrip("\x00")
    if depth > 8:
        return str(value)[:200]
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v, depth + 1) for v in value]
    if isinstance(value, np.ndarray) and value.size <= 64:
        return _json_safe(value.tolist(), depth + 1)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)[:200]


def _get(mapping: Any, *keys: str) -> Any:
    """``mapping[k0][k1]...`` or None where a level is missing."""
    for key in keys:
        if not isinstance(mapping, Mapping) or key not in mapping:
            return None
        mapping = mapping[key]
    return mapping


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


# --------------------------------------------------------------------------- TIFF


def _read_tiff(path: Path, notes: _Notes) -> tuple[np.ndarray, str]:
    import tifffile

    notes.meta["format"] = "tiff"
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        flavours = [name for name in ("imagej", "ome", "fei", "sem", "sis", "tvips", "shaped")
                    if _safe(lambda name=name: bool(getattr(tif, f"is_{name}")), False)]
        notes.meta["tiff_flavours"] = flavours
        _tiff_frames(tif, page, notes)
        if page.dtype is None:
            raise MicrographError(path, f"TIFF sample format not supported (bits per sample {page.bitspersample}, "
                                        f"sample format {page.sampleformat})")
        if np.dtype(page.dtype).kind == "c":
            raise MicrographError(path, "holds complex values (an FFT?), not a micrograph")
        _check_tiff_complete(path, page)
        _check_pixel_count(path, page.imagelength, page.imagewidth, notes)
        raw = _tiff_pixels(path, page, notes)
        raw, layout = _tiff_layout(path, page, raw, notes)
        _tiff_calibrations(tif, page, notes)
    return raw, layout


def _safe(function, default):
    try:
        return function()
    except Exception:
        return default


def _tiff_frames(tif, page, notes: _Notes) -> None:
    """Record the stored shape; warn when the file holds more than the first frame."""
    shape = tuple(page.shape)
    series = _safe(lambda: tif.series, [])
    if series:
        shape = tuple(series[0].shape)
        notes.meta["axes"] = series[0].axes
        if len(series) > 1:
            notes.warn(f"holds {len(series)} images; only the first was read")
    notes.meta["dtype"] = str(page.dtype)
    notes.meta["shape"] = list(shape)
    frames = int(np.prod(shape)) // max(int(np.prod(page.shape)), 1)
    if frames > 1:
        notes.warn(f"holds {frames} frames (shape {shape}); only the first was read")


def _check_tiff_complete(path: Path, page) -> None:
    size = path.stat().st_size
    ends = [offset + count for offset, count in zip(page.dataoffsets, page.databytecounts) if count]
    if ends and max(ends) > size:
        raise MicrographError(path, f"truncated: the image data run to byte {max(ends)} but the file has {size} bytes")


def _tiff_pixels(path: Path, page, notes: _Notes) -> np.ndarray:
    """The first page's samples; Pillow decodes the codecs tifffile needs imagecodecs for."""
    try:
        return page.asarray()
    except ValueError as error:
        if "imagecodecs" not in str(error):
            raise
        from PIL import Image

        with Image.open(path) as image:
            image.load()
            array = np.asarray(image)
        notes.meta["decoded_by"] = f"Pillow ({page.compression.name} compression; install imagecodecs for tifffile)"
        return array


def _tiff_layout(path: Path, page, raw: np.ndarray, notes: _Notes) -> tuple[np.ndarray, str]:
    from tifffile import PHOTOMETRIC

    axes = page.axes if raw.ndim == len(page.axes) else ("YXS" if raw.ndim == 3 else "YX")
    if axes.startswith("Z"):  # tiled volume in one page
        notes.warn(f"the first page is a volume of {raw.shape[0]} slices; only the first was read")
        raw, axes = raw[0], axes[1:]
    if axes == "SYX":
        raw, axes = np.moveaxis(raw, 0, -1), "YXS"
    photometric = page.photometric
    if photometric == PHOTOMETRIC.SEPARATED:
        raise MicrographError(path, "CMYK TIFF is not supported; save it as greyscale")
    if photometric == PHOTOMETRIC.PALETTE and page.colormap is not None and raw.ndim == 2:
        return np.moveaxis(page.colormap[:, raw], 0, -1), "colour"
    if photometric in (PHOTOMETRIC.RGB, PHOTOMETRIC.YCBCR) and axes == "YXS":
        return raw, "colour"
    if photometric == PHOTOMETRIC.MINISWHITE and raw.dtype.kind in "ub":
        top = 1.0 if raw.dtype.kind == "b" else float(np.iinfo(raw.dtype).max)
        notes.value_calibration = (top, -1.0, "TIFF MinIsWhite (0 is white)")
    return raw, "channels" if axes == "YXS" else "grey"


def _tiff_calibrations(tif, page, notes: _Notes) -> None:
    """Offer every pixel size the TIFF holds: instrument tags (FEI, Zeiss, Olympus, then TVIPS,
    Gatan TIFF and JEOL SightX through rosettasciio), then OME, ImageJ, resolution tags."""
    for reader in (_fei_tags, _zeiss_tags, _olympus_tags, _rsciio_tiff_tags, _ome_tags, _imagej_tags):
        try:
            reader(tif, page, notes)
        except Exception as error:  # a broken vendor block must not stop the pixels being read
            notes.warn(f"could not parse {reader.__name__[1:].replace('_tags', '')} metadata "
                       f"({type(error).__name__}: {error})")
    if not notes.candidates and "imagej_unit" not in notes.meta:
        _resolution_tags(page, notes)


def _fei_tags(tif, page, notes: _Notes) -> None:
    if not tif.is_fei:
        return
    fei = tif.fei_metadata or {}
    width_m = next((v for v in (_get(fei, s, "PixelWidth") for s in ("Scan", "EScan", "IScan")) if v is not None), None)
    if width_m is not None:
        notes.pixel_size("FEI", width_m, "m")
    notes.meta["vendor"] = {k: v for k, v in {
        "vendor": "FEI/Thermo Fisher",
        "instrument": _get(fei, "System", "SystemType"),
        "high_voltage_v": _get(fei, "Beam", "HV") if _get(fei, "Beam", "HV") is not None else _get(fei, "EBeam", "HV"),
        "detector": _get(fei, "Detectors", "Name"),
        "dwell_time_s": _get(fei, "Scan", "Dwelltime"),
        "horizontal_field_width_m": _get(fei, "Scan", "HorFieldsize"),
    }.items() if v is not None}
    rows = _number(_get(fei, "Image", "ResolutionY"))
    if rows is not None and 0 < rows < page.shape[0]:
        notes.meta["databar_rows"] = [int(rows), int(page.shape[0])]
        notes.warn(f"rows {int(rows)} to {page.shape[0] - 1} hold the instrument's data bar, not the specimen")


def _zeiss_tags(tif, page, notes: _Notes) -> None:
    if not tif.is_sem:
        return
    sem = tif.sem_metadata or {}
    entries = [sem.get("ap_image_pixel_size"), sem.get("ap_pixel_size")]
    entries += [v for v in sem.values() if isinstance(v, tuple) and v and v[0] in ("Image Pixel Size", "Pixel Size")]
    entry = next((e for e in entries if isinstance(e, tuple) and len(e) >= 3), None)
    if entry is not None:
        notes.pixel_size("Zeiss SEM", entry[1], entry[2])
    info = {"vendor": "Zeiss"}
    for key, name in (("ap_actualkv", "high_voltage_kv"), ("ap_mag", "magnification"), ("dp_detector_type", "detector"),
                      ("sv_serial_number", "instrument")):
        entry = sem.get(key)
        if isinstance(entry, tuple) and len(entry) >= 2:
            info[name] = entry[1] if len(entry) == 2 else f"{entry[1]} {entry[2]}"
    notes.meta["vendor"] = info


def _olympus_tags(tif, page, notes: _Notes) -> None:
    sis = tif.sis_metadata
    if sis:
        _olympus_pixel_size(sis, notes)


def _olympus_pixel_size(sis: Mapping[str, Any], notes: _Notes) -> None:
    """Olympus SIS / iTEM TIFF (TEM cameras): ``pixelsizex`` in m, as tifffile decodes it."""
    if "pixelsizex" in sis:
        notes.pixel_size("Olympus SIS", sis["pixelsizex"], "m")
    notes.meta["vendor"] = {k: v for k, v in {
        "vendor": "Olympus SIS", "camera": sis.get("cameraname"), "magnification": sis.get("magnification"),
        "name": sis.get("name")}.items() if v is not None}


# TIFF tags of Gatan DigitalMicrograph's TIFF export: units, scales and offsets of the axes
_GATAN_TIFF_TAGS = frozenset({65003, 65004, 65009, 65010})


def _rsciio_tiff_vendor(tif, page) -> str | None:
    """The vendor whose TIFF calibration rosettasciio reads and the readers above do not."""
    if _safe(lambda: tif.is_tvips, False):
        return "TVIPS"
    if _GATAN_TIFF_TAGS & set(page.tags.keys()):
        return "Gatan TIFF"
    make = page.tags.get(271)  # Make
    if make is not None and str(make.value).strip() == "JEOL Ltd.":
        return "JEOL SightX"
    return None


def _rsciio_tiff_tags(tif, page, notes: _Notes) -> None:
    """Calibrations of TVIPS, Gatan (DigitalMicrograph TIFF export) and JEOL SightX TIFFs,
    read by rosettasciio. (Its Hamamatsu reader gives a streak camera's wavelength and time
    axes, not a pixel size, and is not used.)"""
    vendor = _rsciio_tiff_vendor(tif, page)
    if vendor is None:
        return
    from rsciio.tiff import file_reader

    signal = file_reader(tif.filehandle.path, lazy=True)[0]
    axes = sorted(signal.get("axes", []), key=lambda a: a.get("index_in_array", 0))
    image_axes = [a for a in axes if not a.get("navigate", False)][-2:]
    notes.meta.setdefault("vendor", {"vendor": vendor})
    if len(image_axes) == 2:
        _rsciio_pixel_size(f"{vendor} (rosettasciio)", image_axes, notes)


def _ome_tags(tif, page, notes: _Notes) -> None:
    if not tif.is_ome:
        return
    import xml.etree.ElementTree as ElementTree

    root = ElementTree.fromstring(tif.ome_metadata)
    pixels = next((e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is not None and pixels.get("PhysicalSizeX") is not None:
        notes.pixel_size("OME", pixels.get("PhysicalSizeX"), pixels.get("PhysicalSizeXUnit", "µm"))


def _imagej_tags(tif, page, notes: _Notes) -> None:
    if not tif.is_imagej:
        return
    imagej = tif.imagej_metadata or {}
    unit = imagej.get("unit")
    if unit is not None:
        notes.meta["imagej_unit"] = str(unit)
        x_per_unit, y_per_unit = page.get_resolution()
        nm_per_unit = _nm_per_unit(unit)
        if x_per_unit > 0 and _unit_text(unit) in ("in", "inch", "inches", "cm") and nm_per_unit is not None \
                and nm_per_unit / x_per_unit > _RESOLUTION_TAG_MAX_NM:
            # ImageJ turns an editor's 72 dpi into a calibration in inches
            notes.warn(f"the ImageJ calibration ({x_per_unit:g} pixels per {unit}) looks like an image editor's "
                       f"print setting, not a calibration; no pixel size taken from it")
        elif x_per_unit > 0:
            notes.pixel_size("ImageJ", 1.0 / x_per_unit, unit)
        if x_per_unit > 0 and y_per_unit > 0 and abs(x_per_unit / y_per_unit - 1) > 0.01:
            notes.warn(f"pixels are not square (ImageJ x {1 / x_per_unit:g}, y {1 / y_per_unit:g} {unit}); "
                       f"the x size is used")
        spacing = _number(imagej.get("spacing"))
        if spacing is not None and nm_per_unit is not None:
            # ImageJ's spacing is the distance between slices, never the pixel width
            notes.meta["slice_spacing_nm"] = spacing * nm_per_unit
    if "c0" in imagej or "c1" in imagej:
        function = int(imagej.get("cf", 0))
        c0, c1 = float(imagej.get("c0", 0.0)), float(imagej.get("c1", 1.0))
        if function == 0:
            notes.value_calibration = (c0, c1, "ImageJ")
        elif function != 20:  # 20: ImageJ's "no calibration function"
            notes.warn(f"ImageJ calibration function {function} (not a straight line) was not applied; "
                       f"stored values are used")


def _resolution_tags(page, notes: _Notes) -> None:
    """Plain TIFF resolution in inch or cm, trusted only when it gives microscope-sized pixels."""
    if 282 not in page.tags or page.resolutionunit not in (2, 3):
        return
    x_per_unit = page.get_resolution()[0]
    if x_per_unit <= 0:
        return
    unit = "inch" if page.resolutionunit == 2 else "cm"
    nm = (2.54e7 if unit == "inch" else 1e7) / x_per_unit
    if nm > _RESOLUTION_TAG_MAX_NM:
        notes.warn(f"the TIFF resolution ({x_per_unit:g} pixels per {unit}) looks like an image editor's "
                   f"print setting, not a calibration; no pixel size taken from it")
        return
    notes.pixel_size("TIFF resolution", 1.0 / x_per_unit, unit)


# --------------------------------------------------------------------------- PNG, JPEG, BMP


def _read_pillow(path: Path, head: bytes, notes: _Notes) -> tuple[np.ndarray, str]:
    from PIL import Image

    with Image.open(path) as image:
        notes.meta["format"] = (image.format or "").lower()
        notes.meta["mode"] = image.mode
        frames = getattr(image, "n_frames", 1)
        if frames > 1:
            notes.warn(f"holds {frames} frames; only the first was read")
        _check_pixel_count(path, image.size[1], image.size[0], notes)
        image.load()
        if head[:8] == b"\x89PNG\r\n\x1a\n" and head[24] == 16 and head[25] in (2, 4, 6):
            notes.warn("16-bit colour PNG: Pillow reads it at 8-bit precision; save as 16-bit greyscale to keep it")
        if image.mode in ("P", "PA", "CMYK", "YCbCr"):
            image = image.convert("RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB")
        array = np.asarray(image)
    notes.meta["dtype"] = str(array.dtype)
    notes.meta["shape"] = list(array.shape)
    if array.ndim == 3:
        return array, "colour" if array.shape[-1] in (3, 4) else "channels"
    return array, "grey"


# --------------------------------------------------------------------------- rosettasciio (DM, EMD)


def _pick_rsciio_image(path: Path, signals: list[dict], notes: _Notes) -> tuple[np.ndarray, list[dict], dict]:
    """The first signal with two signal axes (an image), cut to its first frame."""
    seen = []
    for signal in signals:
        data = signal["data"]
        axes = sorted(signal.get("axes", []), key=lambda a: a.get("index_in_array", 0))
        if len(axes) != data.ndim:
            axes = [{"navigate": i < data.ndim - 2} for i in range(data.ndim)]
        image_axes = [a for a in axes if not a.get("navigate", False)]
        seen.append(f"{data.ndim}-D {'/'.join(str(a.get('name', '?')) for a in image_axes) or '?'}")
        if len(image_axes) != 2:
            continue
        if len(signals) > 1:
            notes.warn(f"holds {len(signals)} datasets; the first image was read")
        notes.meta["shape"] = list(data.shape)
        notes.meta["dtype"] = str(data.dtype)
        if data.ndim > 2:
            frames = int(np.prod([data.shape[i] for i, a in enumerate(axes) if a.get("navigate", False)]))
            notes.warn(f"holds {frames} frames; only the first was read")
            data = data[tuple(0 if a.get("navigate", False) else slice(None) for a in axes)]
        return np.asarray(data), image_axes, signal
    raise MicrographError(path, f"holds no 2-D image (datasets: {', '.join(seen) or 'none'})")


def _rsciio_pixel_size(source: str, image_axes: list[dict], notes: _Notes) -> None:
    y_axis, x_axis = image_axes
    unit = str(x_axis.get("units") or "")
    if "1/" in unit or "^-1" in unit or unit.endswith("-1"):
        notes.warn(f"{source} calibrates the image in reciprocal units ({unit}, a diffraction pattern?); "
                   f"no real-space pixel size")
        return
    scale_x, scale_y = _number(x_axis.get("scale")), _number(y_axis.get("scale"))
    if _nm_per_unit(unit) is None and _unit_text(unit) in _NO_UNITS:
        return  # uncalibrated: scale 1 pixel
    notes.pixel_size(source, x_axis.get("scale"), unit)
    if scale_x and scale_y and abs(scale_x / scale_y - 1) > 0.01 and str(y_axis.get("units")) == unit:
        notes.warn(f"pixels are not square (x {scale_x:g}, y {scale_y:g} {unit}); the x size is used")


def _complex_check(path: Path, data: np.ndarray) -> None:
    if data.dtype.kind == "c":
        raise MicrographError(path, "holds complex values (an FFT?), not a micrograph")


def _read_dm(path: Path, notes: _Notes) -> tuple[np.ndarray, str]:
    from rsciio.digitalmicrograph import file_reader

    notes.meta["format"] = path.suffix.lower().lstrip(".") if path.suffix.lower() in (".dm3", ".dm4") else "dm"
    data, image_axes, signal = _pick_rsciio_image(path, file_reader(str(path)), notes)
    _complex_check(path, data)
    layout = "grey"
    if data.dtype.names:  # DM RGB(A): a structured array of u1 fields
        data = np.stack([data[name] for name in ("R", "G", "B") if name in data.dtype.names], axis=-1)
        layout = "colour"
    _rsciio_pixel_size("DigitalMicrograph", image_axes, notes)
    tags = _get(signal.get("original_metadata", {}), "ImageList", "TagGroup0", "ImageTags") or {}
    voltage_v = _number(_get(tags, "Microscope Info", "Voltage"))
    info = {
        "vendor": "Gatan DigitalMicrograph",
        "title": _get(signal.get("metadata", {}), "General", "title"),
        "microscope": _get(tags, "Microscope Info", "Name"),
        "voltage_kv": voltage_v / 1e3 if voltage_v else None,
        "indicated_magnification": _get(tags, "Microscope Info", "Indicated Magnification"),
        "illumination_mode": _get(tags, "Microscope Info", "Illumination Mode"),
        "imaging_mode": _get(tags, "Microscope Info", "Imaging Mode"),
        "exposure_s": _first_present(_get(tags, "DataBar", "Exposure Time (s)"),
                                     _get(tags, "Acquisition", "Parameters", "High Level", "Exposure (s)")),
        "camera": _first_present(_get(tags, "DataBar", "Device Name"), _get(tags, "Acquisition", "Device", "Name")),
        "acquisition_date": _get(tags, "DataBar", "Acquisition Date"),
        "acquisition_time": _get(tags, "DataBar", "Acquisition Time"),
        "specimen": _get(tags, "Session Info", "Specimen"),
    }
    notes.meta["vendor"] = {k: v for k, v in info.items() if v not in (None, [], "")}
    return data, layout


def _first_present(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _read_emd(path: Path, notes: _Notes) -> tuple[np.ndarray, str]:
    notes.meta["format"] = "emd"
    try:
        from rsciio.emd import file_reader
    except ImportError as error:
        raise MicrographError(path, f"reading EMD files needs the h5py package ({error}); "
                                    f"install it with `pip install h5py`") from None
    # 'images' keeps Velox from loading spectrum images; the Berkeley variant ignores it
    data, image_axes, signal = _pick_rsciio_image(path, file_reader(str(path), select_type="images"), notes)
    _complex_check(path, data)
    original = signal.get("original_metadata", {}) or {}
    velox = "BinaryResult" in original
    _rsciio_pixel_size("Velox EMD" if velox else "EMD", image_axes, notes)
    voltage_v = _number(_get(original, "Optics", "AccelerationVoltage"))
    info = {
        "vendor": "Thermo Fisher Velox" if velox else None,
        "title": _get(signal.get("metadata", {}), "General", "title"),
        "instrument": _get(original, "Instrument", "InstrumentModel"),
        "manufacturer": _get(original, "Instrument", "Manufacturer"),
        "voltage_kv": voltage_v / 1e3 if voltage_v else None,
        "magnification": _number(_get(original, "Optics", "NominalMagnification")),
        "dwell_time_s": _number(_get(original, "Scan", "DwellTime")),
    }
    notes.meta["vendor"] = {k: v for k, v in info.items() if v not in (None, "")}
    return data, "grey"


# --------------------------------------------------------------------------- MRC


def _read_mrc(path: Path, notes: _Notes) -> tuple[np.ndarray, str]:
    import mrcfile

    notes.meta["format"] = "mrc"
    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always")
        with mrcfile.mmap(path, mode="r", permissive=True) as mrc:
            data = mrc.data
            if data is None:
                problems = "; ".join(str(w.message) for w in caught) or "no data block"
                raise MicrographError(path, f"truncated or corrupt MRC file ({problems})")
            _complex_check(path, data)
            notes.meta["dtype"] = str(data.dtype)
            notes.meta["shape"] = list(data.shape)
            if data.ndim == 3 and data.shape[0] > 1:
                notes.warn(f"holds {data.shape[0]} frames; only the first was read")
            frame = data[(0,) * (data.ndim - 2)] if data.ndim > 2 else data
            _check_pixel_count(path, *frame.shape[-2:], notes)
            # one copy out of the memory map, straight to float32
            image = np.array(frame, dtype=np.float32)
            size_x, size_y = float(mrc.voxel_size.x), float(mrc.voxel_size.y)
    for warning in caught:
        notes.warn(f"MRC header: {warning.message}")
    if size_x != 0.0:  # 0 is the header's "not set"
        notes.pixel_size("MRC header", size_x, "Å")
        if size_y > 0 and abs(size_x / size_y - 1) > 0.01:
            notes.warn(f"pixels are not square (MRC x {size_x:g}, y {size_y:g} Å); the x size is used")
    return image, "grey"
