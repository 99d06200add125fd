"""Train the scale-bar glyph classifier shipped in nanoshape/data/glyphs.npz.

    apt-get install fonts-liberation                         # Arial- and Times-shaped fonts (optional)
    python experiments/scale_bars/train_glyphs.py            # about 5 min on 2 CPU cores
    python experiments/scale_bars/train_glyphs.py --quick    # a 1-minute smoke run, not saved

Renders labels from matplotlib's fonts (nanoshape.glyphs.FONTS), degrades them, cuts
glyphs exactly as the reader does, trains GlyphNet with Adam and writes the weights
(float16) and experiments/scale_bars/results/glyphs_train.json with the held-out figures.
"""

import argparse
import json
import time
from pathlib import Path

from nanoshape.glyphs import save_glyph_model, train_glyph_model

HERE = Path(__file__).parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--labels", type=int, default=12_000)
    parser.add_argument("--steps", type=int, default=4_000)
    parser.add_argument("--output", default=str(Path(__file__).parents[2] / "nanoshape" / "data" / "glyphs.npz"))
    parser.add_argument("--quick", action="store_true", help="1,500 labels, 500 steps, nothing saved")
    args = parser.parse_args()
    labels, steps = (1_500, 500) if args.quick else (args.labels, args.steps)
    start = time.perf_counter()
    model, metrics = train_glyph_model(args.seed, n_labels=labels, steps=steps,
                                       progress=lambda step, loss: print(f"step {step}: loss {loss:.4f}", flush=True))
    metrics.update(seconds=round(time.perf_counter() - start, 1), seed=args.seed, labels=labels, steps=steps)
    print(json.dumps(metrics, indent=1))
    if not args.quick:
        path = save_glyph_model(model, args.output)
        print(f"weights: {path} ({path.stat().st_size / 1024:.0f} KiB)")
        (HERE / "results").mkdir(exist_ok=True)
        (HERE / "results" / "glyphs_train.json").write_text(json.dumps(metrics, indent=1))


if __name__ == "__main__":
    main()
