"""Measure analysis by synthesis on the lines beside each true bar: how its score and margin part right from wrong.

    python experiments/scale_bars/synthesis_lines.py --seed 1 --cache /tmp/seed1.pkl   # about 1 min on 2 CPU cores

For each rendered case of ``rendered.py``'s seed (and each micrograph of the hand table's
``dev`` half), the bar of find_bars matching the true one is taken and every line of text
of the bar's colour beside it (nearest first, as the reader reads them) is read twice: by
the glyph classifier's label grammar (its most probable reading and confidence) and by
nanoshape.labelsynth.match_line (its best label, score and margin). Writes
results/synthesis_lines_<set>.csv, one row per line, with whether each reading names the
true length; the thresholds of the reader are chosen from it.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from diagnose import hand_rows, rendered_rows  # noqa: E402
from nanoshape.labelsynth import match_line  # noqa: E402
from nanoshape.scalebar import _accept, _label_lines, _line_readings, _stroke_left_of, find_bars, parse_label  # noqa: E402


def lines_of(case: str, image: np.ndarray, x0: int, x1: int, label: str, tolerance: float) -> list[dict]:
    truth = parse_label(label)[0]
    length = x1 - x0 + 1
    bars = [b for b in find_bars(image, max_bars=50)
            if abs(b.exact_length_px / length - 1) <= tolerance and b.x0_px <= x1 and x0 <= b.x1_px]
    if not bars:
        return []
    bar = bars[0]
    out = []
    for ink_index, (text, candidates) in enumerate(_label_lines(image, bar)):
        for order, (distance, line, box) in enumerate(candidates):
            if box[4] != bar.polarity:
                break
            readings = _line_readings(text, line, None)
            accepted = _accept(readings, 0.9)
            guarded = _stroke_left_of(text, line)
            synth = None if guarded else match_line(text, line, extra_numbers=tuple(
                _number(r[1]) for r in readings[:3] if _number(r[1])))
            row = {"case": case, "label": label, "ink": ink_index, "order": order, "distance": distance,
                   "pieces": len(line), "height": box[1] - box[0], "guarded": guarded,
                   "classifier": readings[0][1] if readings else "", "classifier_conf": readings[0][2] if readings else 0.0,
                   "classifier_share": readings[0][0] / sum(r[0] for r in readings) if readings else 0.0,
                   "classifier_right": bool(readings) and _same(readings[0][1], truth),
                   "accepted": accepted[0] if accepted else "",
                   "classifier_values": " ".join(r[1] for r in readings[:3])}
            if synth is not None:
                row.update(synth=synth.label, score=synth.score, margin=synth.margin, runner_up=synth.runner_up,
                           font=synth.font, synth_right=abs(synth.value_nm / truth - 1) < 1e-6,
                           synth_in_classifier=any(_same(r[1], synth.value_nm) for r in readings[:3]))
            out.append(row)
    return out


def _number(text: str) -> str:
    import re

    match = re.match(r"[0-9.]+", text)
    return match.group(0) if match else ""


def _same(spelled: str, value_nm: float) -> bool:
    parsed = parse_label(spelled)
    return parsed is not None and abs(parsed[0] / value_nm - 1) < 1e-6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=("hand", "rendered"), default="rendered")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cache", default="")
    args = parser.parse_args()
    if args.set == "hand":
        rows, tolerance = hand_rows("dev"), 0.02
    else:
        rows, tolerance = rendered_rows(args.seed, 200, args.cache), 0.01
    out = []
    for case, image, x0, x1, label, _ in rows:
        out.extend(lines_of(case, image, x0, x1, label, tolerance))
    table = pd.DataFrame(out)
    name = "hand_dev" if args.set == "hand" else f"rendered_seed{args.seed}"
    table.to_csv(HERE / "results" / f"synthesis_lines_{name}.csv", index=False)
    print(table.groupby("synth_right")[["score", "margin"]].describe().T.to_string())


if __name__ == "__main__":
    main()
