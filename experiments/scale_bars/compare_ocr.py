"""nanoshape's glyph classifier against an off-the-shelf offline OCR (RapidOCR) on scale-bar labels.

    pip install rapidocr-onnxruntime    # not a nanoshape dependency: only for this comparison
    python experiments/scale_bars/compare_ocr.py     # about 5 min on 2 CPU cores

Both readers get the same bars (nanoshape.scalebar.find_bars) and the same region around
each (scalebar.label_region); RapidOCR (PP-OCRv4 detection + recognition, ONNX weights
inside its wheel, nothing downloaded) reads the region and a text box counts when it lies
where a label goes (scalebar.is_beside), scores at least 0.8 and parses as a number and a
length unit. Scored on the hand-measured table (within 2 %) and on 100 rendered cases
(rendered.py's generator, within 1 %), with the time per micrograph. Writes
results/compare_ocr.json.
"""

import json
import re
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd

from nanoshape.io import read_micrograph
from nanoshape.scalebar import evaluate_readings, is_beside, label_region, parse_label, read_scale_bar
from nanoshape.scene import SceneOptions, render_scene

HERE = Path(__file__).parent
DATA = HERE.parents[1] / ".." / "shared" / "data"
_NUMBER_UNIT = re.compile(r"(\d+(?:[.,]\d+)?)\s*(nm|µm|μm|um|Å|mm|pm)", re.IGNORECASE)


def ocr_reader():
    """A ``reader(image, bar, min_confidence)`` for read_scale_bar that asks RapidOCR."""
    from rapidocr_onnxruntime import RapidOCR

    engine = RapidOCR()

    def read(image, bar, min_confidence):
        y0, x0, region = label_region(image, bar)
        lo, hi = float(region.min()), float(region.max())
        grey = (255 * (region - lo) / max(hi - lo, 1e-6)).astype(np.uint8)
        result, _ = engine(np.repeat(grey[..., None], 3, axis=2))
        best = None
        for box, text, score in result or []:
            xs, ys = [p[0] + x0 for p in box], [p[1] + y0 for p in box]
            if float(score) < 0.8 or not is_beside(bar, int(min(ys)), int(max(ys)) + 1, int(min(xs)), int(max(xs)) + 1):
                continue
            match = _NUMBER_UNIT.search(text.replace(" ", ""))
            parsed = parse_label(match.group(0)) if match else None
            if parsed and (best is None or float(score) > best[2]):
                best = (f"{match.group(1)} {parsed[1]}", parsed[0], float(score))
        return best

    return read


def main() -> None:
    import argparse

    from rendered import make_case

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 hand-measured micrographs and 8 rendered cases")
    args = parser.parse_args()
    readers = {"nanoshape glyphs": None, "RapidOCR": ocr_reader()}
    table = pd.read_csv(HERE / "hand_measured.csv", keep_default_na=False, na_values={"bar_length_px": [""]})
    if args.quick:
        table = table.head(6)
    images = {row["file"]: read_micrograph(DATA / row["file"]).pixels for row in table.to_dict("records")}
    rng = np.random.default_rng(1)
    key = jax.random.key(1)
    rendered = []
    for s in range(2 if args.quick else 25):
        scene = np.asarray(render_scene(jax.random.fold_in(key, s), SceneOptions(n_particles=40)).image)
        rendered += [make_case(rng, scene) for _ in range(4)]
    out = {}
    for name, reader in readers.items():
        read_scale_bar(images[table.file[0]], reader=reader)  # load and compile outside the clock
        start = time.perf_counter()
        scored = evaluate_readings(table, DATA, read=lambda path: read_scale_bar(
            images[str(Path(path).relative_to(DATA))], reader=reader))
        hand_seconds = (time.perf_counter() - start) / len(table)
        judged = scored[(scored.label_readable == "yes") & scored.bar_length_px.notna()]
        start = time.perf_counter()
        results = []
        for image, case in rendered:
            reading = read_scale_bar(image, reader=reader)
            error = reading.pixel_size_nm / case["pixel_size_nm"] - 1 if reading.pixel_size_nm else None
            results.append("abstained" if error is None else "within 1 %" if abs(error) <= 0.01 else "wrong")
        rendered_seconds = (time.perf_counter() - start) / len(rendered)
        results = pd.Series(results).value_counts().to_dict()
        out[name] = {
            "hand": {"n": int(len(judged)), **{k: int(v) for k, v in judged.outcome.value_counts().items()},
                     "seconds_per_micrograph": round(hand_seconds, 3),
                     "wrong_cases": judged[judged.outcome == "wrong"][["file", "label", "read_label"]].to_dict("records")},
            "rendered": {"n": len(rendered), **{k: int(v) for k, v in results.items()},
                         "seconds_per_micrograph": round(rendered_seconds, 3)},
        }
        print(name, json.dumps(out[name], indent=1, ensure_ascii=False), flush=True)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / ("compare_ocr_quick.json" if args.quick else "compare_ocr.json")).write_text(json.dumps(out, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(HERE))
    main()
