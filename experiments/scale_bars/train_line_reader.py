"""Train the scale-bar line reader shipped in nanoshape/data/linereader.npz.

    python experiments/scale_bars/train_line_reader.py            # about 15 min on 2 CPU cores
    python experiments/scale_bars/train_line_reader.py --quick    # a 1-minute smoke run, not saved

Renders labels from matplotlib's fonts (and Debian's Liberation fonts where installed),
degrades them and cuts their lines exactly as the reader does (nanoshape.linereader.line_dataset),
trains LineNet with CTC and Adam, and writes the weights (float16) and
experiments/scale_bars/results/linereader_train.json with the held-out figures.
"""

import argparse
import json
import time
from pathlib import Path

from nanoshape.linereader import save_line_reader, train_line_reader

HERE = Path(__file__).parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--labels", type=int, default=30_000)
    parser.add_argument("--steps", type=int, default=4_000)
    parser.add_argument("--output", default=str(Path(__file__).parents[2] / "nanoshape" / "data" / "linereader.npz"))
    parser.add_argument("--quick", action="store_true", help="1,000 labels, 300 steps, nothing saved")
    args = parser.parse_args()
    labels, steps = (1_000, 300) if args.quick else (args.labels, args.steps)
    start = time.perf_counter()
    model, metrics = train_line_reader(args.seed, n_labels=labels, steps=steps,
                                       progress=lambda step, loss: print(f"step {step}: loss {loss:.4f} "
                                                                         f"({time.perf_counter() - start:.0f} s)", flush=True))
    metrics.update(seconds=round(time.perf_counter() - start, 1), seed=args.seed, labels=labels, steps=steps)
    print(json.dumps(metrics, indent=1))
    if not args.quick:
        path = save_line_reader(model, args.output)
        print(f"weights: {path} ({path.stat().st_size / 1024:.0f} KiB)")
        (HERE / "results").mkdir(exist_ok=True)
        (HERE / "results" / "linereader_train.json").write_text(json.dumps(metrics, indent=1))


if __name__ == "__main__":
    main()
