"""Instance label images (integer, 0 = background, ids > 0): the utilities several stages share."""

from __future__ import annotations

import numpy as np

__all__ = ["border_ids", "relabel_sequential"]


def border_ids(labels: np.ndarray) -> np.ndarray:
    """Sorted ids (> 0) of the instances with a pixel on the outermost row or column.

    An id counts whole, even where its other pixels lie in a separate piece inside the image;
    :func:`skimage.segmentation.clear_border` instead clears only the connected pieces that
    touch the border.

    Example:
      >>> border_ids(np.array([[0, 2, 0], [0, 5, 0], [3, 0, 0]]))
      array([2, 3])
    """
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    return np.unique(edge[edge > 0])


def relabel_sequential(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ids renumbered 1..N in their order (0 stays background), and the original id of each new one.

    :func:`skimage.segmentation.relabel_sequential`, returned as int64 whatever the input's dtype
    (so that ids can be combined with other int64 arithmetic).

    Returns:
      (labels (H, W) int64 with ids 0..N, original (N + 1,) int64: ``original[new id]``, 0 for 0).

    Example:
      >>> new, original = relabel_sequential(np.array([[0, 7], [42, 7]], np.uint16))
      >>> new.tolist(), original.tolist()
      ([[0, 1], [2, 1]], [0, 7, 42])
    """
    from skimage.segmentation import relabel_sequential as skimage_relabel

    labels = np.asarray(labels)
    if labels.size == 0:
        return labels.astype(np.int64), np.zeros(1, np.int64)
    # skimage's compiled lookup refuses read-only buffers (labels read from a file, views)
    new, _, inverse = skimage_relabel(labels if labels.flags.writeable else labels.copy())
    return new.astype(np.int64, copy=False), np.asarray(inverse).astype(np.int64, copy=False)
