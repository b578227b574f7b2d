"""The rejects table (``REJECTS``), built in one place: an Arrow builder for the Dask/Arrow
stages and a Spark builder for the Spark stages.

Every stage writes one ``rejects/`` row per input row it did not pass on (row conservation:
``curation/stage.py``). Before this module each stage assembled the six columns itself
(``pa.table({...}, schema=REJECTS)`` in capfilt, score and release; ``F.lit(STAGE).alias
("stage")`` selects in dedup and images), so a column added to ``REJECTS`` had to be added in
every one of them. Here the columns come from the schema: a stage names its rows, its table,
its stage and its reasons, and gets a table (or a DataFrame) of exactly ``REJECTS``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from curation.schemas import REJECTS

# The Spark DDL of REJECTS (every column a string), derived from the schema, not written out again.
REJECTS_DDL = ", ".join(f"{f.name} { {pa.string(): 'string'}[f.type]}" for f in REJECTS)


def _column(values: Any, n: int, name: str) -> pa.Array:
    """``values`` as a string column of ``n`` rows: a sequence (one value per row), one value for
    every row (a str, or None for nulls)."""
    if values is None or isinstance(values, str):
        return pa.array([values] * n, pa.string())
    arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(list(values), pa.string())
    if len(arr) != n:
        raise ValueError(f"rejects: {len(arr)} values of {name} for {n} rows")
    return arr.cast(pa.string())


def rejects_table(row_ids: Sequence[str] | pa.Array, table: str | Sequence[str], stage: str,
                  reasons: str | Sequence[str] | pa.Array, details: Any = None, duplicate_of: Any = None) -> pa.Table:
    """A ``REJECTS`` table: one row per id in ``row_ids``.

    ``table`` and ``reasons`` are one value for every row or one per row; ``details`` and
    ``duplicate_of`` the same, or None (null). A missing reason is a bug in the stage (a reject
    must say why), so it fails here rather than writing a row the schema forbids.
    """
    if isinstance(row_ids, str):
        raise TypeError("rejects: row_ids must be a sequence of ids, not one string")
    ids = _column(row_ids, len(row_ids), "row_ids")
    n = len(ids)
    cols = {
        "row_id": ids,
        "table": _column(table, n, "table"),
        "stage": _column(stage, n, "stage"),
        "reason": _column(reasons, n, "reasons"),
        "detail": _column(details, n, "details"),
        "duplicate_of": _column(duplicate_of, n, "duplicate_of"),
    }
    for name in ("row_id", "table", "stage", "reason"):
        if cols[name].null_count:
            raise ValueError(f"rejects: {cols[name].null_count} null {name} value(s) (stage {stage})")
    return pa.table([cols[f.name] for f in REJECTS], schema=REJECTS)


def concat_rejects(parts: Sequence[pa.Table]) -> pa.Table:
    """Several ``REJECTS`` tables as one (an empty list: the empty table of the schema)."""
    parts = [p for p in parts if p.num_rows] or [REJECTS.empty_table()]
    return pa.concat_tables([p.cast(REJECTS) for p in parts])


def spark_rejects(df: Any, table: Any, stage: str, row_id: Any = "row_id", reason: Any = "reason",
                  detail: Any = "detail", duplicate_of: Any = "duplicate_of") -> Any:
    """The Spark variant of :func:`rejects_table`: ``df`` selected to ``REJECTS``' columns, in order.

    Each of ``row_id``, ``reason``, ``detail``, ``duplicate_of`` is a column of ``df`` (its name or
    a ``Column``); ``detail`` and ``duplicate_of`` default to null when ``df`` has no such column.
    ``table`` is a literal (a str) or a ``Column``; ``stage`` a literal. Every column is cast to
    string, so the frame writes the same Parquet schema the Arrow stages write.
    """
    from pyspark.sql import Column
    from pyspark.sql import functions as F

    def col(value: Any, name: str, literal: bool = False, optional: bool = False) -> Any:
        if isinstance(value, Column):
            c = value
        elif value is None:
            c = F.lit(None)
        elif literal:
            c = F.lit(value)
        elif value in df.columns:
            c = F.col(value)
        elif optional:
            c = F.lit(None)
        else:
            raise ValueError(f"rejects: no column {value!r} for {name} (columns {df.columns})")
        return c.cast("string").alias(name)

    return df.select(
        col(row_id, "row_id"),
        col(table, "table", literal=True),
        col(stage, "stage", literal=True),
        col(reason, "reason"),
        col(detail, "detail", optional=True),
        col(duplicate_of, "duplicate_of", optional=True),
    )
