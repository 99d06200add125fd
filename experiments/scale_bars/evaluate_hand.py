"""Score nanoshape's scale-bar reader against the hand-measured table.

    python experiments/scale_bars/evaluate_hand.py     # about 30 s on 2 CPU cores

Reads every micrograph of hand_measured.csv from ../shared/data (beside the checkout),
reads its bar with nanoshape.scalebar.read_scale_bar and writes
results/hand_readings.csv (one row per micrograph) and results/hand_summary.json:
of the micrographs whose label a person can read and whose bar a person can measure,
how many the reader gets within 2 % of the hand pixel size, how many it abstains on, and
how many it gets wrong, overall and for each half of the table: ``dev`` (the micrographs
looked at while developing the reader) and ``check`` (never looked at, nor tuned on), split
by the parity of the SHA-1 of the file name (hand_half).
"""

import hashlib
import json
import time
from pathlib import Path

import pandas as pd

from nanoshape.scalebar import evaluate_readings

HERE = Path(__file__).parent
DATA = HERE.parents[1] / ".." / "shared" / "data"


def hand_half(file: str) -> str:
    """The half of the hand table a file is in: ``dev`` (looked at while developing) or
    ``check`` (never looked at; reported beside dev), by the parity of its name's SHA-1."""
    return "check" if int(hashlib.sha1(file.encode()).hexdigest(), 16) % 2 else "dev"


def _counts(judged: pd.DataFrame) -> dict:
    counts = judged.outcome.value_counts().to_dict()
    return {"readable_and_measurable": int(len(judged)), "within_2_percent": int(counts.get("within 2 %", 0)),
            "abstained": int(counts.get("abstained", 0)), "wrong": int(counts.get("wrong", 0)),
            "within_2_percent_fraction": float(counts.get("within 2 %", 0) / max(len(judged), 1))}


def main() -> None:
    table = pd.read_csv(HERE / "hand_measured.csv", keep_default_na=False, na_values={"bar_length_px": [""]})
    start = time.perf_counter()
    scored = evaluate_readings(table, DATA)
    seconds = time.perf_counter() - start
    (HERE / "results").mkdir(exist_ok=True)
    scored["half"] = [hand_half(f) for f in scored.file]
    scored.to_csv(HERE / "results" / "hand_readings.csv", index=False)
    judged = scored[(scored.label_readable == "yes") & scored.bar_length_px.notna()]
    summary = {
        "micrographs": int(len(scored)),
        **_counts(judged),
        "halves": {half: _counts(judged[judged.half == half]) for half in ("dev", "check")},
        "others": scored[~scored.index.isin(judged.index)][["file", "outcome", "read_label", "reason"]].to_dict("records"),
        "seconds": round(seconds, 1),
    }
    (HERE / "results" / "hand_summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False))
    with pd.option_context("display.width", 200, "display.max_colwidth", 60, "display.max_rows", 100):
        print(scored[["file", "label", "bar_length_px", "read_label", "read_bar_length_px", "relative_error", "outcome",
                      "reason"]].to_string(index=False))
    print(json.dumps({k: v for k, v in summary.items() if k != "others"}, indent=1))


if __name__ == "__main__":
    main()
