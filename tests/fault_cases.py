"""The fault catalogue of issue 24: bad inputs, bad names, bad options and faults, each tried
as a user would, through ``nanoshape`` (and the library where the fault lives there).

Every case stages its files under a fresh folder, runs the command and judges the outcome:

- ``handled``: the command did the right thing (analysed what it could, named what it could
  not with a reason, refused what it must refuse with a message naming the problem);
- ``traceback``: an exception ended the command;
- ``silently wrong``: the command finished, but a result is wrong, lost or stale, or a
  problem went unreported (or, for the last few cases, a safeguard the issue asks for is
  missing).

``tests/test_faults.py`` runs every case and requires ``handled``. Run as a script, this file
prints the table of verdicts (``--table``) for whatever ``nanoshape`` is importable, which is
how the issue's before/after table was made:

    python tests/fault_cases.py --table                  # this checkout (about 4 min on 2 cores)
    PYTHONPATH=<checkout of main> python tests/fault_cases.py --table --json before.json

``issue`` on each case records how the issue classed it. The 69 cases classed ``handled``,
``traceback`` or ``silently wrong`` reconstruct the issue's 68 (its 50 handled ones from its
summary; its 18 failing ones from its list, the symbolic-link and scaled-values bullets as
two cases each and the 2-px-particle bullet as two: non-finite features, circularity above
1). The ``added`` cases are the issue's data-loss and integrity findings, the safeguards it
asks for, and a few more inputs of the kinds it names.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

HERE = Path(__file__).resolve().parent
SHARED_DATA = HERE.parents[0].parent / "shared" / "data"

#: fast analysis: these cases are about reading, writing and surviving, not about shapes
FAST = ("workers=0", "shape.cnn=false", "report=false", "group=false")
#: exit status a run that analysed some files but skipped others must give (README: exit statuses)
SOME_SKIPPED = 3

VERDICTS = ("handled", "traceback", "silently wrong", "not run")


class Wrong(AssertionError):
    """The command finished but did the wrong thing (the message says what)."""


class Crash(Exception):
    """A traceback ended the command (the message holds its last lines)."""


class NotHere(Exception):
    """This platform cannot stage the case (the message says why)."""


@dataclass(frozen=True)
class Case:
    """One fault: ``run(workspace)`` stages and runs it, raising Wrong / Crash / NotHere."""

    id: str
    group: str
    title: str
    issue: str  # how the issue classed it: handled / traceback / silently wrong / added
    run: Callable[["Workspace"], None]
    slow: bool = False


CASES: list[Case] = []


def case(group: str, title: str, *, issue: str, slow: bool = False):
    def register(function):
        CASES.append(Case(f"{len(CASES) + 1:02d}_{function.__name__}", group, title, issue, function, slow))
        return function

    return register


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise Wrong(message)


# ----------------------------------------------------------------------------- running nanoshape


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + "\n" + self.err


def cli(*argv: str) -> Run:
    """``nanoshape <argv>`` in this process: its exit status and what it printed."""
    from nanoshape.cli import main

    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(a) for a in argv])
    except SystemExit as stop:
        if isinstance(stop.code, str):
            err.write(stop.code + "\n")
            code = 1
        else:
            code = int(stop.code or 0)
    except Exception as error:  # the command ended in a traceback
        lines = traceback.format_exception(error)
        raise Crash(f"{type(error).__name__}: {error}"[:300] + "\n" + "".join(lines[-3:])[-600:]) from None
    return Run(int(code or 0), out.getvalue(), err.getvalue())


def cli_process(*argv: str, timeout: float = 600) -> Run:
    """``nanoshape <argv>`` in a child process (for kills and concurrent runs)."""
    process = subprocess.run([sys.executable, "-W", "ignore", "-c", _CHILD, *map(str, argv)], capture_output=True,
                             text=True, timeout=timeout)
    if "Traceback (most recent call last)" in process.stderr:
        raise Crash(process.stderr[-800:])
    return Run(process.returncode, process.stdout, process.stderr)


_CHILD = "import sys; from nanoshape.cli import main; sys.exit(main(sys.argv[1:]))"


def spawn(*argv: str, prelude: str = "") -> subprocess.Popen:
    code = textwrap.dedent(prelude) + "\n" + _CHILD
    return subprocess.Popen([sys.executable, "-W", "ignore", "-c", code, *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, timeout: float = 600) -> Run:
    out, err = process.communicate(timeout=timeout)
    if "Traceback (most recent call last)" in err:
        raise Crash(err[-800:])
    return Run(process.returncode, out, err)


def summary_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def skipped_names(summary: dict) -> dict[str, str]:
    return {Path(s["file"]).name: s["reason"] for s in summary["files_skipped"]}


def result_bytes(run_dir: Path) -> dict[str, bytes]:
    """The files that hold a run's results, by path (timings, paths and the provenance's date excluded)."""
    names = ["particles.csv", "dropped.csv", "columns.csv"]
    files = {name: (run_dir / name).read_bytes() for name in names if (run_dir / name).exists()}
    if (run_dir / "particles.parquet").exists():  # its schema metadata holds the run's date and command line
        import pyarrow.parquet as pq

        files["particles.parquet"] = pq.read_table(run_dir / "particles.parquet").replace_schema_metadata().to_pandas().to_csv().encode()
    for folder in ("labels", "parts/particles", "parts/dropped", "overlays"):
        for path in sorted((run_dir / folder).glob("*")):
            files[f"{folder}/{path.name}"] = path.read_bytes()
    return files


def same_results(a: Path, b: Path) -> None:
    first, second = result_bytes(a), result_bytes(b)
    expect(set(first) == set(second), f"different result files: {sorted(set(first) ^ set(second))[:6]}")
    differ = [name for name in first if first[name] != second[name]]
    expect(not differ, f"results differ from an uninterrupted run in {differ[:6]}")


# ----------------------------------------------------------------------------- staged files


_CACHE: dict[str, object] = {}
_ROOT: list[Path] = []


def _root() -> Path:
    """The folder of the files shared between cases (removed when the process exits)."""
    if not _ROOT:
        import atexit

        _ROOT.append(Path(tempfile.mkdtemp(prefix="nanoshape-faults-")))
        atexit.register(shutil.rmtree, _ROOT[0], ignore_errors=True)
    return _ROOT[0]


def cached(name: str, make: Callable[[], object]):
    if name not in _CACHE:
        _CACHE[name] = make()
    return _CACHE[name]


def good_scene() -> Path:
    """A small rendered micrograph (uint16, 0.5 nm pixels) with a dozen particles."""

    def make():
        import jax

        from nanoshape.examples import write_scene
        from nanoshape.scene import SceneOptions

        folder = _root() / "good_scene"
        write_scene(jax.random.key(1), SceneOptions(height_px=192, width_px=192, n_particles=14, allow_border=False), folder,
                    "good")
        shutil.rmtree(folder / "truth")
        return folder / "good.tif"

    return cached("good_scene", make)


def good_pixels() -> np.ndarray:
    import tifffile

    return tifffile.imread(good_scene())


def reference_run(name: str, folder_maker: Callable[[Path], None], *args: str) -> Path:
    """A clean run of the inputs ``folder_maker`` writes (cached by ``name``)."""

    def make():
        folder = _root() / f"ref_{name}" / "in"
        folder.mkdir(parents=True)
        folder_maker(folder)
        output = folder.parent / "run"
        run = cli("analyze", f"input={folder}", f"output={output}", *FAST, *args)
        if run.code not in (0, SOME_SKIPPED):
            raise RuntimeError(f"the reference run {name} failed: {run.text[-500:]}")
        return output

    return cached(f"ref_{name}", make)


def good_count() -> int:
    output = reference_run("good", lambda f: shutil.copy(good_scene(), f / "good.tif"))
    count = summary_of(output)["particles"]
    if count < 8:
        raise RuntimeError(f"the good scene gave {count} particles")
    return count


def model_run() -> Path:
    """An analysed run with shape groups and a saved classifier (features only: fast)."""

    def make():
        from nanoshape.examples import bundled_examples_dir

        output = _root() / "model_run"
        run = cli("analyze", f"input={bundled_examples_dir()}", f"output={output}", "workers=0", "shape.cnn=false",
                  "report=false")
        if run.code != 0 or not (output / "groups" / "classifier.skops").exists():
            raise RuntimeError(f"the model run failed: {run.text[-500:]}")
        return output

    return cached("model_run", make)


class Workspace:
    """A fresh folder for one case, with helpers to stage files and run nanoshape."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def folder(self, name: str = "in") -> Path:
        folder = self.path / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def with_good(self, name: str = "in") -> Path:
        folder = self.folder(name)
        shutil.copy(good_scene(), folder / "good.tif")
        return folder

    def analyze(self, input_: Path | str, *args: str, output: Path | None = None, fast: bool = True) -> tuple[Run, Path]:
        output = output or self.path / "run"
        run = cli("analyze", f"input={input_}", f"output={output}", *(FAST if fast else ()), *args)
        return run, output

    def bad_file_run(self, name: str, write: Callable[[Path], None]) -> tuple[Run, dict]:
        """Analyse a folder of the good scene and one bad file; the run must finish."""
        folder = self.with_good()
        write(folder / name)
        run, output = self.analyze(folder)
        expect(run.code in (0, SOME_SKIPPED), f"exit status {run.code}: {run.text[-300:]}")
        summary = summary_of(output)
        expect(summary["particles_per_image"].get("good") == good_count(),
               f"the good micrograph next to {name!r} was not analysed as on its own")
        return run, summary


def tiff(array: np.ndarray, **kwargs) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        import tifffile

        tifffile.imwrite(path, array, **kwargs)

    return write


def skipped_with(summary: dict, name: str, *words: str) -> None:
    reasons = skipped_names(summary)
    expect(name in reasons, f"{name!r} is not listed as skipped (skipped: {list(reasons)})")
    for word in words:
        expect(word.lower() in reasons[name].lower(), f"the reason for {name!r} lacks {word!r}: {reasons[name]}")


def analysed_like_good(summary: dict, stem: str, tolerance: int = 2) -> None:
    count = summary["particles_per_image"].get(stem)
    expect(count is not None, f"{stem!r} was not analysed (skipped: {summary['files_skipped']})")
    expect(abs(count - good_count()) <= tolerance, f"{stem!r}: {count} particles, the good scene {good_count()}")


def no_particles_with_warning(summary: dict, stem: str) -> None:
    expect(summary["particles_per_image"].get(stem) == 0, f"{stem!r} should give 0 particles")
    expect(any(w.startswith(f"{stem}: no particles found") for w in summary["warnings"]), f"no warning for {stem!r}")


# ============================================================================ 1. files (issue: handled)


@case("files", "empty file (0 bytes)", issue="handled")
def empty_file(w):
    _, summary = w.bad_file_run("empty.tif", lambda p: p.write_bytes(b""))
    skipped_with(summary, "empty.tif", "empty")


@case("files", "truncated TIFF", issue="handled")
def truncated_tiff(w):
    _, summary = w.bad_file_run("truncated.tif", lambda p: p.write_bytes(good_scene().read_bytes()[:3000]))
    skipped_with(summary, "truncated.tif", "truncated")


@case("files", "garbage named .dm4", issue="handled")
def garbage_dm4(w):
    _, summary = w.bad_file_run("garbage.dm4", lambda p: p.write_bytes(b"\x00\x00\x00\x04" + bytes(range(256)) * 10))
    skipped_with(summary, "garbage.dm4")


@case("files", "text file named .png", issue="handled")
def text_png(w):
    _, summary = w.bad_file_run("text.png", lambda p: p.write_text("this is not a png"))
    skipped_with(summary, "text.png", "PNG")


@case("files", "TIFF named .png", issue="handled")
def tiff_named_png(w):
    _, summary = w.bad_file_run("tiff_named.png", tiff(good_pixels()))
    analysed_like_good(summary, "tiff_named")
    expect(any("TIFF" in x for x in summary["warnings"]), "no warning that the content is TIFF")


@case("files", "constant image", issue="handled")
def constant_image(w):
    _, summary = w.bad_file_run("constant.tif", tiff(np.full((128, 128), 1000, np.uint16)))
    no_particles_with_warning(summary, "constant")


@case("files", "all-black image", issue="handled")
def black_image(w):
    _, summary = w.bad_file_run("black.tif", tiff(np.zeros((128, 128), np.uint8)))
    no_particles_with_warning(summary, "black")


@case("files", "all-white image", issue="handled")
def white_image(w):
    _, summary = w.bad_file_run("white.tif", tiff(np.full((128, 128), 255, np.uint8)))
    no_particles_with_warning(summary, "white")


@case("files", "NaN patch in a float image", issue="handled")
def nan_patch(w):
    pixels = good_pixels().astype(np.float32)
    pixels[10:40, 10:40] = np.nan
    _, summary = w.bad_file_run("with_nan.tif", tiff(pixels))
    analysed_like_good(summary, "with_nan", tolerance=3)
    expect(any("NaN" in x for x in summary["warnings"]), "no warning about the NaN pixels")


@case("files", "rows of +inf and -inf", issue="handled")
def inf_rows(w):
    pixels = good_pixels().astype(np.float32)
    pixels[50:54] = np.inf
    pixels[70:74] = -np.inf
    _, summary = w.bad_file_run("with_inf.tif", tiff(pixels))
    count = summary["particles_per_image"].get("with_inf")
    expect(count is not None and count > 0, "the image with inf rows was not analysed")
    expect(any("infinite" in x for x in summary["warnings"]), "no warning about the infinite pixels")


@case("files", "every pixel NaN", issue="handled")
def all_nan(w):
    _, summary = w.bad_file_run("all_nan.tif", tiff(np.full((64, 64), np.nan, np.float32)))
    skipped_with(summary, "all_nan.tif", "NaN")


@case("files", "a 1 x 1 image", issue="handled")
def one_pixel(w):
    _, summary = w.bad_file_run("one_pixel.tif", tiff(np.ones((1, 1), np.uint16)))
    skipped_with(summary, "one_pixel.tif", "2-D")


@case("files", "an 8 x 8 image (too small to segment)", issue="added")
def tiny_image(w):
    _, summary = w.bad_file_run("tiny.tif", tiff(np.arange(64, dtype=np.uint16).reshape(8, 8)))
    skipped_with(summary, "tiny.tif", "too small")


@case("files", "a 2 x 3000 strip", issue="added")
def strip_image(w):
    _, summary = w.bad_file_run("strip.tif", tiff(np.tile(np.arange(3000, dtype=np.uint16), (2, 1))))
    skipped_with(summary, "strip.tif", "too small")


@case("files", "RGB PNG", issue="handled")
def rgb_png(w):
    from PIL import Image

    rgb = np.stack([(good_pixels() / 256).astype(np.uint8)] * 3, -1)
    _, summary = w.bad_file_run("rgb.png", lambda p: Image.fromarray(rgb).save(p))
    analysed_like_good(summary, "rgb")


@case("files", "RGBA PNG", issue="handled")
def rgba_png(w):
    from PIL import Image

    grey = (good_pixels() / 256).astype(np.uint8)
    rgba = np.dstack([grey, grey, grey, np.full(grey.shape, 255, np.uint8)])
    _, summary = w.bad_file_run("rgba.png", lambda p: Image.fromarray(rgba).save(p))
    analysed_like_good(summary, "rgba")


@case("files", "colour image whose channels differ", issue="added")
def colour_png(w):
    from PIL import Image

    grey = (good_pixels() / 256).astype(np.uint8)
    rgb = np.dstack([grey, (grey * 0.9).astype(np.uint8), (grey * 0.8).astype(np.uint8)])
    _, summary = w.bad_file_run("colour.png", lambda p: Image.fromarray(rgb).save(p))
    analysed_like_good(summary, "colour")
    expect(any("luminance" in x for x in summary["warnings"]), "no warning about the colour conversion")


@case("files", "signed 16-bit TIFF", issue="handled")
def signed16(w):
    _, summary = w.bad_file_run("signed16.tif", tiff((good_pixels().astype(np.int32) - 32768).astype(np.int16)))
    analysed_like_good(summary, "signed16")


@case("files", "8-bit signed TIFF", issue="added")
def signed8(w):
    _, summary = w.bad_file_run("signed8.tif", tiff((good_pixels() // 256 - 128).astype(np.int8)))
    analysed_like_good(summary, "signed8")


@case("files", "float64 TIFF", issue="handled")
def float64_tiff(w):
    _, summary = w.bad_file_run("float64.tif", tiff(good_pixels().astype(np.float64) / 65535))
    analysed_like_good(summary, "float64")


@case("files", "uint32 TIFF", issue="handled")
def uint32_tiff(w):
    _, summary = w.bad_file_run("uint32.tif", tiff(good_pixels().astype(np.uint32) * 60000))
    analysed_like_good(summary, "uint32")


@case("files", "dark-field (inverted) image", issue="handled")
def dark_field(w):
    import jax
    import tifffile

    from nanoshape.examples import write_scene
    from nanoshape.scene import SceneOptions

    # the scene of tests/test_robustness.py (the good scene here is too sparse for the polarity test)
    folder = w.folder()
    write_scene(jax.random.key(1), SceneOptions(height_px=256, width_px=256, n_particles=20), folder, "bright")
    shutil.rmtree(folder / "truth")
    tifffile.imwrite(folder / "dark_field.tif", (65535 - tifffile.imread(folder / "bright.tif")).astype(np.uint16))
    run, output = w.analyze(folder)
    counts = summary_of(output)["particles_per_image"]
    expect(run.code == 0 and counts["bright"] >= 10, f"exit {run.code}, counts {counts}")
    expect(abs(counts["dark_field"] - counts["bright"]) <= 2, f"dark field {counts['dark_field']}, bright {counts['bright']}")


@case("files", "pure noise (no particles)", issue="handled")
def pure_noise(w):
    noise = np.random.default_rng(0).normal(1000, 30, (192, 192)).astype(np.float32)
    _, summary = w.bad_file_run("noise.tif", tiff(noise))
    no_particles_with_warning(summary, "noise")


@case("files", "complex-valued TIFF (an FFT)", issue="handled")
def complex_tiff(w):
    _, summary = w.bad_file_run("fft.tif", tiff(np.fft.fft2(good_pixels()[:64, :64]).astype(np.complex64)))
    skipped_with(summary, "fft.tif", "complex")


@case("files", "a stack of three frames", issue="handled")
def stack_tiff(w):
    _, summary = w.bad_file_run("stack.tif", tiff(np.stack([good_pixels()] * 3), photometric="minisblack"))
    analysed_like_good(summary, "stack")
    expect(any("frames" in x for x in summary["warnings"]), "no warning that only the first frame was read")


@case("files", "an unsupported file given by name", issue="handled")
def unsupported_file(w):
    path = w.folder() / "notes.txt"
    path.write_text("not an image")
    run, _ = w.analyze(path)  # (the exit status of a run that analysed nothing is case all_skipped)
    expect("notes.txt" in run.text and "unsupported" in run.text.lower(), f"exit {run.code}: {run.text[-300:]}")


@case("files", "truncated JPEG", issue="handled")
def truncated_jpeg(w):
    from PIL import Image

    def write(path):
        buffer = io.BytesIO()
        Image.fromarray((good_pixels() / 256).astype(np.uint8)).save(buffer, format="JPEG")
        path.write_bytes(buffer.getvalue()[:600])

    _, summary = w.bad_file_run("cut.jpg", write)
    skipped_with(summary, "cut.jpg", "JPEG")


@case("files", "truncated PNG", issue="handled")
def truncated_png(w):
    from PIL import Image

    def write(path):
        buffer = io.BytesIO()
        Image.fromarray((good_pixels() / 256).astype(np.uint8)).save(buffer, format="PNG")
        path.write_bytes(buffer.getvalue()[:2000])

    _, summary = w.bad_file_run("cut.png", write)
    skipped_with(summary, "cut.png", "PNG")


@case("files", "truncated MRC", issue="handled")
def truncated_mrc(w):
    import mrcfile

    def write(path):
        with mrcfile.new(path) as mrc:
            mrc.set_data(good_pixels().astype(np.float32))
        path.write_bytes(path.read_bytes()[:3000])

    _, summary = w.bad_file_run("cut.mrc", write)
    skipped_with(summary, "cut.mrc", "MRC")


@case("files", "HDF5 signature followed by garbage (.emd)", issue="handled")
def corrupt_emd(w):
    _, summary = w.bad_file_run("corrupt.emd", lambda p: p.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(4000)))
    skipped_with(summary, "corrupt.emd")


@case("files", "two files with one stem (good.tif, good.tiff)", issue="handled")
def duplicate_stem(w):
    _, summary = w.bad_file_run("good.tiff", lambda p: shutil.copy(good_scene(), p))
    skipped_with(summary, "good.tiff", "same file stem")


@case("files", "hidden file and a folder named like a micrograph", issue="added")
def hidden_and_folder(w):
    folder = w.with_good()
    shutil.copy(good_scene(), folder / ".hidden.tif")
    (folder / "folder.tif").mkdir()
    run, output = w.analyze(folder)
    expect(run.code == 0, f"exit status {run.code}: {run.text[-300:]}")
    expect(set(summary_of(output)["particles_per_image"]) == {"good"}, "a hidden file or a folder was analysed")


@case("files", "a file without a pixel size", issue="handled")
def no_pixel_size(w):
    _, summary = w.bad_file_run("no_size.tif", tiff(good_pixels()))
    analysed_like_good(summary, "no_size")
    expect(any("px" in x and "no_size" in x for x in summary["warnings"]), "no warning that sizes are in px")


@case("files", "a negative pixel size in OME metadata", issue="handled")
def negative_pixel_size(w):
    _, summary = w.bad_file_run("negative.ome.tif", tiff(good_pixels(), ome=True,
                                                         metadata={"PhysicalSizeX": -2.0, "PhysicalSizeXUnit": "nm"}))
    expect(any("negative.ome" in x and "cannot be right" in x for x in summary["warnings"]), "no warning")


@case("files", "a pixel size of 1 mm in ImageJ metadata", issue="handled")
def absurd_pixel_size(w):
    _, summary = w.bad_file_run("absurd.tif", tiff(good_pixels(), description="ImageJ=1.53t\nunit=m\n",
                                                   resolution=(1e-3, 1e-3), metadata=None))
    expect(any("absurd" in x and "cannot be right" in x for x in summary["warnings"]), "no warning")


@case("files", "a folder without micrographs", issue="handled")
def empty_folder(w):
    folder = w.folder()
    (folder / "readme.txt").write_text("nothing here")
    run, output = w.analyze(folder)
    expect(run.code != 0 and "no micrographs" in run.text, f"exit {run.code}: {run.text[-300:]}")


@case("files", "an input path that does not exist", issue="handled")
def missing_input(w):
    run, _ = w.analyze(w.path / "no_such_folder")
    expect(run.code != 0 and "no_such_folder" in run.text, f"exit {run.code}: {run.text[-300:]}")


@case("files", "a symbolic link to a good micrograph", issue="added")
def good_symlink(w):
    folder = w.folder()
    os.symlink(good_scene(), folder / "linked.tif")
    run, output = w.analyze(folder)
    expect(run.code == 0, f"exit status {run.code}")
    analysed_like_good(summary_of(output), "linked", tolerance=0)


# ============================================================================ 2. names (issue: handled)


def _report_run(w, names: list[str]) -> tuple[Run, Path, str]:
    folder = w.folder()
    for name in names:
        shutil.copy(good_scene(), folder / name)
    run, output = w.analyze(folder, "report=true")
    expect(run.code == 0, f"exit status {run.code}: {run.text[-300:]}")
    return run, output, (output / "report.html").read_text(encoding="utf-8")


@case("names", "<script> in a file name is escaped in the report", issue="handled")
def script_name(w):
    _, output, page = _report_run(w, ["<script>alert(1)<script>.tif"])
    expect("<script>alert" not in page and "&lt;script&gt;alert(1)" in page, "the name is not escaped in report.html")


@case("names", "quotes and ampersands in a file name", issue="handled")
def quote_name(w):
    _, output, page = _report_run(w, ["a\"b'c&d.tif"])
    expect("a&quot;b&#x27;c&amp;d" in page, "quotes and & are not escaped in report.html")


@case("names", "non-ASCII file name (Ni₃Pt µm 粒子)", issue="handled")
def unicode_name(w):
    folder = w.folder()
    shutil.copy(good_scene(), folder / "Ni₃Pt µm 粒子.tif")
    run, output = w.analyze(folder)
    expect(run.code == 0, f"exit status {run.code}")
    import pandas as pd

    expect(set(pd.read_parquet(output / "particles.parquet").image) == {"Ni₃Pt µm 粒子"}, "the name was altered")


@case("names", "a newline in a file name", issue="handled")
def newline_name(w):
    folder = w.folder()
    shutil.copy(good_scene(), folder / "two\nlines.tif")
    run, output = w.analyze(folder)
    expect(run.code == 0, f"exit status {run.code}")
    import pandas as pd

    expect(set(pd.read_csv(output / "particles.csv").image) == {"two\nlines"}, "the name did not survive the CSV")


@case("names", "a file name with spaces, brackets and a leading dash-free '%s'", issue="added")
def printf_name(w):
    folder = w.folder()
    shutil.copy(good_scene(), folder / "%s [1] {x} (copy).tif")
    run, output = w.analyze(folder)
    expect(run.code == 0, f"exit status {run.code}")
    expect(list(summary_of(output)["particles_per_image"]) == ["%s [1] {x} (copy)"], "the name was altered")


# ============================================================================ 3. options (issue: handled)


def _refused(w, *args: str, words: tuple[str, ...], command: str = "analyze") -> None:
    output = w.path / "run"
    run = cli(command, f"input={good_scene()}", f"output={output}", *FAST, *args)
    expect(run.code != 0, f"accepted {args}")
    for word in words:
        expect(word in run.text, f"the message lacks {word!r}: {run.text[-300:]}")
    expect(not (output / "particles.csv").exists(), "results were written although the options were refused")


@case("options", "pixel_size_nm=-1", issue="handled")
def negative_override(w):
    _refused(w, "pixel_size_nm=-1", words=("pixel_size_nm",))


@case("options", "pixel_size_nm=nan", issue="handled")
def nan_override(w):
    _refused(w, "pixel_size_nm=nan", words=("pixel_size_nm",))


@case("options", "pixel_size_nm=inf", issue="handled")
def inf_override(w):
    _refused(w, "pixel_size_nm=inf", words=("pixel_size_nm",))


@case("options", "an unknown option (no_such_option=1)", issue="handled")
def unknown_option(w):
    _refused(w, "no_such_option=1", words=("no_such_option",))


@case("options", "a bad value (segment.polarity=sideways)", issue="handled")
def bad_polarity(w):
    _refused(w, "segment.polarity=sideways", words=("polarity",))


@case("options", "a value of the wrong type (workers=many)", issue="handled")
def wrong_type(w):
    _refused(w, "workers=many", words=("workers",))


@case("options", "a shape model that does not exist", issue="handled")
def missing_model(w):
    output = w.path / "run"
    run = cli("analyze", f"input={good_scene()}", f"output={output}", "workers=0", "report=false", "group=false",
              f"shape.model={w.path / 'no_model'}")
    expect(run.code != 0 and "no_model" in run.text, f"exit {run.code}: {run.text[-300:]}")


@case("options", "classify without model=", issue="handled")
def classify_without_model(w):
    run = cli("classify", f"input={good_scene()}", f"output={w.path / 'out'}")
    expect(run.code != 0 and "model=" in run.text, f"exit {run.code}: {run.text[-300:]}")


@case("options", "classify with a model folder holding no classifier", issue="handled")
def classify_without_classifier(w):
    run = cli("classify", f"input={good_scene()}", f"model={w.folder('empty_model')}", f"output={w.path / 'out'}")
    expect(run.code != 0 and "classifier" in run.text, f"exit {run.code}: {run.text[-300:]}")


# ============================================================================ 4. runs (issue: handled)


@case("runs", "a rerun of the same command resumes to the same results", issue="handled")
def rerun_resumes(w):
    folder = w.with_good()
    shutil.copy(good_scene(), folder / "second.tif")
    first, output = w.analyze(folder)
    before = result_bytes(output)
    again, _ = w.analyze(folder)
    expect(first.code == 0 and again.code == 0, f"exit statuses {first.code}, {again.code}")
    expect(summary_of(output)["micrographs_resumed"] == 2, "the rerun did not resume")
    expect(result_bytes(output) == before, "the resumed results differ")


def _scenes(folder: Path, n: int = 6) -> None:
    for i in range(n):
        shutil.copy(good_scene(), folder / f"scene_{i:02d}.tif")


@case("runs", "kill -9 while micrographs are analysed, then rerun: byte-identical", issue="handled", slow=True)  # test_robustness kills a run too
def kill_during_analysis(w):
    reference = reference_run("scenes", _scenes)
    folder = w.folder()
    _scenes(folder)
    output = w.path / "run"
    process = spawn("analyze", f"input={folder}", f"output={output}", *FAST)
    deadline = time.monotonic() + 300
    while len(list((output / "parts" / "particles").glob("*.parquet"))) < 2:
        if process.poll() is not None or time.monotonic() > deadline:
            raise NotHere("the run ended before it could be killed")
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    run, _ = w.analyze(folder)
    expect(run.code == 0, f"the rerun exited {run.code}: {run.text[-300:]}")
    same_results(reference, output)


@case("runs", "two Dask workers give the serial results", issue="handled", slow=True)  # test_robustness runs two workers too
def dask_workers(w):
    reference = reference_run("scenes", _scenes)
    folder = w.folder()
    _scenes(folder)
    run, output = w.analyze(folder, "workers=2")
    expect(run.code == 0, f"exit status {run.code}")
    same_results(reference, output)


@case("runs", "the saved classifier holds no pickle", issue="handled")
def no_pickle(w):
    path = model_run() / "groups" / "classifier.skops"
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        expect("schema.json" in names, "not a skops file")
        for name in names:
            data = archive.read(name)
            expect(not name.endswith((".pkl", ".pickle")), f"{name} is a pickle")
            if name.endswith(".npy"):
                expect(b"'descr': '|O'" not in data[:200], f"{name} is an object array (pickled)")


@case("runs", "skops refuses a classifier file that would run code", issue="handled")
def skops_code(w):
    import hashlib

    import skops.io as sio
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    from nanoshape.groups import load_classifier

    model = _copied_model(w)
    # a pipeline whose transform runs a shell command: os.system on every batch it sees
    sio.dump(make_pipeline(StandardScaler(), FunctionTransformer(os.system)), model / "groups" / "classifier.skops")
    meta = json.loads((model / "groups" / "classifier.json").read_text())
    # the attacker controls both files: the metadata names the new file's digest
    meta["skops_sha256"] = hashlib.sha256((model / "groups" / "classifier.skops").read_bytes()).hexdigest()
    (model / "groups" / "classifier.json").write_text(json.dumps(meta))
    try:
        load_classifier(model / "groups" / "classifier.skops")
    except ValueError as error:
        expect("system" in str(error), f"refused without naming the function: {error}")
        return
    raise Wrong("a classifier calling os.system was loaded")


# ============================================================================ 5. the issue's failures


def _finished_run(w, name: str = "run") -> tuple[Path, Path]:
    folder = w.with_good()
    shutil.copy(good_scene(), folder / "second.tif")
    run, output = w.analyze(folder, output=w.path / name)
    if run.code != 0:
        raise RuntimeError(f"the first run failed: {run.text[-300:]}")
    return folder, output


@case("failures", "a corrupt part file in the run directory, then rerun", issue="traceback")
def corrupt_part(w):
    folder, output = _finished_run(w)
    reference = result_bytes(output)
    (output / "parts" / "particles" / "second.parquet").write_bytes(b"PAR1 not really")
    run, _ = w.analyze(folder)
    expect(run.code == 0, f"exit status {run.code}: {run.text[-300:]}")
    expect("second" in run.text and "damaged" in run.text, f"no message about the damaged part: {run.text[-400:]}")
    expect(result_bytes(output) == reference, "the redone micrograph differs")


@case("failures", "a missing parts/info file, then rerun", issue="traceback")
def missing_info(w):
    folder, output = _finished_run(w)
    reference = result_bytes(output)
    (output / "parts" / "info" / "second.json").unlink()
    run, _ = w.analyze(folder)
    expect(run.code == 0, f"exit status {run.code}: {run.text[-300:]}")
    expect("second" in run.text and "damaged" in run.text, f"no message about the missing part: {run.text[-400:]}")
    expect(result_bytes(output) == reference, "the redone micrograph differs")


@case("failures", "a 250-character file name (and one of 255, the longest a file system takes)", issue="traceback")
def long_name(w):
    folder = w.with_good()
    shutil.copy(good_scene(), folder / f"{'n' * 246}.tif")  # 250 characters
    shutil.copy(good_scene(), folder / f"{'m' * 251}.tif")  # 255: <stem>.parquet cannot exist
    run, output = w.analyze(folder)
    expect(run.code == SOME_SKIPPED, f"exit status {run.code}: {run.text[-300:]}")
    summary = summary_of(output)
    analysed_like_good(summary, "n" * 246, tolerance=0)
    skipped_with(summary, f"{'m' * 251}.tif", "too long")


def _mount_tmpfs(where: Path, *options: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    if sys.platform != "linux" or os.geteuid() != 0 or shutil.which("mount") is None:
        raise NotHere("mounting a small file system needs Linux and root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(("size=256k",) + options), "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise NotHere(f"cannot mount a tmpfs here: {done.stderr.strip()}")


def _unmount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


@case("failures", "the disk fills up during the run", issue="traceback")
def full_disk(w):
    folder = w.with_good()
    for i in range(12):
        shutil.copy(good_scene(), folder / f"more_{i:02d}.tif")
    mount = w.path / "small_fs"
    _mount_tmpfs(mount)
    try:
        run, output = w.analyze(folder, "overlays=true", output=mount / "run")
        expect(run.code != 0, "a run on a full disk exited 0")
        expect("No space left" in run.text, f"the message does not say the disk is full: {run.text[-400:]}")
        parts = list((output / "parts" / "particles").glob("*.parquet"))
        expect(len(parts) < 13, "the disk did not fill up: the case is not staged")
    finally:
        _unmount(mount)


@case("failures", "pixel_size_nm=1e-300", issue="traceback")
def tiny_override(w):
    _refused(w, "pixel_size_nm=1e-300", words=("pixel_size_nm",))


@case("failures", "a file name with $\\...$ (matplotlib mathtext) in the report", issue="traceback")
def mathtext_name(w):
    _, output, page = _report_run(w, ["sample_$\\undefinedmacro{x$.tif"])
    expect((output / "figures" / "micrograph_00.png").exists(), "the micrograph figure is missing")


def _read_only_dir(w) -> Path:
    parent = w.folder("locked")
    if os.geteuid() != 0:
        parent.chmod(0o555)
        return parent
    # root ignores permission bits: bind the folder read-only onto itself
    done = subprocess.run(["mount", "--bind", "-o", "ro", str(parent), str(parent)], capture_output=True, text=True)
    if done.returncode != 0:
        raise NotHere(f"cannot make a read-only folder as root: {done.stderr.strip()}")
    return parent


@case("failures", "output into a read-only folder", issue="traceback")
def read_only_dir(w):
    parent = _read_only_dir(w)
    try:
        run, _ = w.analyze(w.with_good(), output=parent / "run")
        expect(run.code != 0 and str(parent / "run") in run.text, f"exit {run.code}: {run.text[-300:]}")
    finally:
        if os.geteuid() == 0:
            _unmount(parent)
        else:
            parent.chmod(0o755)


@case("failures", "output onto a read-only file system", issue="traceback")
def read_only_fs(w):
    mount = w.path / "ro_fs"
    _mount_tmpfs(mount, "ro")
    try:
        run, _ = w.analyze(w.with_good(), output=mount / "run")
        expect(run.code != 0 and str(mount / "run") in run.text and "read-only" in run.text.lower(),
               f"exit {run.code}: {run.text[-300:]}")
    finally:
        _unmount(mount)


@case("failures", "output= an existing file", issue="traceback")
def output_is_file(w):
    target = w.path / "results.txt"
    target.write_text("my notes")
    run, _ = w.analyze(w.with_good(), output=target)
    expect(run.code != 0 and str(target) in run.text, f"exit {run.code}: {run.text[-300:]}")
    expect(target.read_text() == "my notes", "the file was changed")


def _copied_model(w) -> Path:
    target = w.folder("model")
    shutil.copytree(model_run() / "groups", target / "groups")
    return target


@case("failures", "classify with a truncated .skops", issue="traceback")
def truncated_skops(w):
    model = _copied_model(w)
    path = model / "groups" / "classifier.skops"
    path.write_bytes(path.read_bytes()[:500])
    run = cli("classify", f"input={good_scene()}", f"model={model}", f"output={w.path / 'out'}", *FAST)
    expect(run.code != 0 and "classifier.skops" in run.text, f"exit {run.code}: {run.text[-300:]}")


@case("failures", "classify with a classifier.json missing keys", issue="traceback")
def classifier_json_keys(w):
    model = _copied_model(w)
    path = model / "groups" / "classifier.json"
    meta = json.loads(path.read_text())
    del meta["columns"], meta["groups"]
    path.write_text(json.dumps(meta))
    run = cli("classify", f"input={good_scene()}", f"model={model}", f"output={w.path / 'out'}", *FAST)
    expect(run.code != 0 and "classifier.json" in run.text and "columns" in run.text,
           f"exit {run.code}: {run.text[-300:]}")


@case("failures", "features of 1- and 2-pixel particles are finite", issue="silently wrong")
def tiny_particles(w):
    from nanoshape.features import measure

    labels = np.zeros((20, 20), np.int32)
    labels[2, 2] = 1
    labels[6, 6:8] = 2
    labels[10:12, 10] = 3
    labels[14, 14], labels[15, 15] = 4, 4  # diagonal pair
    table = measure(labels, np.ones((20, 20)), pixel_size_nm=0.5)
    numbers = table.select_dtypes("number").drop(columns=["nearest_neighbour_distance_nm"])
    bad = [c for c in numbers if not np.isfinite(numbers[c]).all()]
    expect(not bad, f"non-finite features of tiny particles: {bad}")
    expect(table.circularity.between(0, 1).all(), f"circularity {table.circularity.tolist()}")


@case("failures", "circularity stays within (0, 1] on discs, polygons and real particles", issue="silently wrong")
def circularity_bound(w):
    from skimage.draw import disk, polygon

    from nanoshape.features import measure

    labels = np.zeros((600, 600), np.int32)
    rng = np.random.default_rng(1)
    for i in range(36):
        cy, cx = 50 + 100 * (i // 6), 50 + 100 * (i % 6)
        if i % 2:
            labels[disk((cy + rng.uniform(-.5, .5), cx + rng.uniform(-.5, .5)), rng.uniform(1.5, 40), shape=labels.shape)] = i + 1
        else:
            n = rng.integers(3, 8)
            angles = np.sort(rng.uniform(0, 2 * np.pi, n))
            radius = rng.uniform(3, 45, n)
            labels[polygon(cy + radius * np.sin(angles), cx + radius * np.cos(angles), labels.shape)] = i + 1
    values = list(measure(labels).circularity)
    images = SHARED_DATA / "emps_train" / "images"
    if images.is_dir():  # the issue saw up to 1.2 there
        folder = w.folder()
        for path in sorted(images.iterdir())[:3]:
            shutil.copy(path, folder / path.name)
        run, output = w.analyze(folder)
        expect(run.code == 0, f"exit status {run.code}")
        import pandas as pd

        values += list(pd.read_parquet(output / "particles.parquet").circularity)
    values = np.asarray(values)
    expect(np.isfinite(values).all() and values.max() <= 1.0 and values.min() > 0,
           f"circularity from {values.min():.3f} to {values.max():.3f}")


@case("failures", "numeric file stems (001.tif) keep their report figures", issue="silently wrong")
def numeric_stems(w):
    _, output, page = _report_run(w, ["001.tif", "002.tif"])
    missing = [name for name in ("micrograph_00", "micrograph_01", "exemplars", "all_particles")
               if not (output / "figures" / f"{name}.png").exists()]
    expect(not missing, f"report figures lost: {missing}")


@case("failures", "a symbolic link loop in the input folder", issue="silently wrong")
def symlink_loop(w):
    folder = w.with_good()
    os.symlink("loop.tif", folder / "loop.tif")
    run, output = w.analyze(folder)
    skipped_with(summary_of(output), "loop.tif", "link")


@case("failures", "a dangling symbolic link in the input folder", issue="silently wrong")
def dangling_symlink(w):
    folder = w.with_good()
    os.symlink(w.path / "gone.tif", folder / "dangling.tif")
    run, output = w.analyze(folder)
    skipped_with(summary_of(output), "dangling.tif", "link")


def _scaled_run(w, factor: float, dtype) -> None:
    import tifffile

    folder = w.folder()
    tifffile.imwrite(folder / "scaled.tif", (good_pixels().astype(np.float64) * factor).astype(dtype))
    run, output = w.analyze(folder)
    expect(run.code == 0, f"exit status {run.code}: {run.text[-300:]}")
    reference = reference_run("good", lambda f: shutil.copy(good_scene(), f / "good.tif"))
    labels = tifffile.imread(output / "labels" / "scaled.tif")
    expect(np.array_equal(labels, tifffile.imread(reference / "labels" / "good.tif")),
           f"{summary_of(output)['particles']} particles, unscaled {good_count()}: not the unscaled labels")


@case("failures", "pixel values scaled by 1e36 (float64 file)", issue="silently wrong")
def scaled_up(w):
    _scaled_run(w, 1e36, np.float64)


@case("failures", "pixel values scaled by 1e-30 (float32 file)", issue="silently wrong")
def scaled_down(w):
    _scaled_run(w, 1e-30, np.float32)


@case("failures", "every file skipped: the exit status says so", issue="silently wrong")
def all_skipped(w):
    folder = w.folder()
    (folder / "empty.tif").write_bytes(b"")
    (folder / "text.png").write_text("no image")
    run, _ = w.analyze(folder)
    expect(run.code not in (0, SOME_SKIPPED), f"exit status {run.code} when nothing was analysed")
    expect("empty.tif" in run.text, "the skipped files are not named")


# ============================================================================ 6. added: data loss, integrity, safeguards


@case("added", "classify without output= must not write into its model's run", issue="added")
def classify_into_model(w):
    model = w.path / "model"
    shutil.copytree(model_run(), model)
    before = (model / "particles.csv").read_bytes(), (model / "summary.json").read_bytes()
    cwd = os.getcwd()
    os.chdir(w.path)
    try:  # both default to a folder in the working directory
        run = cli("classify", f"input={good_scene()}", f"model={model.name}", *FAST)
        os.chdir(cwd)
        run2 = cli("classify", f"input={good_scene()}", f"model={model}", f"output={model}", *FAST)
    finally:
        os.chdir(cwd)
    expect(((model / "particles.csv").read_bytes(), (model / "summary.json").read_bytes()) == before,
           "the model's run was overwritten")
    expect(run2.code != 0 and "model" in run2.text, f"output=model accepted: exit {run2.code}")


def _changed_option(w, *args: str, word: str) -> None:
    folder, output = _finished_run(w)
    before = result_bytes(output)
    config = (output / "config.yaml").read_text()
    run, _ = w.analyze(folder, *args)
    expect(run.code != 0 and word in run.text, f"a rerun with {args} was accepted (exit {run.code})")
    expect(result_bytes(output) == before and (output / "config.yaml").read_text() == config,
           "the refused rerun changed the run directory")


@case("added", "rerun into a finished run with pixel_size_nm=0.5", issue="added")
def rerun_pixel_size(w):
    _changed_option(w, "pixel_size_nm=0.7", word="pixel_size_nm")


@case("added", "rerun into a finished run with other segmentation options", issue="added")
def rerun_segment_option(w):
    _changed_option(w, "segment.threshold_fraction=0.3", word="segment.threshold_fraction")


@case("added", "rerun after an input was replaced by another with the same name", issue="added")
def replaced_input(w):
    import tifffile

    folder, output = _finished_run(w)
    tifffile.imwrite(folder / "second.tif", np.flipud(good_pixels()))
    run, _ = w.analyze(folder)
    expect(run.code != 0 and "second.tif" in run.text, f"the replaced input was not noticed (exit {run.code})")


@case("added", "overwrite=true starts over with the new options", issue="added")
def overwrite_starts_over(w):
    folder, output = _finished_run(w)
    run, _ = w.analyze(folder, "pixel_size_nm=0.7", "overwrite=true")
    expect(run.code == 0, f"exit status {run.code}: {run.text[-300:]}")
    fresh = reference_run("two_07", lambda f: [shutil.copy(good_scene(), f / n) for n in ("good.tif", "second.tif")],
                          "pixel_size_nm=0.7")
    same_results(fresh, output)


#: makes a run hold each half-written file for a while, so that a second run meets them
_SLOW_WRITES = """
import time, nanoshape.pipeline as pipeline
_write = pipeline._atomic_write
def _slow(path, write):
    def held(tmp):
        write(tmp)
        time.sleep(0.3)
    _write(path, held)
pipeline._atomic_write = _slow
"""


@case("added", "a second run into the same directory while the first runs", issue="added", slow=True)  # test_rundir refuses a second run in the default run
def concurrent_runs(w):
    reference = reference_run("scenes", _scenes)
    folder = w.folder()
    _scenes(folder)
    output = w.path / "run"
    first = spawn("analyze", f"input={folder}", f"output={output}", *FAST, prelude=_SLOW_WRITES)
    try:
        deadline = time.monotonic() + 300
        while not (output / "labels").is_dir() or not list((output / "labels").glob("*.tif")):
            if first.poll() is not None or time.monotonic() > deadline:
                raise NotHere(f"the first run ended before the second started: {first.communicate()[1][-300:]}")
            time.sleep(0.01)
        second = cli_process("analyze", f"input={folder}", f"output={output}", *FAST)
        first_run = finish(first)
    finally:  # never leave the first run writing into a folder that is about to be removed
        if first.poll() is None:
            first.kill()
            first.communicate()
    expect(first_run.code == 0, f"the first run exited {first_run.code}: {first_run.err[-300:]}")
    expect(second.code == 0 or "another nanoshape run" in second.text,
           f"the second run neither finished nor said why not (exit {second.code}): {second.text[-300:]}")
    same_results(reference, output)


#: where a run is killed (kill -9) in the kill-points case, by the function that kills it
_KILL_POINTS = {
    "between a micrograph's label image and its tables": "nanoshape.overlay.save_overlay",
    "between particles.csv and summary.json": "summary.json",
}


def _killer(point: str) -> str:
    target = _KILL_POINTS[point]
    if target.endswith(".json"):
        return f"""
import os, signal, nanoshape.gather as gather
_write = gather._atomic_write
def _write_or_die(path, write):
    if path.name == {target!r}:
        os.kill(os.getpid(), signal.SIGKILL)
    _write(path, write)
gather._atomic_write = _write_or_die
"""
    module, name = target.rsplit(".", 1)
    return f"""
import os, signal, {module} as target
target.{name} = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
"""


@case("added", "kill -9 at fixed points of a run, then rerun: byte-identical", issue="added", slow=True)  # the kill -9 of test_robustness stays in the default run
def kill_points(w):
    reference = reference_run("scenes", _scenes)
    folder = w.folder()
    _scenes(folder)
    for i, point in enumerate(_KILL_POINTS):
        output = w.path / f"run{i}"
        process = spawn("analyze", f"input={folder}", f"output={output}", *FAST, prelude=_killer(point))
        process.communicate(timeout=600)
        expect(process.returncode == -signal.SIGKILL, f"{point}: the run was not killed ({process.returncode})")
        run, _ = w.analyze(folder, output=output)
        expect(run.code == 0, f"{point}: the rerun exited {run.code}: {run.text[-300:]}")
        same_results(reference, output)


@case("added", "a run killed while writing its report is not marked complete", issue="added")
def killed_in_report(w):
    folder = w.with_good()
    output = w.path / "run"
    process = spawn("analyze", f"input={folder}", f"output={output}", *FAST[:-2], "report=true", "group=false",
                    prelude="""
                    import os, signal, nanoshape.report
                    nanoshape.report.write_report = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
                    """)
    process.communicate(timeout=600)
    expect((output / "summary.json").exists(), "the run did not get as far as the report")
    expect(not (output / "complete.json").exists() and (output / "run.json").exists(),
           "nothing tells the killed run from a finished one")
    run, _ = w.analyze(folder, "report=true")
    expect(run.code == 0 and (output / "complete.json").exists() and (output / "report.html").exists(),
           "the rerun did not finish the run")


@case("added", "a glob over a folder holding an earlier run skips that run's files", issue="added")
def glob_skips_runs(w):
    data = w.folder("data")
    shutil.copy(good_scene(), data / "sample.tif")
    first, _ = w.analyze(data, output=data / "earlier_run")
    expect(first.code == 0, "the first run failed")
    run, output = w.analyze(f"{data}/**/*.tif")
    expect(run.code == 0, f"exit status {run.code}: {run.text[-300:]}")
    summary = summary_of(output)
    expect(summary["files_read"] == [str(data / "sample.tif")], f"read {summary['files_read']}")


@case("added", "the classifier loader refuses Pipeline(StandardScaler, DummyClassifier)", issue="added")
def dummy_classifier(w):
    import skops.io as sio
    from sklearn.dummy import DummyClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from nanoshape.groups import load_classifier

    model = _copied_model(w)
    meta = json.loads((model / "groups" / "classifier.json").read_text())
    x = np.random.default_rng(0).normal(size=(20, len(meta["columns"])))
    impostor = make_pipeline(StandardScaler(), DummyClassifier(strategy="constant", constant=2)).fit(x, [1, 2] * 10)
    sio.dump(impostor, model / "groups" / "classifier.skops")
    import hashlib

    meta["skops_sha256"] = hashlib.sha256((model / "groups" / "classifier.skops").read_bytes()).hexdigest()
    (model / "groups" / "classifier.json").write_text(json.dumps(meta))
    try:
        load_classifier(model / "groups" / "classifier.skops")
    except ValueError as error:
        expect("DummyClassifier" in str(error), f"refused without naming the type: {error}")
        return
    raise Wrong("a DummyClassifier pipeline was loaded as the classifier")


@case("added", "a file name that a spreadsheet would run as a formula", issue="added")
def formula_name(w):
    folder = w.folder()
    name = '=HYPERLINK("evil.example","click me")'
    shutil.copy(good_scene(), folder / f"{name}.tif")
    (folder / "+cmd.tif").write_bytes(b"")
    run, output = w.analyze(folder)
    for table in ("particles.csv", "dropped.csv"):
        text = (output / table).read_text()
        expect(f"\n{name}" not in text and f'\n"{name}' not in text.replace('""', '"'),
               f"{table}: the formula is a cell of its own")
    import pandas as pd

    expect(set(pd.read_parquet(output / "particles.parquet").image) == {name}, "parquet lost the real name")


@case("added", "a 1 MB TIFF declaring 30000 x 30000 pixels is refused before decoding", issue="added")
def pixel_bomb(w):
    import tifffile

    path = w.folder() / "bomb.tif"
    zeros = np.zeros((1024, 1024), np.uint8)
    tiles = (zeros for _ in range(30 * 30))  # 900 zlib-compressed tiles of zeros: about 1 MB
    tifffile.imwrite(path, tiles, shape=(30000, 30000), dtype=np.uint8, compression="zlib", tile=(1024, 1024))
    expect(path.stat().st_size < 2_000_000, "the staged file is too big")
    code = f"""
import tracemalloc
from nanoshape.io import read_micrograph, MicrographError
tracemalloc.start()
try:
    read_micrograph({str(path)!r})
    print("read")
except MicrographError as error:
    print("refused:", error.reason)
print("peak_mb", tracemalloc.get_traced_memory()[1] / 2**20)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    if "Traceback" in done.stderr:
        raise Crash(done.stderr[-500:])
    peak = float(done.stdout.split("peak_mb")[-1])
    expect("refused" in done.stdout and "pixels" in done.stdout, f"not refused: {done.stdout[-200:]}")
    expect(peak < 500, f"{peak:.0f} MB in memory before refusing")


@case("added", "hydra.run.dir= is refused", issue="added")
def hydra_key(w):
    _refused(w, f"hydra.run.dir={w.path / 'elsewhere'}", words=("hydra.run.dir",))


@case("added", "+unknown_key=1 is refused", issue="added")
def plus_key(w):
    _refused(w, "+unknown_key=1", words=("unknown_key",))


@case("added", "scheduler= is documented with its trust requirement", issue="added")
def scheduler_doc(w):
    run = cli("analyze", "--help")
    text = run.out.lower()
    expect("scheduler" in text and "pickle" in text and "trust" in text, "--help does not say scheduler= exchanges pickles")


@case("added", "some files skipped: a distinct, documented exit status", issue="added")
def some_skipped_status(w):
    folder = w.with_good()
    (folder / "empty.tif").write_bytes(b"")
    run, _ = w.analyze(folder)
    expect(run.code == SOME_SKIPPED, f"exit status {run.code}")
    readme = (HERE.parent / "README.md").read_text()
    expect(f"| {SOME_SKIPPED} |" in readme, "the README does not document the exit statuses")


@case("added", "progress inside a micrograph and at the end of the run", issue="added")
def progress_events(w):
    from nanoshape.pipeline import AnalyzeOptions, DistributeOptions, ShapeOptions, run_analysis

    events = []
    options = AnalyzeOptions(shape=ShapeOptions(cnn=False), report=True, group=False)
    run_analysis(good_scene(), w.path / "run", options, distribute=DistributeOptions(workers=0), progress=events.append)
    stages = {getattr(e, "stage", None) for e in events}
    expect({"segment", "features", "micrographs", "report"} <= stages, f"progress stages seen: {stages}")


@case("added", "a failed classifier save keeps the previous classifier whole", issue="added")
def atomic_classifier(w):
    import skops.io as sio

    from nanoshape.groups import load_classifier, save_classifier

    model = _copied_model(w)
    path = model / "groups" / "classifier.skops"
    classifier = load_classifier(path)
    before = path.read_bytes(), path.with_suffix(".json").read_bytes()
    real_dump = sio.dump

    def failing_dump(obj, file, **kwargs):
        Path(file).write_bytes(b"PK\x03\x04 half")
        raise OSError(errno.ENOSPC, "No space left on device")

    sio.dump = failing_dump
    try:
        save_classifier(classifier, path)
    except OSError:
        pass
    finally:
        sio.dump = real_dump
    expect((path.read_bytes(), path.with_suffix(".json").read_bytes()) == before, "the classifier was damaged")


@case("added", "a run directory is marked complete only when everything is written", issue="added")
def complete_marker(w):
    folder = w.with_good()
    run, output = w.analyze(folder)
    expect(run.code == 0 and (output / "complete.json").exists(), "no completion marker after a finished run")
    marker = json.loads((output / "complete.json").read_text())
    expect(marker.get("micrographs_analysed") == 1, f"the marker says {marker}")


# ----------------------------------------------------------------------------- running the catalogue


def run_case(case: Case, path: Path) -> tuple[str, str]:
    """(verdict, detail) of one case staged under ``path``."""
    try:
        case.run(Workspace(path))
    except NotHere as reason:
        return "not run", str(reason)
    except Crash as error:
        return "traceback", str(error).strip().splitlines()[0][:200]
    except Wrong as error:
        return "silently wrong", str(error)[:200]
    except AssertionError as error:
        return "silently wrong", str(error)[:200]
    except Exception as error:  # the case's own check hit an exception: the outputs are not what they must be
        return "silently wrong", f"{type(error).__name__}: {error}"[:200]
    return "handled", ""


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", action="store_true", help="print a markdown table of the verdicts")
    parser.add_argument("--json", help="also write the verdicts to this JSON file")
    parser.add_argument("--only", help="run only cases whose id contains this text")
    parser.add_argument("--fast", action="store_true", help="leave out the slow cases")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"),
                        help="print the before/after table of two --json files and stop")
    args = parser.parse_args(argv)
    if args.compare:
        before, after = (json.loads(Path(name).read_text()) for name in args.compare)
        print("| case | the issue | before | after |\n|---|---|---|---|")
        for key, r in after.items():
            print(f"| {key}: {r['title']} | {r['issue']} | {before.get(key, {}).get('verdict', '-')} | {r['verdict']} |")
        for name, results in (("before", before), ("after", after)):
            print(f"\n{name}: " + ", ".join(f"{v} {sum(r['verdict'] == v for r in results.values())}" for v in VERDICTS))
        return 0
    import warnings

    warnings.filterwarnings("ignore")
    import nanoshape

    print(f"nanoshape from {Path(nanoshape.__file__).parent}", file=sys.stderr)
    results = {}
    for case in CASES:
        if (args.only and args.only not in case.id) or (args.fast and case.slow):
            continue
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"case-{case.id}-") as tmp:
            verdict, detail = run_case(case, Path(tmp))
        results[case.id] = {"group": case.group, "title": case.title, "issue": case.issue, "verdict": verdict,
                            "detail": detail, "seconds": round(time.perf_counter() - start, 1)}
        print(f"{case.id:<34} {verdict:<15} {time.perf_counter() - start:6.1f} s  {detail[:90]}", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, ensure_ascii=False))
    if args.table:
        print("| case | issue | verdict | detail |\n|---|---|---|---|")
        for key, r in results.items():
            print(f"| {key} {r['title']} | {r['issue']} | {r['verdict']} | {r['detail'][:80]} |")
    counts = {v: sum(r["verdict"] == v for r in results.values()) for v in VERDICTS}
    print(counts, file=sys.stderr)
    shutil.rmtree(_root(), ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
