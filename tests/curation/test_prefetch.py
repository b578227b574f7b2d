"""The look-ahead helper: results in order, the next item loading while the caller works, errors raised."""
from __future__ import annotations

import threading
import time

import pytest

from curation.prefetch import prefetch


def test_results_in_order_with_the_wait():
    out = list(prefetch(lambda x: x * 2, [1, 2, 3]))
    assert [r for r, _ in out] == [2, 4, 6]
    assert all(w >= 0 for _, w in out)
    assert list(prefetch(lambda x: x, [])) == []


def test_next_item_loads_while_the_caller_works():
    started: list[int] = []
    loaded = threading.Event()

    def load(x):
        started.append(x)
        if x == 1:
            loaded.set()
        return x

    it = prefetch(load, [0, 1, 2], thread_name_prefix="test-prefetch")
    first, _ = next(it)
    assert first == 0
    assert loaded.wait(5)  # item 1 loads before the caller asks for it
    assert started == [0, 1]  # one ahead only
    time.sleep(0.05)
    assert started == [0, 1]
    assert [r for r, _ in it] == [1, 2]


def test_a_load_error_is_raised_where_its_result_is_taken():
    def load(x):
        if x == 1:
            raise ValueError("bad item")
        return x

    it = prefetch(load, [0, 1, 2])
    assert next(it)[0] == 0
    with pytest.raises(ValueError, match="bad item"):
        next(it)
