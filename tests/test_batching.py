"""Padded batching: pieces cover every row once, in few shapes with little padding; padding keeps rows and dtype."""

import numpy as np
import pytest

from nanoshape.batching import geometric_size, pad_rows, pieces


def test_pieces_cover_every_row_once_with_few_shapes():
    for sizes in ((32, 512), (16, 64, 256), (7,)):
        for n in (0, 1, 6, 7, 8, 31, 32, 33, 600, 1100):
            cut = pieces(n, sizes)
            assert sum(p.count for p in cut) == n
            assert [p.begin for p in cut] == list(np.cumsum([0] + [p.count for p in cut])[:-1])
            assert all(p.size in sizes and 0 < p.count <= p.size for p in cut)
            # only the last piece is padded, and by less than the smallest size
            assert all(p.count == p.size for p in cut[:-1])
            assert sum(p.size for p in cut) < n + min(sizes)
    assert [tuple(p) for p in pieces(600, (512, 32))] == [(0, 512, 512), (512, 32, 32), (544, 32, 32), (576, 24, 32)]
    with pytest.raises(ValueError, match="positive"):
        pieces(3, ())


def test_geometric_size_is_the_smallest_power_that_holds_n():
    for n in range(1, 300):
        assert geometric_size(n, smallest=32, factor=2) == max(32, 1 << (n - 1).bit_length())
        size = geometric_size(n, smallest=1, factor=4)
        assert size >= n and size // 4 < n and np.log(size) / np.log(4) == round(np.log(size) / np.log(4))


def test_pad_rows_keeps_the_rows_and_the_dtype():
    rows = np.arange(6, dtype=np.int32).reshape(3, 2) + 1
    zeros = pad_rows(rows, 5, 0)
    assert zeros.dtype == np.int32 and zeros.shape == (5, 2)
    np.testing.assert_array_equal(zeros[:3], rows)
    np.testing.assert_array_equal(zeros[3:], 0)
    copies = pad_rows(rows, 5)
    np.testing.assert_array_equal(copies[3:], [rows[0], rows[0]])
    np.testing.assert_array_equal(pad_rows(rows, 3), rows)
    with pytest.raises(ValueError, match="do not fit"):
        pad_rows(rows, 2)
