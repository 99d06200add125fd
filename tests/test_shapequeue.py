"""The queue that batches the shape stages across micrographs: when it flushes, what it hands back."""

import pytest

from nanoshape.shapequeue import ShapeQueue


def _queue(flush_particles=10, max_items=64, bad=(), max_pixels=2**40):
    batches, finished, failed = [], [], []

    def run_batch(items):
        if any(item[0] in bad for item in items):
            raise ValueError("bad item " + ",".join(i[0] for i in items if i[0] in bad))
        batches.append([item[0] for item in items])

    queue = ShapeQueue(run_batch, lambda item: finished.append(item[0]),
                       lambda item, error: failed.append((item[0], str(error))), size=lambda item: item[1],
                       flush_particles=flush_particles, max_items=max_items, pixels=lambda item: item[2] if len(item) > 2 else 0,
                       max_pixels=max_pixels)
    return queue, batches, finished, failed


def test_the_first_item_runs_alone_then_batches_fill_to_size_and_the_rest_runs_at_close():
    queue, batches, finished, failed = _queue(flush_particles=10)
    with queue:
        for name, size in [("a", 3), ("b", 4), ("c", 6), ("d", 0), ("e", 9), ("f", 2), ("g", 1)]:
            queue.put((name, size))
        assert batches == [["a"], ["b", "c"], ["d", "e", "f"]] and len(queue) == 1
    assert batches[-1] == ["g"] and finished == ["a", "b", "c", "d", "e", "f", "g"] and failed == []


def test_many_small_items_flush_by_count():
    queue, batches, _, _ = _queue(flush_particles=10**6, max_items=3)
    with queue:
        for i in range(8):
            queue.put((str(i), 1))
    assert batches == [["0"], ["1", "2", "3"], ["4", "5", "6"], ["7"]]


def test_large_images_with_few_particles_flush_by_pixels():
    queue, batches, _, _ = _queue(flush_particles=10**6, max_pixels=100)
    with queue:
        for name, pixels in [("a", 1), ("b", 60), ("c", 30), ("d", 10), ("e", 300), ("f", 5)]:
            queue.put((name, 0, pixels))
    assert batches == [["a"], ["b", "c", "d"], ["e"], ["f"]]


def test_a_failing_batch_is_run_item_by_item_so_only_the_bad_item_fails():
    queue, batches, finished, failed = _queue(flush_particles=100, bad={"c"})
    with queue:
        for name in "abcd":
            queue.put((name, 1))
    assert failed == [("c", "bad item c")]
    assert finished == ["a", "b", "d"] and batches == [["a"], ["b"], ["d"]]


def test_nothing_is_flushed_when_the_block_raises():
    queue, batches, finished, _ = _queue(flush_particles=100)
    with pytest.raises(KeyboardInterrupt):
        with queue:
            queue.put(("a", 1))
            queue.put(("b", 1))
            raise KeyboardInterrupt
    assert finished == ["a"] and batches == [["a"]]


def test_sizes_must_be_positive():
    with pytest.raises(ValueError):
        ShapeQueue(lambda items: None, print, print, len, flush_particles=0)
    with pytest.raises(ValueError):
        ShapeQueue(lambda items: None, print, print, len, max_pixels=0)
