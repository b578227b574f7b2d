"""pipelines/score_global.py: the exact top-fraction cut and SemDeDup on the workers, against the
single-process results (filters.pairs.top_fraction_cutoff, models.semantic_dedup)."""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.dask_cluster import Shard
from filters.pairs import top_fraction_cutoff
from models.semantic_dedup import semantic_dedup
from pipelines.score_global import (
    SemDedupParams,
    exact_top_fraction_cutoff,
    key_to_float,
    read_duplicates,
    semdedup,
    sortable_keys,
    split_links,
)


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0")
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()


def write_scores(tmp_path, parts: list[np.ndarray], dtype=pa.float32(), name="s") -> list[str]:
    files = []
    for i, p in enumerate(parts):
        f = tmp_path / f"{name}{i}.parquet"
        mask = np.isnan(p) & (np.arange(p.size) % 3 == 0)  # some NaNs as nulls, some as NaN
        pq.write_table(pa.table({"clip_score": pa.array(p, type=dtype, mask=mask)}), f)
        files.append(str(f))
    return files


def same(a: float, b: float) -> bool:
    return (math.isinf(a) and math.isinf(b)) or a == b


def test_sortable_keys_order_and_inverse():
    v = np.array([-np.inf, -1e300, -2.5, -1e-310, -0.0, 0.0, 1e-310, 0.3, 0.30000000000000004, 1e300, np.inf])
    k = sortable_keys(v)
    assert (np.diff(k.astype(object)) >= 0).all()
    assert k[4] == k[5]  # -0.0 is 0.0
    for x, key in zip(v.tolist(), k.tolist()):
        assert key_to_float(key) == x


def random_case(rng):
    n = int(rng.choice([0, 1, 2, 3, 5, 17, 200, 3000]))
    kind = rng.integers(4)
    if kind == 0:
        v = rng.normal(0.3, 0.1, n)
    elif kind == 1:  # heavy ties
        v = rng.choice([-0.0, 0.0, 0.1, 0.25, 0.25000001], n)
    elif kind == 2:  # all equal
        v = np.full(n, 0.2)
    else:
        v = rng.uniform(-1, 1, n)
    v = v.astype(np.float64)
    if n:
        v[rng.random(n) < 0.1] = np.nan
        v[rng.random(n) < 0.02] = np.inf
    cuts = np.sort(rng.integers(0, n + 1, size=int(rng.integers(0, 4))))
    return np.split(v, cuts), float(rng.choice([0.3, 0.01, 0.5, 1.0, 1e-9, 0.999]))


@pytest.mark.parametrize("dtype", [pa.float32(), pa.float64()])
def test_cutoff_equals_single_process_on_random_inputs(tmp_path, dtype):
    rng = np.random.default_rng(0)
    for case in range(150):
        parts, fraction = random_case(rng)
        files = write_scores(tmp_path, parts, dtype, name=f"c{case}-")
        # what the score stage does today: all values read as float64, then top_fraction_cutoff
        arr = np.concatenate([pq.read_table(f).column("clip_score").to_numpy(zero_copy_only=False) for f in files]
                             ).astype(np.float64) if files else np.zeros(0)
        want = top_fraction_cutoff(arr[np.isfinite(arr)], fraction)
        for gather_max in (1 << 20, 1, 0):  # 0 and 1 force refinement down to single keys
            got = exact_top_fraction_cutoff(None, files, "clip_score", fraction, gather_max=gather_max)
            assert same(got, want), (case, fraction, gather_max, got, want)
            # the filter keeps the same rows
            fin = arr[np.isfinite(arr)]
            assert ((fin >= got) == (fin >= want)).all()


def test_cutoff_on_dask_and_edge_cases(tmp_path, client):
    rng = np.random.default_rng(1)
    parts = [rng.normal(0.3, 0.05, 1000).astype(np.float32) for _ in range(5)]
    files = write_scores(tmp_path, parts)
    allv = np.concatenate(parts).astype(np.float64)
    for fraction in (0.3, 0.1, 1.0):
        want = top_fraction_cutoff(allv[np.isfinite(allv)], fraction)
        assert exact_top_fraction_cutoff(client, files, "clip_score", fraction) == want
        assert exact_top_fraction_cutoff(client, files, "clip_score", fraction, gather_max=10) == want
    assert math.isinf(exact_top_fraction_cutoff(client, [], "clip_score", 0.3))
    nan_files = write_scores(tmp_path, [np.full(4, np.nan)], name="nan")
    assert math.isinf(exact_top_fraction_cutoff(client, nan_files, "clip_score", 0.3))


# --------------------------------------------------------------------------- SemDeDup


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered_with_copies(n_topics=6, per_topic=60, dim=32, seed=0, copy_noise=0.01, topic_noise=0.35):
    """Rows around a few topics (k-means has real clusters to find), some near copies (cos ~0.99)."""
    rng = np.random.default_rng(seed)
    topics = unit(rng.normal(size=(n_topics, dim)))
    base = unit(np.repeat(topics, per_topic, axis=0) + topic_noise * rng.normal(size=(n_topics * per_topic, dim)) / np.sqrt(dim) * 4)
    src = rng.choice(len(base), size=len(base) // 5, replace=False)
    copies = unit(base[src] + copy_noise * rng.normal(size=(src.size, dim)))
    emb = np.concatenate([base, copies]).astype(np.float32)
    return emb[rng.permutation(len(emb))]


def make_work(tmp_path, emb: np.ndarray, shard_rows: int, seed: int = 0):
    """A score work dir: pairs_scores/<shard>.parquet and pairs_img/<shard>.npy (float16)."""
    rng = np.random.default_rng(seed)
    work = tmp_path / "work"
    (work / "pairs_scores").mkdir(parents=True)
    (work / "pairs_img").mkdir()
    n = len(emb)
    scores = np.round(rng.uniform(0.1, 0.4, n), 2)  # rounded: ties, so the lowest-row rule matters
    scores[rng.random(n) < 0.03] = np.nan
    keys = [f"k{i:05d}" for i in range(n)]
    shards = []
    for j, lo in enumerate(range(0, n, shard_rows)):
        hi = min(n, lo + shard_rows)
        sid = f"part-{j:03d}"
        pq.write_table(pa.table({"key": keys[lo:hi], "clip_score": pa.array(scores[lo:hi], pa.float32())}),
                       work / "pairs_scores" / f"{sid}.parquet")
        np.save(work / "pairs_img" / f"{sid}.npy", emb[lo:hi].astype(np.float16))
        shards.append(Shard(sid, str(work / "pairs_scores" / f"{sid}.parquet"), (0,), hi - lo, lo))
    return str(work), shards, keys, np.concatenate([pq.read_table(work / "pairs_scores" / f"{s.id}.parquet")
                                                    .column("clip_score").to_numpy(zero_copy_only=False) for s in shards]).astype(np.float64)


def reference(work, shards, keys, scores, cand, threshold):
    """Today's ScoreStage._decide: one semantic_dedup over all candidates' float16 embeddings."""
    emb = np.concatenate([np.load(f"{work}/pairs_img/{s.id}.npy") for s in shards]).astype(np.float32)
    cidx = np.flatnonzero(cand)
    res = semantic_dedup(emb[cidx], threshold, scores[cidx])
    dup = [None] * len(keys)
    for j in np.flatnonzero(~res.keep).tolist():
        dup[int(cidx[j])] = keys[int(cidx[res.duplicate_of[j]])]
    return dup, res


def distributed_dup(result, shards):
    return [d for s in shards for d in read_duplicates(result.dir, s.id, s.rows)]


@pytest.mark.parametrize("cluster_rows", [10_000, 40])
def test_semdedup_equals_global_dedup_when_duplicates_share_a_cluster(tmp_path, client, cluster_rows):
    emb = clustered_with_copies()
    work, shards, keys, scores = make_work(tmp_path, emb, shard_rows=97)
    rng = np.random.default_rng(3)
    cand = rng.random(len(keys)) > 0.1
    masks = {s.id: cand[s.offset:s.offset + s.rows] for s in shards}
    want, res = reference(work, shards, keys, scores, cand, 0.95)
    params = SemDedupParams(0.95, cluster_rows=cluster_rows, group_rows=120, sample_per_cluster=64)
    got = semdedup(client, work, shards, masks, 0.95, params=params)
    c = got.counters
    if cluster_rows >= len(keys):
        assert c["kmeans_clusters"] == 1  # one cluster: exactly the global search
    else:
        assert c["kmeans_clusters"] > 1 and c["groups"] > 1
        # the premise of the equality: no near-duplicate link crosses two clusters here
        from models.kmeans import assign

        cent = np.load(f"{got.dir.rsplit('/groups', 1)[0]}/centroids.npy")
        f16 = np.concatenate([np.load(f"{work}/pairs_img/{s.id}.npy") for s in shards]).astype(np.float32)[cand]
        ids, _ = assign(f16, cent)
        assert split_links(f16, ids, 0.95)["split_links"] == 0
    assert distributed_dup(got, shards) == want
    assert c["removed"] == int((~res.keep).sum()) > 10
    assert c["links"] == res.n_links and c["clusters_with_duplicates"] == res.n_components_with_duplicates
    assert c["candidates"] == int(cand.sum())
    # rerun: everything resumed from markers, same answer
    again = semdedup(client, work, shards, masks, 0.95, params=params)
    assert again.dir == got.dir and distributed_dup(again, shards) == want


def test_semdedup_split_links_are_the_only_difference(tmp_path):
    """Loose clusters and a low threshold: some links cross clusters; SemDeDup then keeps more rows,
    never fewer, and every row it removes the global search removes too (per-cluster links are a
    subset of the global links)."""
    emb = clustered_with_copies(n_topics=4, per_topic=80, copy_noise=0.2, topic_noise=0.6, seed=5)
    work, shards, keys, scores = make_work(tmp_path, emb, shard_rows=64, seed=5)
    cand = np.ones(len(keys), bool)
    masks = {s.id: cand[s.offset:s.offset + s.rows] for s in shards}
    want, _ = reference(work, shards, keys, scores, cand, 0.8)
    res = semdedup(None, work, shards, masks, 0.8, params=SemDedupParams(0.8, cluster_rows=50))
    got = distributed_dup(res, shards)
    from models.kmeans import assign

    f16 = np.concatenate([np.load(f"{work}/pairs_img/{s.id}.npy") for s in shards]).astype(np.float32)
    ids, _ = assign(f16, np.load(f"{res.dir.rsplit('/groups', 1)[0]}/centroids.npy"))
    split = split_links(f16, ids, 0.8)
    assert split["split_links"] > 0 and res.counters["links"] == split["links"] - split["split_links"]
    removed_here = {i for i, d in enumerate(got) if d is not None}
    removed_global = {i for i, d in enumerate(want) if d is not None}
    # a row that loses inside its cluster's component loses in the larger global component too
    assert removed_here < removed_global


def test_semdedup_nothing_to_do(tmp_path):
    emb = clustered_with_copies(n_topics=1, per_topic=3)
    work, shards, keys, _ = make_work(tmp_path, emb, shard_rows=2)
    masks = {s.id: np.zeros(s.rows, bool) for s in shards}
    masks[shards[0].id][0] = True
    res = semdedup(None, work, shards, masks, 0.95)
    assert res.counters["removed"] == 0 and distributed_dup(res, shards) == [None] * len(keys)
