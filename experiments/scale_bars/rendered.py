"""Read scale bars drawn onto rendered micrographs: fonts, sizes, corners, colours, boxes, ticks.

    python experiments/scale_bars/rendered.py            # 200 cases, about 2 min on 2 CPU cores
    python experiments/scale_bars/rendered.py --quick    # 24 cases, under a minute

Micrographs come from nanoshape's own scene renderer (nanoshape.scene.render_scene); a bar
of a random length (40-260 px) and a label of a random value and unit are burned into each
with nanoshape.glyphs.draw_scale_bar in one of the training fonts or in cmss10 (a font
the classifier never saw), at a random digit height (7-30 px), in a random corner, white or
black, with or without a box, end ticks, the label above or below, and then blurred,
noised and JPEG-compressed at random. The true pixel size is value / length. Writes
results/rendered.csv (one row per case), results/rendered_summary.json (the share read
within 1 %, abstained and wrong, overall, per font, and for legible and illegible bars:
text drawn in its own colour over particles or background is unreadable to a person too,
and so is a bar's end on a particle of its colour; see LEGIBLE_HIDDEN_SHARE and
LEGIBLE_END_CONTRAST) and results/rendered_examples.png.
"""

import argparse
import io
import json
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd
from PIL import Image

from nanoshape.glyphs import FONTS, draw_scale_bar
from nanoshape.scalebar import parse_label, read_scale_bar
from nanoshape.scene import SceneOptions, render_scene

HERE = Path(__file__).parent
HELD_OUT_FONTS = ("cmss10.ttf",)
VALUES = ("5", "10", "20", "50", "100", "200", "250", "500", "0.5", "1", "2", "2.5", "1.0", "0.2")
#: A label is legible where at most this share of its ink pixels stands under 60 grey levels
#: from the micrograph beneath it (before blur, noise and JPEG).
LEGIBLE_HIDDEN_SHARE = 0.05
#: ... and both of its bar's ends stand at least this many grey levels from what is beneath.
LEGIBLE_END_CONTRAST = 60.0
UNITS = ("nm", "nm", "µm", "um", "μm", "Å")


def make_case(rng: np.random.Generator, scene_image: np.ndarray) -> tuple[np.ndarray, dict]:
    """One micrograph with a drawn bar, and what was drawn."""
    font = str(rng.choice(FONTS + HELD_OUT_FONTS * 2))
    unit = str(rng.choice(UNITS))
    if font.startswith("cm") and unit in ("µm", "μm", "Å"):
        unit = "um"  # Computer Modern has neither µ nor Å
    label = str(rng.choice(VALUES)) + (" " if rng.random() < 0.6 else "") + unit
    length = int(rng.integers(40, 261))
    cap = float(rng.uniform(7, 30))
    grey = scene_image
    grey = 255 * (grey - grey.min()) / max(float(np.ptp(grey)), 1e-6)
    case = dict(font=font, label=label, length_px=length, cap_height_px=round(cap, 1),
                corner=str(rng.choice(["bottom-right", "bottom-left", "top-right", "top-left"])),
                colour=str(rng.choice(["white", "black"])), thickness_px=int(rng.integers(3, 12)),
                label_above=bool(rng.random() < 0.6), box=bool(rng.random() < 0.3), ticks=bool(rng.random() < 0.2))
    image, box = draw_scale_bar(grey, length_px=length, label=label, font=font, cap_height_px=cap,
                              corner=case["corner"], colour=case["colour"], thickness_px=case["thickness_px"],
                              label_above=case["label_above"], box=case["box"], ticks=case["ticks"])
    case.update(_legibility(grey, box, font=font, label=label, length=length, cap=cap, case=case))
    blur = float(rng.choice([0.0, 0.0, 0.5, 0.8]))
    if blur:
        from scipy.ndimage import gaussian_filter

        image = gaussian_filter(image, blur)
    image = np.clip(image + rng.normal(0, rng.uniform(0, 8), image.shape), 0, 255)
    jpeg = int(rng.choice([0, 0, 90, 60, 40]))
    if jpeg:
        buffer = io.BytesIO()
        Image.fromarray(image.astype(np.uint8)).save(buffer, format="JPEG", quality=jpeg)
        image = np.asarray(Image.open(buffer), np.float32)
    case.update(blur_px=blur, jpeg_quality=jpeg, pixel_size_nm=parse_label(label)[0] / length,
                bar_x0_px=box[0], bar_y0_px=box[1], bar_x1_px=box[2], bar_y1_px=box[3])
    return image.astype(np.float32), case


def _legibility(grey: np.ndarray, bar_box, *, font, label, length, cap, case) -> dict:
    """How well the drawn label and bar stand out from the micrograph under them (before
    blur, noise and JPEG): the median contrast of the label's ink (grey levels, 255 in a
    box), the share of its ink pixels under 60 levels of contrast (text drawn over particles
    or a background of its own colour, which a person cannot read either), and the smaller
    median contrast of the bar's two ends (an end on a particle of the bar's colour cannot
    be seen: where the bar stops is unknown)."""
    flat, _ = draw_scale_bar(np.full_like(grey, 128.0), length_px=length, label=label, font=font, cap_height_px=cap,
                             corner=case["corner"], colour=case["colour"], thickness_px=case["thickness_px"],
                             label_above=case["label_above"], box=False, ticks=case["ticks"])
    text = np.abs(flat - 128.0) > 64
    ticks = 2 * case["thickness_px"] if case["ticks"] else 0
    text[max(0, bar_box[1] - ticks - 1) : bar_box[3] + 2] = False  # the bar's rows, with its ticks
    contrast = np.full(int(text.sum()), 255.0) if case["box"] else \
        np.abs((255.0 if case["colour"] == "white" else 0.0) - grey[text])
    ink = 255.0 if case["colour"] == "white" else 0.0
    x0, y0, x1, y1 = bar_box
    ends = [grey[max(0, y0 - ticks) : y1 + 1, x : x + 2] for x in (x0, x1 - 1)]  # each end's last 2 columns
    end_contrast = 255.0 if case["box"] else min(float(np.median(np.abs(ink - end))) for end in ends)
    return {"label_contrast": float(np.median(contrast)) if contrast.size else float("nan"),
            "label_hidden_share": float((contrast < 60).mean()) if contrast.size else float("nan"),
            "bar_end_contrast": end_contrast}


def cases(seed: int, scenes: int, per_scene: int):
    """(image, case) for ``per_scene`` bars drawn on each of ``scenes`` rendered scenes."""
    rng = np.random.default_rng(seed)
    key = jax.random.key(seed)
    for s in range(scenes):
        scene = render_scene(jax.random.fold_in(key, s), SceneOptions(n_particles=int(rng.integers(20, 80))))
        for _ in range(per_scene):
            image, case = make_case(rng, np.asarray(scene.image))
            yield image, {**case, "scene": s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenes", type=int, default=40)
    parser.add_argument("--bars-per-scene", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    scenes, per_scene = (8, 3) if args.quick else (args.scenes, args.bars_per_scene)
    rows, examples = [], []
    start = time.perf_counter()
    for image, case in cases(args.seed, scenes, per_scene):
        t0 = time.perf_counter()
        reading = read_scale_bar(image)
        seconds = time.perf_counter() - t0
        error = reading.pixel_size_nm / case["pixel_size_nm"] - 1 if reading.pixel_size_nm else None
        outcome = "abstained" if error is None else ("within 1 %" if abs(error) <= 0.01 else "wrong")
        rows.append({**case, "read_label": reading.label, "read_pixel_size_nm": reading.pixel_size_nm,
                     "read_bar_length_px": reading.bar.length_px if reading.bar else None,
                     "relative_error": error, "outcome": outcome, "reason": reading.reason, "seconds": seconds})
        if len(examples) < 8:
            examples.append((image, f"{case['font']} '{case['label']}' {case['length_px']} px -> "
                                    f"{reading.label or 'abstain'} {reading.bar.length_px if reading.bar else ''}"))
    table = pd.DataFrame(rows)
    (HERE / "results").mkdir(exist_ok=True)
    suffix = ("_quick" if args.quick else "") + (f"_seed{args.seed}" if args.seed else "")  # seed 0: the held-out table
    table.to_csv(HERE / "results" / f"rendered{suffix}.csv", index=False)
    counts = table.outcome.value_counts().to_dict()
    legible = (table.label_hidden_share <= LEGIBLE_HIDDEN_SHARE) & (table.bar_end_contrast >= LEGIBLE_END_CONTRAST)
    per_font = {font: {"n": int(len(t)), "within_1_percent": int((t.outcome == "within 1 %").sum()),
                       "abstained": int((t.outcome == "abstained").sum()), "wrong": int((t.outcome == "wrong").sum())}
                for font, t in table.groupby("font")}
    summary = {"cases": int(len(table)), "within_1_percent": int(counts.get("within 1 %", 0)),
               "abstained": int(counts.get("abstained", 0)), "wrong": int(counts.get("wrong", 0)),
               "within_1_percent_fraction": float(counts.get("within 1 %", 0) / len(table)),
               "held_out_fonts": list(HELD_OUT_FONTS), "per_font": per_font,
               "legible": _outcomes(table[legible]), "illegible": _outcomes(table[~legible]),
               "median_read_seconds": float(table.seconds.median()), "seconds": round(time.perf_counter() - start, 1)}
    (HERE / "results" / f"rendered_summary{suffix}.json").write_text(json.dumps(summary, indent=1))
    _figure(examples, HERE / "results" / f"rendered_examples{suffix}.png")
    bad = table[table.outcome != "within 1 %"]
    with pd.option_context("display.width", 220, "display.max_colwidth", 70):
        print(bad[["font", "label", "length_px", "cap_height_px", "colour", "box", "ticks", "read_label",
                   "read_bar_length_px", "outcome", "reason"]].to_string(index=False))
    print(json.dumps({k: v for k, v in summary.items() if k != "per_font"}, indent=1))


def _outcomes(table: pd.DataFrame) -> dict:
    """Cases, read within 1 %, abstained and wrong in a part of the table."""
    counts = table.outcome.value_counts().to_dict()
    return {"cases": int(len(table)), "within_1_percent": int(counts.get("within 1 %", 0)),
            "abstained": int(counts.get("abstained", 0)), "wrong": int(counts.get("wrong", 0))}


def _figure(examples, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(16, 8.4))
    for ax, (image, title) in zip(axes.ravel(), examples):
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


if __name__ == "__main__":
    main()
