"""Label utilities: border ids count an id whole; relabelling keeps each pixel's instance and gives back its id."""

import doctest

import numpy as np

import nanoshape.batching
import nanoshape.labels
from nanoshape.labels import border_ids, relabel_sequential


def test_docstring_examples_of_the_small_helpers():
    for module in (nanoshape.labels, nanoshape.batching):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_border_ids_count_an_id_whole_where_clear_border_keeps_its_inner_piece():
    from skimage.segmentation import clear_border

    labels = np.zeros((6, 6), np.int32)
    labels[0, 1] = labels[3, 3] = 3  # one id, a piece on the edge and one inside
    labels[2:4, 0] = 4
    labels[1:3, 4] = 5  # inside, next to the last column but not on it
    assert border_ids(labels).tolist() == [3, 4]
    assert clear_border(labels)[3, 3] == 3  # why nanoshape does not use it for this
    assert border_ids(np.zeros((3, 3), np.uint8)).size == 0


def test_relabel_sequential_keeps_instances_and_maps_back_for_any_dtype():
    rng = np.random.default_rng(0)
    for labels in (rng.integers(0, 50, (40, 30)).astype(np.uint16), rng.integers(1, 9, (8, 8)).astype(np.int32),
                   (rng.integers(0, 5, (16, 16)) * 10**12).astype(np.uint64), np.zeros((0, 0), np.uint32)):
        labels.flags.writeable = False  # as read from a file
        new, original = relabel_sequential(labels)
        assert new.dtype == original.dtype == np.int64 and new.shape == labels.shape
        ids = np.unique(labels[labels > 0])
        assert original.tolist() == [0, *ids.tolist()]
        np.testing.assert_array_equal(original[new], labels)
        assert new.max(initial=0) == ids.size
