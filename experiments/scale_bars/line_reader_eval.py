"""What the line reader adds to the scale-bar reader: every case read with and without it.

    python experiments/scale_bars/line_reader_eval.py --set hand            # the hand table, both halves
    python experiments/scale_bars/line_reader_eval.py --set rendered --seed 1

Writes results/line_reader_<set>[_seed<k>].csv (one row per case: outcome with and
without the line reader) and prints the counts. The hand table's ``dev`` half and rendered
seeds 1 and 2 are where the line reader's threshold was chosen; the ``check`` half and a
seed never run before are the figures to report.
"""

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from evaluate_hand import DATA, hand_half  # noqa: E402
from rendered import cases  # noqa: E402

from nanoshape.io import read_micrograph  # noqa: E402
from nanoshape.scalebar import evaluate_readings, read_label, read_scale_bar  # noqa: E402

HERE = Path(__file__).parent


def _reader(line_reader: bool):
    return lambda image, bar, min_confidence: read_label(image, bar, min_confidence=min_confidence,
                                                         line_reader=line_reader)


def _outcome(reading, truth_nm_per_px: float, tolerance: float) -> str:
    if reading.pixel_size_nm is None:
        return "abstained"
    return "right" if abs(reading.pixel_size_nm / truth_nm_per_px - 1) <= tolerance else "wrong"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=("hand", "rendered"), default="hand")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scenes", type=int, default=40)
    args = parser.parse_args()
    results = {}
    if args.set == "hand":
        table = pd.read_csv(HERE / "hand_measured.csv", keep_default_na=False, na_values={"bar_length_px": [""]})
        for on in (False, True):
            scored = evaluate_readings(table, DATA, read=lambda path: read_scale_bar(read_micrograph(path).pixels,
                                                                                     reader=_reader(on)))
            results[on] = scored
        out = results[True][["file", "label", "label_readable", "bar_length_px"]].copy()
        out["half"] = [hand_half(f) for f in out.file]
        for on in (False, True):
            out[f"outcome_{'with' if on else 'without'}"] = results[on].outcome.replace({"within 2 %": "right"})
            out[f"label_{'with' if on else 'without'}"] = results[on].read_label
        judged = out[(out.label_readable == "yes") & out.bar_length_px.notna()]
        groups = {half: judged[judged.half == half] for half in ("dev", "check")} | {"all": judged}
        name = "hand"
    else:
        rows = []
        for image, case in cases(args.seed, args.scenes, 5):
            row = {k: case[k] for k in ("font", "label", "length_px", "cap_height_px", "colour", "box")}
            for on in (False, True):
                reading = read_scale_bar(image, reader=_reader(on))
                row[f"outcome_{'with' if on else 'without'}"] = _outcome(reading, case["pixel_size_nm"], 0.01)
                row[f"label_{'with' if on else 'without'}"] = reading.label
            rows.append(row)
        out = pd.DataFrame(rows)
        groups = {"all": out}
        name = f"rendered_seed{args.seed}"
    (HERE / "results").mkdir(exist_ok=True)
    out.to_csv(HERE / "results" / f"line_reader_{name}.csv", index=False)
    summary = {group: {f"{which}": table[f"outcome_{which}"].value_counts().to_dict() for which in ("without", "with")}
               | {"n": int(len(table))} for group, table in groups.items()}
    print(json.dumps(summary, indent=1))
    changed = out[out.outcome_with != out.outcome_without]
    with pd.option_context("display.width", 200, "display.max_colwidth", 50):
        print(changed.to_string(index=False))


if __name__ == "__main__":
    main()
