"""Where the line boxes stand against the true label on rendered micrographs the reader does not read right.

    python experiments/scale_bars/label_boxes.py --seed 1     # about 2 min on 2 CPU cores

For each rendered case (rendered.py, same seed) that is not read within 1 %, the true
label's box is drawn again (draw_scale_bar's geometry), the bar is found as diagnose.py
finds it, and every line of glyphs in the bar's colour (both inks, nanoshape.scalebar._label_lines)
that overlaps that box is scored by its overlap (IoU) and read by the line reader. A case is
put in one bucket: ``bar not found``; ``no line on the text``; ``box good`` (IoU >= 0.7) or
``box bad``, each with ``LR right`` / ``LR wrong`` (the line reader's text on the best
line, whatever its confidence). Writes results/label_boxes_seed<k>.csv and prints the counts.
"""

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from rendered import cases  # noqa: E402

from nanoshape.glyphs import render_label  # noqa: E402
from nanoshape.linereader import line_strip, read_strips  # noqa: E402
from nanoshape.scalebar import _HIDING_INK, _label_lines, _stroke_left_of, find_bars, read_scale_bar  # noqa: E402

HERE = Path(__file__).parent


def _norm(text: str) -> str:
    return re.sub(r"\s+", "", text).replace("μ", "u").replace("µ", "u").lower()


def text_box(case: dict) -> tuple[int, int, int, int]:
    """The label's box (top, bottom, left, right; ends excluded) as draw_scale_bar placed it."""
    text, _ = render_label(case["label"], case["font"], case["cap_height_px"], margin_px=0)
    height, width = text.shape
    length = case["length_px"]
    group = max(length, width)
    left = case["bar_x0_px"] - (group - length) // 2 + (group - width) // 2
    gap = max(2, int(0.3 * case["cap_height_px"]))
    tick = 2 * case["thickness_px"] if case["ticks"] else 0
    top = case["bar_y0_px"] - height - gap - tick if case["label_above"] else case["bar_y0_px"] + case["thickness_px"] + gap
    return top, top + height, left, left + width


def examine(image: np.ndarray, case: dict) -> dict | None:
    reading = read_scale_bar(image)
    if reading.pixel_size_nm is not None and abs(reading.pixel_size_nm / case["pixel_size_nm"] - 1) <= 0.01:
        return None
    row = {k: case[k] for k in ("label", "font", "cap_height_px", "colour", "box")}
    row["outcome"] = "abstained" if reading.pixel_size_nm is None else "wrong"
    length = case["length_px"]
    bars = [b for b in find_bars(image, max_bars=50) if abs(b.exact_length_px / length - 1) <= 0.01
            and b.x0_px <= case["bar_x1_px"] and case["bar_x0_px"] <= b.x1_px]
    if not bars:
        return {**row, "bucket": "bar not found"}
    bar = bars[0]
    top_t, bottom_t, left_t, right_t = text_box(case)
    best = None
    inks = _label_lines(image, bar)
    for k, (text, candidates) in enumerate(inks):
        if k // 2 != (0 if bar.polarity == "dark" else 1):
            continue
        plain = inks[k - k % 2][0]
        for _, line, (top, bottom, left, right, _) in candidates:
            inter = max(0, min(bottom, bottom_t) - max(top, top_t)) * max(0, min(right, right_t) - max(left, left_t))
            if inter == 0:
                continue
            iou = inter / ((bottom - top) * (right - left) + (bottom_t - top_t) * (right_t - left_t) - inter)
            strip, columns = line_strip(text, line)
            spelled, confidence = read_strips(strip[None], columns)[0]
            found = {"ink": "strokes only" if k % 2 else "as is", "iou": round(iou, 2), "glyphs": len(line),
                     "line_reader": spelled, "line_reader_confidence": round(confidence, 3),
                     "passed_over": _stroke_left_of(plain, line, level=_HIDING_INK)}
            if best is None or iou > best["iou"]:
                best = found
    if best is None:
        return {**row, "bucket": "no line on the text"}
    right = _norm(best["line_reader"]) == _norm(case["label"])
    return {**row, **best, "bucket": ("box good" if best["iou"] >= 0.7 else "box bad") + (", LR right" if right else ", LR wrong")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rows = []
    for i, (image, case) in enumerate(cases(args.seed, 40, 5)):
        row = examine(image, case)
        if row is not None:
            rows.append({"case": i, **row})
    table = pd.DataFrame(rows)
    (HERE / "results").mkdir(exist_ok=True)
    table.to_csv(HERE / "results" / f"label_boxes_seed{args.seed}.csv", index=False)
    print(table.bucket.value_counts().to_string())


if __name__ == "__main__":
    main()
