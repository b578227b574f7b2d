"""The images stage's Spark duplicate steps give the single-process reference's decisions.

:func:`pipelines.images_spark.decide_duplicates` (sha256 window, banded LSH join on the pHash,
greedy keeper resolved in rounds) against :func:`pipelines.images._deduplicate` (which runs
:func:`filters.image.exact_duplicates` and :func:`filters.image.near_duplicates`) on planted
clusters: exact copies, near copies at every distance up to and past the bound, chains a~b~c where
a and c are too far apart (no chaining: c stays when b goes), ties on pixels (the smaller URL wins),
and a bound above 15 (one band: every pair compared).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curation.schemas import IMAGES
from filters.config import ImageFilterConfig
from pipelines.images import _deduplicate
from pipelines.images_spark import decide_duplicates

pytestmark = pytest.mark.slow


def _flip(h: int, bits) -> int:
    for b in bits:
        h ^= 1 << int(b)
    return h


def _planted(seed: int = 7, clusters: int = 60) -> pa.Table:
    rng = np.random.default_rng(seed)
    rows = []

    def add(url, h, w, hgt, sha=None):
        rows.append({"url": url, "image": b"", "width": w, "height": hgt,
                     "sha256": sha or f"{len(rows):064x}", "format": "jpeg", "phash": f"{h:016x}"})

    for c in range(clusters):
        base = int(rng.integers(0, 2**63)) * 2 + int(rng.integers(0, 2))
        size = int(rng.choice([100, 200, 300]))
        add(f"https://x.example/{c:03d}/base.jpg", base, size, size)
        for k in range(int(rng.integers(1, 6))):  # near copies, some past the bound
            d = int(rng.integers(1, 10))
            add(f"https://x.example/{c:03d}/near{k}.jpg", _flip(base, rng.choice(64, d, replace=False)),
                int(rng.choice([100, 200, 300])), size)
        chain = _flip(base, range(0, 4))  # base ~ chain (4 bits), chain ~ chain2 (4 bits), base vs chain2: 8
        add(f"https://x.example/{c:03d}/chain1.jpg", chain, size - 10, size)
        add(f"https://x.example/{c:03d}/chain2.jpg", _flip(chain, range(4, 8)), size - 20, size)
        if c % 3 == 0:  # an exact copy (same sha256), same pixels: the smaller URL is kept
            add(f"https://x.example/{c:03d}/a-copy.jpg", base, size, size, sha=rows[-3]["sha256"])
        if c % 4 == 0:  # a tie on pixels at distance 1
            add(f"https://x.example/{c:03d}/0tie.jpg", _flip(base, [5]), size, size)
    return pa.Table.from_pylist(rows, schema=IMAGES)


def _reference(table: pa.Table, bound: int) -> tuple[set, dict]:
    rejected: dict = {}
    kept = _deduplicate(table, ImageFilterConfig(phash_max_hamming=bound), rejected)
    return set(kept.column("url").to_pylist()), rejected


def _spark(spark, table: pa.Table, bound: int) -> tuple[set, dict, object]:
    from pyspark.sql import functions as F

    df = spark.createDataFrame(table.drop_columns(["image"]).to_pandas())
    meta = df.withColumn("pixels", F.col("width").cast("long") * F.col("height").cast("long"))
    kept, rejects, near = decide_duplicates(spark, meta, bound)
    got = {r["url"]: (r["reason"], r["detail"], r["duplicate_of"]) for r in rejects.collect()}
    return {r["url"] for r in kept.collect()}, got, near


@pytest.mark.parametrize("bound", [5, 0, -1, 20])
def test_spark_duplicates_equal_the_single_process_ones(spark, bound):
    table = _planted()
    ref_kept, ref_rej = _reference(table, bound)
    kept, rej, near = _spark(spark, table, bound)
    assert kept == ref_kept
    assert rej == ref_rej
    assert len(kept) + len(rej) == table.num_rows
    if bound == 5:  # the planted chains need more than one round, and they are not merged
        assert near.rounds >= 2
        assert any(u.endswith("chain2.jpg") and u.replace("chain2", "chain1") in rej for u in kept)


def test_stage_shuffle_partitions_follow_the_input_size():
    from pipelines.images_spark import TARGET_PARTITION_BYTES, stage_shuffle_partitions

    assert stage_shuffle_partitions(0, 8) == 1  # an empty input: one partition, not zero
    assert stage_shuffle_partitions(20 << 20, 8) == 1  # the sample (~20 MB): one task per shuffle
    assert stage_shuffle_partitions(3 * TARGET_PARTITION_BYTES + 1, 8) == 4
    assert stage_shuffle_partitions(100 * TARGET_PARTITION_BYTES, 8) == 8  # never above the run's setting
