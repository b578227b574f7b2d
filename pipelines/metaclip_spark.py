"""MetaCLIP's metadata curation on Spark: match in ``mapInArrow``, count with a Spark aggregation,
draw per pair seeded by its key.

Three passes over a DataFrame of pairs ``(key, caption)``:

1. **match**: ``mapInArrow`` runs :class:`filters.metaclip.MetadataMatcher` over each Arrow batch;
   the matcher (and its automaton) is built once per Python worker from a broadcast of the
   entries and cached in this module for every later batch and task the worker runs.
2. **count**: ``explode(entry_ids)`` + ``groupBy(entry).count()``: only the per-entry counts (one
   number per matched entry, at most the metadata's size) come back to the driver.
3. **balance**: ``mapInArrow`` again with the pool's counts broadcast: the keep flag and reason
   of each pair come from :func:`filters.metaclip.balance_decisions`, whose draw is a pure
   function of (seed, key, entry), so the result equals the single-process one on any
   partitioning (the test checks it).

The matched DataFrame is persisted between passes 2 and 3 (the automaton pass is the expensive
one); :meth:`MetaclipResult.release` frees it.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

__all__ = ["MATCH_DDL", "DECISION_DDL", "MetaclipResult", "match_pairs", "pool_entry_counts", "metaclip_balance"]

MATCH_DDL = "key string, entry_ids array<int>"
DECISION_DDL = "key string, entry_ids array<int>, keep boolean, reason string"

# Per Python worker: a token naming the metadata broadcast -> MetadataMatcher (its automaton is
# built on the first batch). The token is made on the driver: a worker-side Broadcast has no id.
_MATCHERS: dict[str, Any] = {}


def _matcher(token: str, bc) -> Any:
    from filters.metaclip import MetadataMatcher

    m = _MATCHERS.get(token)
    if m is None:
        _MATCHERS.clear()  # one metadata list at a time per worker
        m = _MATCHERS[token] = MetadataMatcher(bc.value)
    return m


def _match_fn(bc, key_col: str, caption_col: str):
    token = uuid.uuid4().hex

    def fn(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa

        matcher = _matcher(token, bc)
        for batch in batches:
            keys = batch.column(key_col)
            if not pa.types.is_string(keys.type):
                keys = keys.cast(pa.string())
            yield pa.RecordBatch.from_arrays([keys, matcher.match(batch.column(caption_col))], names=["key", "entry_ids"])

    return fn


def _balance_fn(bc_counts, t: int, seed: int):
    def fn(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa

        from filters.metaclip import balance_decisions

        counts = bc_counts.value
        for batch in batches:
            matches = batch.column("entry_ids")
            keep, reason = balance_decisions(batch.column("key"), matches, counts, t, seed)
            yield pa.RecordBatch.from_arrays(
                [batch.column("key"), matches, pa.array(keep, pa.bool_()), pa.array(reason.tolist(), pa.string())],
                names=["key", "entry_ids", "keep", "reason"],
            )

    return fn


def match_pairs(df, entries: Sequence[str], key_col: str = "key", caption_col: str = "caption"):
    """``(key, entry_ids)`` of every pair: MetaCLIP's substring matches (sorted, distinct int ids)."""
    bc = df.sparkSession.sparkContext.broadcast(list(entries))
    return df.select(key_col, caption_col).mapInArrow(_match_fn(bc, key_col, caption_col), MATCH_DDL)


def pool_entry_counts(matched, n_entries: int) -> np.ndarray:
    """Per-entry match counts over the whole pool by a Spark aggregation (explode + groupBy)."""
    from pyspark.sql import functions as F

    rows = (matched.select(F.explode("entry_ids").alias("entry")).groupBy("entry").count().collect())
    counts = np.zeros(n_entries, dtype=np.int64)
    if rows:
        idx = np.fromiter((r["entry"] for r in rows), dtype=np.int64, count=len(rows))
        counts[idx] = np.fromiter((r["count"] for r in rows), dtype=np.int64, count=len(rows))
    return counts


@dataclass
class MetaclipResult:
    """``decisions``: ``(key, entry_ids, keep, reason)`` per pair; ``counts``: the pool's per-entry
    counts (int64, one per metadata entry)."""

    decisions: Any
    counts: np.ndarray
    _matched: Any = None

    def release(self) -> None:
        if self._matched is not None:
            self._matched.unpersist()
            self._matched = None


def metaclip_balance(
    df, entries: Sequence[str], t: int, seed: int, key_col: str = "key", caption_col: str = "caption"
) -> MetaclipResult:
    """MetaCLIP's curation of a DataFrame of pairs: match, count over the pool, balance.

    ``t`` is MetaCLIP's per-entry target (20,000 at 400M pairs); keys must be unique per pair
    (the draw is seeded by the key: two pairs with one key would share their draws)."""
    from pyspark import StorageLevel

    from curation.errors import ConfigError

    if t <= 0:
        raise ConfigError(f"metaclip t must be a positive count, got {t}")
    matched = match_pairs(df, entries, key_col, caption_col).persist(StorageLevel.MEMORY_AND_DISK)
    counts = pool_entry_counts(matched, len(entries))
    bc_counts = df.sparkSession.sparkContext.broadcast(counts)
    decisions = matched.mapInArrow(_balance_fn(bc_counts, t, seed), DECISION_DDL)
    return MetaclipResult(decisions=decisions, counts=counts, _matched=matched)
