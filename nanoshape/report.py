"""Figures and tables written for users: sheets of rendered shapes (more in later stages)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["save_sheet"]


def save_sheet(images: np.ndarray, table: pd.DataFrame, path: str | Path, *, columns: int = 8) -> Path:
    """Write a grid of particle images, each titled with its (p, d, L, phi), as a PNG.

    Args:
      images: (n, H, W) images.
      table: n rows with columns p, d, l_ratio, phi.
      path: the PNG to write.
      columns: images per row.

    Returns:
      the path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    rows = max(1, -(-n // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.75 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, (ax, image) in enumerate(zip(axes.ravel(), images)):
        row = table.iloc[i]
        ax.imshow(image, cmap="gray", interpolation="nearest")
        ax.set_title(f"p={row.p:.2g} d={int(row.d)}\nL={row.l_ratio:.2f} φ={row.phi:.2f}", fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
