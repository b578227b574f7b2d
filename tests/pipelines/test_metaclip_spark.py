"""pipelines/metaclip_spark.py: the Spark curation equals the single-process one on the same input."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.spark import java_available
from filters.metaclip import (
    MetadataMatcher,
    balance_decisions,
    default_metadata_path,
    entry_counts,
    load_metadata,
)
from pipelines.metaclip_spark import metaclip_balance

pytestmark = [pytest.mark.spark, pytest.mark.skipif(not java_available(), reason="Spark needs Java 17")]


def single_process(keys: list[str], captions: list[str | None], entries: list[str], t: int, seed: int):
    matches = MetadataMatcher(entries).match(pa.array(captions, pa.string()))
    counts = entry_counts(matches, len(entries))
    keep, reason = balance_decisions(pa.array(keys), matches, counts, t, seed)
    return matches.to_pylist(), counts, keep.tolist(), reason.tolist()


@pytest.mark.realdata
@pytest.mark.slow
def test_spark_equals_single_process_on_real_captions(spark, realdata):
    table = pq.read_table(realdata / "laion" / "img2dataset_test_1000.parquet", columns=["TEXT"])
    captions = table.column("TEXT").to_pylist()
    keys = [f"laion-{i:04d}" for i in range(len(captions))]
    entries = load_metadata(default_metadata_path())
    t, seed = 5, 11
    want_matches, want_counts, want_keep, want_reason = single_process(keys, captions, entries, t, seed)

    # Several partitions and a shuffled row order: the result must not depend on either.
    order = np.random.default_rng(0).permutation(len(keys))
    df = spark.createDataFrame([(keys[i], captions[i]) for i in order], "key string, caption string").repartition(3)
    res = metaclip_balance(df, entries, t=t, seed=seed)
    try:
        got = {r["key"]: r for r in res.decisions.collect()}
    finally:
        res.release()
    assert (res.counts == want_counts).all()
    assert len(got) == len(keys)
    assert [got[k]["entry_ids"] for k in keys] == want_matches
    assert [got[k]["keep"] for k in keys] == want_keep
    assert [got[k]["reason"] for k in keys] == want_reason
    # Both outcomes and both reasons occur at this t (the comparison is not vacuous).
    assert {"metaclip_unmatched", "metaclip_balanced_out", None} == set(want_reason)


def test_spark_small_input_with_int_keys(spark):
    entries = ["dog", "cat", "red dog"]
    rows = [(1, "a dog"), (2, "red dog, cat"), (3, None), (4, "dog dog"), (5, "Dog")]
    df = spark.createDataFrame(rows, "key long, caption string").coalesce(1)
    res = metaclip_balance(df, entries, t=1, seed=0)
    out = sorted(res.decisions.collect(), key=lambda r: int(r["key"]))
    res.release()
    assert res.counts.tolist() == [3, 1, 1]
    want = single_process([str(k) for k, _ in rows], [c for _, c in rows], entries, 1, 0)
    assert [r["entry_ids"] for r in out] == want[0]
    assert [r["keep"] for r in out] == want[2]
    assert [r["reason"] for r in out] == want[3]
