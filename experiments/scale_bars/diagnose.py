"""Bucket every scale bar the reader does not get right by its cause, and save crops to look at.

    python experiments/scale_bars/diagnose.py                 # both sets, about 3 min on 2 CPU cores
    python experiments/scale_bars/diagnose.py --set rendered  # or --set hand (--half dev|check|all)
    python experiments/scale_bars/diagnose.py --set rendered --seed 1   # the cases developed on
                                                    # (results/diagnosis_*.csv: hand all, seed 1)

For each micrograph of the hand table (hand_measured.csv, pixels from ../shared/data) and
each rendered case (rendered.py, same seed), the true bar (hand-measured ends, or the box
draw_scale_bar drew) and label are known. A case the reader gets wrong or abstains on is
put in the first bucket that explains it:

- ``bar not found``: no bar of find_bars within 2 % (hand) / 1 % (rendered) of the true length
  overlapping the true bar's columns;
- ``bar at the image edge``: found, but it runs into the left or right edge (not used);
- ``no text line beside the bar``: no line of glyphs where the label is looked for;
- ``read right, unsure``: a line's most probable reading is the label, under the confidence floor;
- ``another reading more probable``: a line can be read as the label, but another reading
  of it is more probable;
- ``label not among the readings``: lines read as labels, none as this one (glyphs cut or
  classified wrong);
- ``no line reads as a label``: lines, but none spells a label of the grammar;
- ``another bar or disagreement``: the label is read on the true bar, yet the answer is not it;
- ``wrong: misread`` / ``wrong: another bar``: an answer off by more than the tolerance.

Writes results/diagnosis_<set>.csv (one row per non-success, with the bucket and what the
nearest line read) and crops/<set>/<bucket>/<case>.png (the label region, not committed),
and prints the table of buckets.
"""

import argparse
import re
from pathlib import Path

import numpy as np
import pandas as pd

from evaluate_hand import hand_half
from nanoshape.scalebar import explain_label, find_bars, parse_label, read_scale_bar

HERE = Path(__file__).parent
DATA = HERE.parents[1] / ".." / "shared" / "data"


def _norm(text: str) -> str:
    return re.sub(r"\s+", "", text).replace("μ", "u").replace("µ", "u").replace(",", ".").lower()


def bucket(image: np.ndarray, x0: int, x1: int, label: str, tolerance: float) -> dict:
    """The cause a reading of ``image`` is not the true ``label`` over the bar ``x0..x1``."""
    truth = parse_label(label)
    length = x1 - x0 + 1
    reading = read_scale_bar(image)
    row = {"read_label": reading.label, "reason": reading.reason[:200]}
    if reading.pixel_size_nm is not None:
        error = reading.pixel_size_nm / (truth[0] / length) - 1
        row["relative_error"] = error
        if abs(error) <= tolerance:
            return {**row, "bucket": "right"}
        read_right = _norm(reading.label) == _norm(label)
        return {**row, "bucket": "wrong: another bar" if read_right else "wrong: misread"}
    bars = [b for b in find_bars(image, max_bars=50)
            if abs(b.exact_length_px / length - 1) <= tolerance and b.x0_px <= x1 and x0 <= b.x1_px]
    if not bars:
        near = [round(b.exact_length_px, 1) for b in find_bars(image, max_bars=50) if b.x0_px <= x1 and x0 <= b.x1_px]
        return {**row, "bucket": "bar not found", "detail": f"bars over it: {near}"}
    bar = bars[0]
    row["bar"] = (bar.x0_px, bar.y0_px, bar.x1_px, bar.y1_px)
    if bar.x0_px <= 0 or bar.x1_px >= image.shape[1] - 1:
        return {**row, "bucket": "bar at the image edge"}
    lines = explain_label(image, bar)
    if not lines:
        return {**row, "bucket": "no text line beside the bar"}
    target = _norm(label)
    row["lines"] = " | ".join(f"{line['text']} ({line['confidence']:.2f}; {line['second']})" for line in lines[:4])
    for line in lines:
        if line["text"] != "?" and _norm(line["text"]) == target:
            return {**row, "bucket": "read right, unsure" if line["accepted"] is None else "another bar or disagreement"}
    if any(_norm(reading[1]) == target for line in lines for reading in line["readings"]):
        return {**row, "bucket": "another reading more probable"}
    if any(line["text"] != "?" for line in lines):
        return {**row, "bucket": "label not among the readings"}
    return {**row, "bucket": "no line reads as a label"}


def hand_rows(half: str):
    table = pd.read_csv(HERE / "hand_measured.csv", keep_default_na=False, na_values={"bar_length_px": [""]})
    from nanoshape.io import read_micrograph

    for record in table.to_dict("records"):
        if record["label_readable"] != "yes" or record["bar_length_px"] != record["bar_length_px"]:
            continue
        if half != "all" and hand_half(record["file"]) != half:
            continue
        image = np.asarray(read_micrograph(DATA / record["file"]).pixels, np.float32)
        yield Path(record["file"]).stem, image, int(record["bar_x0_px"]), int(record["bar_x1_px"]), record["label"], \
            {"half": hand_half(record["file"])}


def rendered_rows(seed: int, n_cases: int, cache: str):
    import pickle
    import sys

    sys.path.insert(0, str(HERE))
    from rendered import cases

    if cache and Path(cache).is_file():
        made = pickle.loads(Path(cache).read_bytes())
    else:
        made = list(cases(seed, 40, 5))
        if cache:
            Path(cache).write_bytes(pickle.dumps(made))
    for i, (image, case) in enumerate(made[:n_cases]):
        yield f"{i:03d}", image, case["bar_x0_px"], case["bar_x1_px"], case["label"], \
            {k: case[k] for k in ("font", "cap_height_px", "colour", "box", "ticks", "label_above", "blur_px", "jpeg_quality")}


def _save_crop(path: Path, image: np.ndarray, x0: int, x1: int, y: int, title: str) -> None:
    from PIL import Image

    h, w = image.shape
    reach = max(60, int(0.7 * (x1 - x0)))
    crop = image[max(0, y - reach) : min(h, y + reach), max(0, x0 - reach) : min(w, x1 + reach)]
    crop = 255 * (crop - crop.min()) / max(float(np.ptp(crop)), 1e-6)
    scale = max(1, int(300 / max(crop.shape)))
    picture = Image.fromarray(crop.astype(np.uint8)).resize((crop.shape[1] * scale, crop.shape[0] * scale), Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=("hand", "rendered", "both"), default="both")
    parser.add_argument("--half", choices=("dev", "check", "all"), default="all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cases", type=int, default=200, help="the first this many rendered cases")
    parser.add_argument("--cache", default="", help="keep the rendered cases in this pickle between runs")
    parser.add_argument("--crops", action="store_true", help="save the label region of every failure")
    args = parser.parse_args()
    sets = ("hand", "rendered") if args.set == "both" else (args.set,)
    for name in sets:
        rows = hand_rows(args.half) if name == "hand" else rendered_rows(args.seed, args.cases, args.cache)
        tolerance = 0.02 if name == "hand" else 0.01
        out = []
        for case, image, x0, x1, label, extra in rows:
            row = {"case": case, "label": label, "length_px": x1 - x0 + 1, **extra, **bucket(image, x0, x1, label, tolerance)}
            out.append(row)
            if args.crops and row["bucket"] != "right":
                y = row["bar"][1] if "bar" in row else image.shape[0] - 20
                _save_crop(HERE / "crops" / name / row["bucket"].replace(" ", "_").replace(":", "") / f"{case}.png",
                           image, x0, x1, y, label)
        table = pd.DataFrame(out)
        (HERE / "results").mkdir(exist_ok=True)
        table[table.bucket != "right"].to_csv(HERE / "results" / f"diagnosis_{name}.csv", index=False)
        print(f"\n{name}: {len(table)} cases")
        if name == "hand":
            print(pd.crosstab(table.bucket, table.half, margins=True).to_string())
        else:
            print(table.bucket.value_counts().to_string())


if __name__ == "__main__":
    main()
