"""Segmentation + features throughput on a 2048 x 2048 micrograph with ~2,000 particles.

    python benchmarks/bench_analyze.py            (about 2 minutes on a 2-core CPU)

nanoshape's ``segment`` + ``measure``, with the learned detector (the default: its network
over the image pyramid timed on its own too; and averaging two views, ``segment.views=2``)
and with the classical segmentation, beside a
plain scikit-image pipeline (Otsu threshold,
hole filling, distance-transform watershed from local maxima, ``regionprops_table`` with
the same features) timed in the same process on the same rendered micrograph. Both do the
same job, one micrograph with the same particles, so the rate is the micrograph's
particles (those not cut by the border, from the truth table) per wall-clock minute,
timed in alternation (each round runs every pipeline once, so the machine's drifting load
enters the ratio of a round equally), medians over the rounds; the particles each pipeline found and its F1 against the truth
are printed beside it (the plain pipeline over-splits, which makes regionprops slower).
"""

from __future__ import annotations

import jax
import numpy as np
from skimage.measure import regionprops_table

import statistics

from _common import command, interleaved_times, machine
from nanoshape.evaluate import match_instances, plain_segmentation
from nanoshape.features import measure
from nanoshape.scene import POPULATIONS, Population, SceneOptions, render_scene
from nanoshape.segment import SegmentOptions, segment

#: regionprops equivalents of nanoshape's features (those regionprops has; the ratios,
#: circularity, roundness, convexity, minimum Feret and neighbour counts derive from these
#: or have no regionprops property, so the baseline is spared them)
REGIONPROPS = (
    "label", "area", "perimeter", "area_convex", "area_filled", "equivalent_diameter_area", "axis_major_length",
    "axis_minor_length", "eccentricity", "orientation", "solidity", "extent", "feret_diameter_max", "euler_number",
    "centroid", "bbox", "intensity_mean", "intensity_min", "intensity_max", "intensity_std",
)


def plain_pipeline(image: np.ndarray) -> tuple[int, np.ndarray]:
    """The plain yardstick (:func:`nanoshape.evaluate.plain_segmentation`) + ``regionprops_table``."""
    labels = plain_segmentation(image)
    table = regionprops_table(labels, intensity_image=image, properties=REGIONPROPS)
    return len(table["label"]), labels


class AnalyzeSuite:
    """Time nanoshape's segmentation + features and the plain pipeline on one scene."""

    def setup(self):
        spheres = Population("spheres", (1.8, 2.2), (2,), (1.0, 1.1), diameter_nm=14.0, diameter_cv=0.1)
        cubes = Population("cubes", (12.0, 30.0), (2,), (1.0, 1.08), diameter_nm=14.0, diameter_cv=0.1)
        rods = Population("rods", (3.0, 8.0), (2,), (2.0, 3.0), diameter_nm=14.0, diameter_cv=0.1)
        options = SceneOptions(height_px=2048, width_px=2048, pixel_size_nm=0.5, n_particles=2600,
                               populations=(spheres, cubes, rods), touching_fraction=0.3, gap_px=2.0)
        self.scene = render_scene(jax.random.key(0), options)
        self.image = self.scene.image.astype(np.float32)

    def time_learned(self):
        seg = segment(self.image)
        self.found_learned = len(measure(seg.labels, self.image, pixel_size_nm=0.5))
        self.labels_learned = seg.labels
        self.network_s = seg.info["timings_s"]["network"]

    def time_learned_two_views(self):
        """The learned detector averaging two views of the micrograph (``segment.views=2``; the default sees one)."""
        seg = segment(self.image, SegmentOptions(views=2))
        self.found_two_views = len(measure(seg.labels, self.image, pixel_size_nm=0.5))
        self.labels_two_views = seg.labels

    def time_nanoshape(self):
        seg = segment(self.image, SegmentOptions(method="classical"))
        self.found = len(measure(seg.labels, self.image, pixel_size_nm=0.5))
        self.labels = seg.labels

    def time_nanoshape_one_thread(self):
        """The same with the whole-image filters in one thread (the plain pipeline's single core)."""
        seg = segment(self.image, SegmentOptions(method="classical", threads=1))
        self.found_one = len(measure(seg.labels, self.image, pixel_size_nm=0.5))

    def time_plain(self):
        self.found_plain, self.labels_plain = plain_pipeline(self.image)


def main() -> None:
    print(f"# bench_analyze\ncommand: {command()}\nmachine: {machine()}\n")
    suite = AnalyzeSuite()
    suite.setup()
    truth = int((~suite.scene.truth.touches_border).sum())
    network = []
    times = interleaved_times({"learned": lambda: (suite.time_learned(), network.append(suite.network_s)),
                               "two_views": suite.time_learned_two_views,
                               "nanoshape": suite.time_nanoshape, "one_thread": suite.time_nanoshape_one_thread,
                               "plain": suite.time_plain}, rounds=7, warmup=1)
    network = network[1:]  # the warm-up call compiled the network
    learned_s = statistics.median(times["learned"])
    network_s = statistics.median(network)
    rest = [t - n for t, n in zip(times["learned"], network)]
    ratios_learned = [p / n for p, n in zip(times["plain"], times["learned"])]
    ratios_rest = [p / n for p, n in zip(times["plain"], rest)]
    f1_learned = match_instances(suite.labels_learned, suite.scene.labels)["f1"]
    nanoshape_s, one_s, plain_s = (statistics.median(times[k]) for k in ("nanoshape", "one_thread", "plain"))
    # the ratio of each round (same load), then its median and range
    ratios = [p / n for p, n in zip(times["plain"], times["nanoshape"])]
    ratios_one = [p / n for p, n in zip(times["plain"], times["one_thread"])]
    rate = truth / nanoshape_s * 60
    rate_plain = truth / plain_s * 60
    f1 = match_instances(suite.labels, suite.scene.labels)["f1"]
    f1_plain = match_instances(suite.labels_plain, suite.scene.labels)["f1"]
    print(f"scene: 2048 x 2048 px, {len(suite.scene.truth)} particles rendered, {truth} not touching the border")
    print(f"{'pipeline':<44} {'found':>6} {'F1':>6} {'s':>7} {'particles/min':>14} {'x plain':>8}")
    print(f"{'nanoshape, learned detector (default)':<44} {suite.found_learned:>6} {f1_learned:>6.3f} {learned_s:>7.2f} "
          f"{truth / learned_s * 60:>14.0f} {statistics.median(ratios_learned):>8.2f}")
    print(f"{'  of which the network on the pyramid':<44} {'':>6} {'':>6} {network_s:>7.2f}")
    print(f"{'  the rest (instances, removals, features)':<44} {'':>6} {'':>6} {statistics.median(rest):>7.2f} "
          f"{truth / statistics.median(rest) * 60:>14.0f} {statistics.median(ratios_rest):>8.2f}")
    two_s = statistics.median(times["two_views"])
    f1_two = match_instances(suite.labels_two_views, suite.scene.labels)["f1"]
    ratios_two = [p / n for p, n in zip(times["plain"], times["two_views"])]
    print(f"{'  the same, two views (segment.views=2)':<44} {suite.found_two_views:>6} {f1_two:>6.3f} {two_s:>7.2f} "
          f"{truth / two_s * 60:>14.0f} {statistics.median(ratios_two):>8.2f}")
    print(f"{'nanoshape, classical segmentation':<44} {suite.found:>6} {f1:>6.3f} {nanoshape_s:>7.2f} {rate:>14.0f} {statistics.median(ratios):>8.2f}")
    print(f"{'  the same, filters in one thread':<44} {suite.found_one:>6} {f1:>6.3f} {one_s:>7.2f} {truth / one_s * 60:>14.0f} "
          f"{statistics.median(ratios_one):>8.2f}")
    print(f"{'plain Otsu + watershed + regionprops_table':<44} {suite.found_plain:>6} {f1_plain:>6.3f} {plain_s:>7.2f} {rate_plain:>14.0f} {1.0:>8.2f}")
    print(f"\nx plain per round (same load): median {statistics.median(ratios):.2f}, range {min(ratios):.2f}-{max(ratios):.2f}; "
          f"one thread: median {statistics.median(ratios_one):.2f}, range {min(ratios_one):.2f}-{max(ratios_one):.2f}")


if __name__ == "__main__":
    main()
