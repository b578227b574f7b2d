"""Look-ahead loading: work on item i while item i+1 loads in a thread.

Workers decode images (PIL, which releases the GIL) while the models run on the previous batch
(torch, which does too), so a stage's wall time is about the slower of the two instead of their
sum. One place for the pattern, so every stage that streams batches overlaps them the same way.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def prefetch(load: Callable[[T], R], items: Iterable[T], *,
             thread_name_prefix: str = "prefetch") -> Iterator[tuple[R, float]]:
    """``(load(item), seconds waited for it)`` for each item in order; ``load`` of the next item
    runs in one background thread while the caller works on the current result (one ahead, so at
    most two results are held). An exception in ``load`` is raised where its result is taken."""
    items = list(items)
    if not items:
        return
    with ThreadPoolExecutor(1, thread_name_prefix=thread_name_prefix) as pool:
        pending = pool.submit(load, items[0])
        for i in range(len(items)):
            t0 = time.perf_counter()
            result = pending.result()
            waited = time.perf_counter() - t0
            if i + 1 < len(items):
                pending = pool.submit(load, items[i + 1])
            yield result, waited
