"""curation/rejects.py: the REJECTS table built in one place, from Arrow and from Spark, with the
same columns, types and order."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.rejects import REJECTS_DDL, concat_rejects, rejects_table, spark_rejects
from curation.schemas import REJECTS


def test_arrow_builder_gives_the_schema_with_one_or_per_row_values():
    t = rejects_table(["a", "b", "c"], "pairs", "capfilt", ["x", "y", "x"], [None, "p 0.1", None])
    assert t.schema.equals(REJECTS)
    assert t.to_pylist()[1] == {"row_id": "b", "table": "pairs", "stage": "capfilt", "reason": "y",
                                "detail": "p 0.1", "duplicate_of": None}
    t = rejects_table(pa.array(["u1", "u2"]), ["images", "pairs"], "images", "exact_duplicate",
                      duplicate_of=["u0", "u0"])
    assert t.column("table").to_pylist() == ["images", "pairs"] and t.column("duplicate_of").to_pylist() == ["u0", "u0"]
    assert rejects_table([], "pairs", "s", []).num_rows == 0


def test_arrow_builder_refuses_rows_the_schema_forbids():
    with pytest.raises(ValueError, match="2 values of reasons for 3 rows"):
        rejects_table(["a", "b", "c"], "pairs", "s", ["x", "y"])
    with pytest.raises(ValueError, match="null reason"):
        rejects_table(["a"], "pairs", "s", [None])
    with pytest.raises(TypeError):
        rejects_table("abc", "pairs", "s", "x")


def test_concat_keeps_the_schema_even_when_empty():
    assert concat_rejects([]).schema.equals(REJECTS) and concat_rejects([]).num_rows == 0
    both = concat_rejects([rejects_table(["a"], "pairs", "s", "x"), REJECTS.empty_table(),
                           rejects_table(["b"], "images", "s", "y")])
    assert both.column("row_id").to_pylist() == ["a", "b"]


def test_ddl_is_derived_from_the_schema():
    assert [c.split()[0] for c in REJECTS_DDL.split(", ")] == REJECTS.names


def test_spark_builder_writes_what_the_arrow_builder_writes(spark, tmp_path):
    df = spark.createDataFrame([("d1", "near_duplicate", "d0", 3), ("d2", "too_short", None, 4)],
                               "doc_id string, why string, keeper string, n int")
    from pyspark.sql import functions as F

    out = spark_rejects(df, "documents", "dedup", row_id="doc_id", reason="why", duplicate_of="keeper",
                        detail=F.concat(F.lit("n="), F.col("n")))
    assert out.columns == REJECTS.names
    out.coalesce(1).write.parquet(str(tmp_path / "rej"))
    got = pq.read_table(tmp_path / "rej")
    assert [(f.name, f.type) for f in got.schema] == [(f.name, f.type) for f in REJECTS]
    want = rejects_table(["d1", "d2"], "documents", "dedup", ["near_duplicate", "too_short"], ["n=3", "n=4"],
                         ["d0", None])
    assert sorted(got.to_pylist(), key=lambda r: r["row_id"]) == want.to_pylist()
    # no detail column: null; an unknown column: named in the error
    assert spark_rejects(df, "documents", "dedup", row_id="doc_id", reason="why").first()["detail"] is None
    with pytest.raises(ValueError, match="no column 'nope' for reason"):
        spark_rejects(df, "documents", "dedup", row_id="doc_id", reason="nope")
