"""The score stage's global decisions on the Dask workers: exact top-fraction cut, SemDeDup.

Why a module of its own: both decisions need every row of the run (a rank over all scores, near
duplicates anywhere in the pool), and until now ``ScoreStage._decide`` gathered every key, score
and embedding on the client. Here the client holds only counts, histograms, a bounded k-means
sample and centroids; rows stay on the workers and in files under the stage's work directory.

- :func:`exact_top_fraction_cutoff`: DataComp's top fraction as an exact rank, by histogram
  refinement. Every finite score maps to an order-preserving 64-bit key; pass 1 counts keys per
  bin of their top 16 bits on each file; the client finds the bin holding rank ``k`` from the
  top; the next pass either refines that bin by the next 16 bits or, once it holds at most
  ``gather_max`` values, returns them sorted and the client picks the exact one. Two passes
  unless a bin holds more than ``gather_max`` values; at most five (64 bits) whatever the data.
  Equal to :func:`filters.pairs.top_fraction_cutoff` (the ``k = max(1, ceil(fraction * n))``-th
  largest finite score, ``inf`` without any) bit for bit.
- :func:`semdedup`: SemDeDup (Abbas et al. 2023; NeMo Curator's semantic dedup): spherical k-means
  on a bounded sample of the candidates' image embeddings (client), assignment of every candidate
  on the workers (each shard writes its candidates sorted by cluster, one Parquet row group per
  cluster, and their embeddings in the same order), then one task per group of clusters runs
  :func:`models.semantic_dedup.semantic_dedup` on each cluster (same links, same keeper: highest
  score, ties to the lowest stage-wide row). A worker holds one group of clusters, never the run.
  The difference with one range search over the whole pool: two near duplicates assigned to
  different clusters are not linked (SemDeDup accepts that; :func:`split_links` measures it), and
  a chain A~B~C split across clusters is cut the same way. With one cluster (small runs:
  ``candidates <= cluster_rows``) the result is the global one exactly. Rows SemDeDup removes are
  always a subset of those the global search removes (a row that loses in its cluster's component
  loses in the larger global one). Measured (no tuning, cosine 0.95): on the sample run's 480
  image embeddings (tiny CLIP) with k forced to 2/4/8, 6.6%/6.6%/0.8% of links split and 456/457/459
  rows removed against 464 globally; on synthetic 24k rows (200 topics, 20% near copies) with
  k = 10/50/200, 2.2%/0.18%/0.03% of links split; on 60k synthetic rows in 12 shards with
  ``cluster_rows=10_000`` (k = 6, one process): 2,844 removed against 3,000 (5.2% of the
  duplicates kept), 12.7 s against 59.4 s for the global search.

Decisions land in ``<dir>/decisions/<shard id>/<group>.parquet`` (row, duplicate_of key); the
write step reads a shard's with :func:`read_duplicates`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from curation.dask_cluster import Shard, ShardOutput, run_shards

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- exact top fraction

BIN_BITS = 16
_SIGN = np.uint64(1 << 63)


def sortable_keys(values: np.ndarray) -> np.ndarray:
    """uint64 keys ordered as the float64 ``values`` (finite values; -0.0 is taken as 0.0)."""
    v = np.ascontiguousarray(np.asarray(values, dtype=np.float64) + 0.0)  # -0.0 + 0.0 == +0.0
    u = v.view(np.uint64)
    neg = (u & _SIGN) != 0
    return np.where(neg, ~u, u | _SIGN)


def key_to_float(key: int) -> float:
    """Inverse of :func:`sortable_keys` for one key."""
    k = np.uint64(key)
    u = (k ^ _SIGN) if (k & _SIGN) else ~k
    return float(np.array([u], dtype=np.uint64).view(np.float64)[0])


def _finite_column(path: str, column: str) -> np.ndarray:
    fs, p = url_to_fs(path)
    with fs.open(p, "rb") as fh:
        col = pq.read_table(fh, columns=[column]).column(column)
    arr = col.to_numpy(zero_copy_only=False) if col.num_chunks else np.zeros(0)
    arr = np.asarray(arr, dtype=np.float64)
    return arr[np.isfinite(arr)]


def _file_pass(path: str, column: str, prefix: int, prefix_bits: int, gather: bool) -> tuple[int, np.ndarray]:
    """(finite count, histogram of the next 16 bits or sorted keys) of the keys under ``prefix``."""
    keys = sortable_keys(_finite_column(path, column))
    n = int(keys.size)
    if prefix_bits:
        keys = keys[(keys >> np.uint64(64 - prefix_bits)) == np.uint64(prefix)]
    if gather:
        return n, np.sort(keys)
    shift = np.uint64(64 - prefix_bits - BIN_BITS)
    bins = ((keys >> shift) & np.uint64((1 << BIN_BITS) - 1)).astype(np.int64)
    return n, np.bincount(bins, minlength=1 << BIN_BITS).astype(np.int64)


def _map_files(client: Any, fn, files: Sequence[str]):
    """``fn(file)`` for each file, on the workers (here when ``client`` is None), as they finish."""
    if client is None:
        for f in files:
            yield fn(f)
        return
    from distributed import as_completed

    for fut in as_completed([client.submit(fn, f, pure=False) for f in files]):
        yield fut.result()
        fut.release()


def exact_top_fraction_cutoff(client: Any, score_files: list[str], column: str, fraction: float,
                              gather_max: int = 1 << 20) -> float:
    """The ``max(1, ceil(fraction * n))``-th largest finite ``column`` value over ``score_files``.

    ``n`` counts finite values only (NaN, inf and null are not ranked), ``inf`` when there is none,
    as :func:`filters.pairs.top_fraction_cutoff`. The client holds one 2^16-bin histogram and at
    most ``gather_max`` keys.
    """
    if not score_files:
        return math.inf
    prefix, prefix_bits = 0, 0
    n_total: int | None = None
    rank = 0  # 1-based rank from the top inside the current prefix
    while True:
        gather = prefix_bits == 64
        hist = np.zeros(1 << BIN_BITS, dtype=np.int64) if not gather else None
        gathered: list[np.ndarray] = []
        n_seen = 0
        for n, part in _map_files(client, partial(_file_pass, column=column, prefix=prefix,
                                                  prefix_bits=prefix_bits, gather=gather), score_files):
            n_seen += n
            if gather:
                gathered.append(part)
            else:
                hist += part
        if n_total is None:
            n_total = n_seen
            if n_total == 0:
                return math.inf
            rank = min(n_total, max(1, math.ceil(fraction * n_total)))
        if gather:
            keys = np.sort(np.concatenate(gathered)) if gathered else np.zeros(0, np.uint64)
            return key_to_float(int(keys[keys.size - rank]))
        # Walk the bins from the top until the rank is reached.
        above = np.cumsum(hist[::-1])  # above[j]: count in the top j+1 bins
        j = int(np.searchsorted(above, rank))  # first j with above[j] >= rank
        b = (1 << BIN_BITS) - 1 - j
        rank -= int(above[j - 1]) if j else 0
        prefix = (prefix << BIN_BITS) | b
        prefix_bits += BIN_BITS
        in_bin = int(hist[b])
        if prefix_bits == 64 or in_bin == 1 or in_bin <= gather_max:
            if prefix_bits == 64:
                return key_to_float(prefix)
            # Pass 2: the bin's keys, sorted, from every file.
            keys = np.sort(np.concatenate([part for _, part in _map_files(
                client, partial(_file_pass, column=column, prefix=prefix, prefix_bits=prefix_bits, gather=True),
                score_files)]))
            return key_to_float(int(keys[keys.size - rank]))


# --------------------------------------------------------------------------- SemDeDup


@dataclass(frozen=True)
class SemDedupParams:
    """What decides SemDeDup's clusters (besides the candidates); part of its work-dir key."""

    threshold: float
    cluster_rows: int = 20_000  # target rows per k-means cluster: k = ceil(candidates / cluster_rows)
    group_rows: int = 50_000  # rows per decision task (whole clusters, in cluster order)
    sample_per_cluster: int = 256  # k-means sample = min(candidates, max_sample, k * this)
    max_sample: int = 100_000
    seed: int = 0
    niter: int = 20
    exact_max: int = 200_000  # models.semantic_dedup: exact range search up to this many rows


@dataclass
class SemDedupResult:
    """Where the per-shard decisions are, and the counters (small)."""

    dir: str
    counters: dict[str, Any] = field(default_factory=dict)

    def duplicates(self, shard_id: str, rows: int) -> list[str | None]:
        return read_duplicates(self.dir, shard_id, rows)


def read_duplicates(result_dir: str, shard_id: str, rows: int) -> list[str | None]:
    """``duplicate_of`` key per row of a shard (None: kept or not a candidate)."""
    out: list[str | None] = [None] * rows
    fs, p = url_to_fs(f"{result_dir.rstrip('/')}/decisions/{shard_id}")
    if not fs.exists(p):
        return out
    for f in sorted(fs.ls(p, detail=False)):
        if not f.endswith(".parquet") or f.rsplit("/", 1)[-1].startswith("."):
            continue
        with fs.open(f, "rb") as fh:
            t = pq.read_table(fh)
        for r, k in zip(t.column("row").to_pylist(), t.column("duplicate_of").to_pylist()):
            out[r] = k
    return out


def _load_rows_npy(path: str, rows: np.ndarray | None = None, lo: int = 0, hi: int | None = None) -> np.ndarray:
    """Rows of a 2-D ``.npy`` (a row range read by byte offsets; memory-mapped when local)."""
    from fsspec.implementations.local import LocalFileSystem

    fs, p = url_to_fs(path)
    if isinstance(fs, LocalFileSystem):
        arr = np.load(p, mmap_mode="r")
        return np.asarray(arr[rows] if rows is not None else arr[lo:hi])
    with fs.open(p, "rb") as fh:
        if rows is not None:
            return np.load(fh)[rows]
        version = np.lib.format.read_magic(fh)
        shape, fortran, dtype = np.lib.format._read_array_header(fh, version)  # noqa: SLF001 - numpy's own reader
        hi = shape[0] if hi is None else hi
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        fh.seek(fh.tell() + lo * row_bytes)
        buf = fh.read((hi - lo) * row_bytes)
        return np.frombuffer(buf, dtype=dtype).reshape((hi - lo, *shape[1:]))


def _sample_shard(scores_path: str, emb_path: str, mask: np.ndarray, fraction: float,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """About ``fraction`` of a shard's candidates, drawn by a seeded hash of the pair key
    (:func:`models.kmeans.sample_mask`): ``(hashes, embeddings)``, the same rows whatever file
    or position the run put them in."""
    from models.kmeans import key_hashes, sample_mask

    fs, p = url_to_fs(scores_path)
    with fs.open(p, "rb") as fh:
        keys = pq.read_table(fh, columns=["key"]).column("key").to_pylist()
    h = key_hashes(keys, seed)
    idx = np.flatnonzero(np.asarray(mask, dtype=bool) & sample_mask(h, fraction))
    emb = np.asarray(_load_rows_npy(emb_path, rows=idx), dtype=np.float32) if idx.size else np.zeros((0, 0), np.float32)
    return h[idx], emb


_ASSIGN_SCHEMA = pa.schema([("cluster", pa.int32()), ("row", pa.int32()), ("score", pa.float64()), ("key", pa.string())])
_DECISION_SCHEMA = pa.schema([("row", pa.int32()), ("duplicate_of", pa.string())])


def _assign_shard(scores_dir: str, emb_dir: str, score_column: str, centroids_path: str,
                  shard: Shard, mask: np.ndarray, out: ShardOutput) -> dict:
    """Assign a shard's candidates to clusters; write them sorted by (cluster, row)."""
    from models.kmeans import assign

    rows = np.flatnonzero(mask).astype(np.int32)
    cfs, cp = url_to_fs(centroids_path)
    with cfs.open(cp, "rb") as fh:
        centroids = np.load(fh)
    fs, p = url_to_fs(f"{scores_dir}/{shard.id}.parquet")
    with fs.open(p, "rb") as fh:
        t = pq.read_table(fh, columns=["key", score_column])
    emb = np.asarray(_load_rows_npy(f"{emb_dir}/{shard.id}.npy", rows=rows), dtype=np.float32) if rows.size \
        else np.zeros((0, centroids.shape[1]), np.float32)
    ids, _ = assign(emb, centroids) if rows.size else (np.zeros(0, np.int32), None)
    order = np.lexsort((rows, ids))
    ids, rows, emb = ids[order], rows[order], emb[order]
    scores = t.column(score_column).to_numpy(zero_copy_only=False).astype(np.float64)[rows] if rows.size else np.zeros(0)
    keys = t.column("key").take(pa.array(rows, pa.int32())) if rows.size else pa.array([], pa.string())
    table = pa.Table.from_arrays([pa.array(ids, pa.int32()), pa.array(rows, pa.int32()), pa.array(scores, pa.float64()),
                                  keys.cast(pa.string())], schema=_ASSIGN_SCHEMA)
    # One row group per cluster, so a decision task reads its clusters' rows only.
    present, counts = out.write_grouped("assign", table, ids, _ASSIGN_SCHEMA)
    out.write_array("emb", emb.astype(np.float16))
    return {"rows": int(rows.size), "clusters": present.tolist(), "counts": counts.tolist()}


def _decide_group(assign_dir: str, shard_ids: list[str], threshold: float, exact_max: int, _task: Shard,
                  group: list[tuple[int, list[tuple[int, int, int]]]], out: ShardOutput) -> dict:
    """SemDeDup inside each cluster of a group: ``group`` = [(cluster, [(shard idx, row group, emb row start)])]."""
    from models.semantic_dedup import semantic_dedup

    removed: dict[int, tuple[list[int], list[str]]] = {}
    links = comps = largest = 0
    for _cluster, parts in group:
        shard_of, row_of, score_of, key_of, embs = [], [], [], [], []
        for si, rg, start in parts:  # shard order: the stage-wide row order inside the cluster
            fs, p = url_to_fs(f"{assign_dir}/assign/{shard_ids[si]}.parquet")
            with fs.open(p, "rb") as fh:
                t = pq.ParquetFile(fh).read_row_group(rg)
            shard_of.append(np.full(t.num_rows, si, np.int64))
            row_of.append(t.column("row").to_numpy())
            score_of.append(t.column("score").to_numpy(zero_copy_only=False))
            key_of.extend(t.column("key").to_pylist())
            embs.append(_load_rows_npy(f"{assign_dir}/emb/{shard_ids[si]}.npy", lo=start, hi=start + t.num_rows))
        emb = np.concatenate(embs).astype(np.float32)
        largest = max(largest, emb.shape[0])
        res = semantic_dedup(emb, threshold, np.concatenate(score_of), exact_max=exact_max)
        links += res.n_links
        comps += res.n_components_with_duplicates
        shards_c, rows_c = np.concatenate(shard_of), np.concatenate(row_of)
        for j in np.flatnonzero(~res.keep).tolist():
            r, k = removed.setdefault(int(shards_c[j]), ([], []))
            r.append(int(rows_c[j]))
            k.append(key_of[int(res.duplicate_of[j])])
    n_removed = 0
    for si, (r, k) in removed.items():
        out.write_table(f"decisions/{shard_ids[si]}", pa.Table.from_arrays(
            [pa.array(r, pa.int32()), pa.array(k, pa.string())], schema=_DECISION_SCHEMA))
        n_removed += len(r)
    return {"links": links, "clusters_with_duplicates": comps, "removed": n_removed, "largest_cluster": largest}


def semdedup(client: Any, work_dir: str, shards: list[Shard], candidates: dict[str, np.ndarray], threshold: float,
             *, scores_dir: str | None = None, emb_dir: str | None = None, score_column: str = "clip_score",
             params: SemDedupParams | None = None) -> SemDedupResult:
    """SemDeDup over the candidate rows of ``shards`` (``candidates[shard.id]``: bool per row).

    Inputs are the score stage's work files: ``<work_dir>/pairs_scores/<shard>.parquet`` (``key``,
    ``score_column``) and ``<work_dir>/pairs_img/<shard>.npy`` (one unit embedding per row). The
    work (centroids, assignments, decisions) lives in ``<work_dir>/semdedup-<hash>`` keyed by the
    params and the candidate masks, so a rerun skips finished shards and groups. Returns the
    directory :func:`read_duplicates` reads and the counters (``candidates``, ``links``,
    ``clusters_with_duplicates``, ``removed`` as the single-process dedup reports, plus
    ``kmeans_clusters``, ``largest_cluster``, ``sample_rows``, ``groups``).
    """
    params = params or SemDedupParams(threshold)
    if params.threshold != threshold:
        params = SemDedupParams(**{**asdict(params), "threshold": threshold})
    scores_dir = scores_dir or f"{work_dir}/pairs_scores"
    emb_dir = emb_dir or f"{work_dir}/pairs_img"
    masks = {s.id: np.asarray(candidates.get(s.id, np.zeros(s.rows, bool)), dtype=bool) for s in shards}
    digest = hashlib.sha256(json.dumps(asdict(params), sort_keys=True).encode())
    for s in shards:
        digest.update(s.id.encode())
        digest.update(np.packbits(masks[s.id]).tobytes())
    sd_dir = f"{work_dir.rstrip('/')}/semdedup-{digest.hexdigest()[:16]}"
    n_cand = sum(int(m.sum()) for m in masks.values())
    counters: dict[str, Any] = {"candidates": n_cand, "links": 0, "clusters_with_duplicates": 0, "removed": 0}
    if n_cand < 2:
        return SemDedupResult(sd_dir, counters)

    # 1. k-means on a bounded sample (client), centroids saved so a rerun assigns with the same ones.
    k = max(1, math.ceil(n_cand / params.cluster_rows))
    fs, sd_path = url_to_fs(sd_dir)
    cpath = f"{sd_dir}/centroids.npy"
    if fs.exists(f"{sd_path}/centroids.npy"):
        with fs.open(f"{sd_path}/centroids.npy", "rb") as fh:
            centroids = np.load(fh)
        sample_rows = None
    else:
        from models.kmeans import fit_kmeans, in_hash_order

        want = min(n_cand, params.max_sample, max(k * params.sample_per_cluster, 1))
        parts = list(_gather_samples(client, shards, scores_dir, emb_dir, masks, want / n_cand, params.seed))
        sample = in_hash_order(parts)  # by key hash: independent of the file layout and of timing
        if sample.shape[0] == 0:  # a small draw can miss every row: take them all
            sample = in_hash_order(list(_gather_samples(client, shards, scores_dir, emb_dir, masks, 1.0, params.seed)))
        sample_rows = int(sample.shape[0])
        centroids = fit_kmeans(sample, k, params.seed, params.niter)
        del sample, parts
        fs.makedirs(sd_path, exist_ok=True)
        tmp = f"{sd_path}/.centroids.npy.tmp"
        with fs.open(tmp, "wb") as fh:
            np.save(fh, centroids)
        fs.mv(tmp, f"{sd_path}/centroids.npy")
    k = centroids.shape[0]

    # 2. Assignment per shard on the workers.
    assign_sum = run_shards(client, partial(_assign_shard, scores_dir, emb_dir, score_column, cpath),
                            shards, sd_dir, masks, desc="score:semdedup-assign")

    # 3. Decision tasks: whole clusters, grouped in cluster order up to group_rows rows.
    shard_ids = [s.id for s in shards]
    sizes = np.zeros(k, dtype=np.int64)
    where: dict[int, list[tuple[int, int, int]]] = {}
    for si, s in enumerate(shards):
        summ = assign_sum[s.id]
        start = 0
        for rg, (c, n) in enumerate(zip(summ["clusters"], summ["counts"])):
            sizes[c] += n
            where.setdefault(int(c), []).append((si, rg, start))
            start += n
    groups: list[list[tuple[int, list[tuple[int, int, int]]]]] = []
    cur: list = []
    cur_rows = 0
    for c in range(k):
        if sizes[c] < 2:
            continue
        if cur and cur_rows + sizes[c] > params.group_rows:
            groups.append(cur)
            cur, cur_rows = [], 0
        cur.append((c, where[c]))
        cur_rows += int(sizes[c])
    if cur:
        groups.append(cur)
    group_shards = [Shard(f"g{i:05d}", "", (), int(sum(sizes[c] for c, _ in g)), 0) for i, g in enumerate(groups)]
    dec_sum = run_shards(client, partial(_decide_group, sd_dir, shard_ids, threshold, params.exact_max),
                         group_shards, f"{sd_dir}/groups", {gs.id: g for gs, g in zip(group_shards, groups)},
                         desc="score:semdedup-clusters")
    for summ in dec_sum.values():
        for name in ("links", "clusters_with_duplicates", "removed"):
            counters[name] += int(summ[name])
    counters.update({
        "method": "semdedup", "kmeans_clusters": int(k), "largest_cluster": int(sizes.max()) if k else 0,
        "groups": len(groups), "sample_rows": sample_rows,
    })
    return SemDedupResult(f"{sd_dir}/groups", counters)


def _gather_samples(client: Any, shards: list[Shard], scores_dir: str, emb_dir: str, masks: dict[str, np.ndarray],
                    fraction: float, seed: int):
    todo = [s for s in shards if masks[s.id].any()]
    args = [(f"{scores_dir}/{s.id}.parquet", f"{emb_dir}/{s.id}.npy", masks[s.id], fraction, seed) for s in todo]
    if client is None:
        for a in args:
            yield _sample_shard(*a)
        return
    futs = [client.submit(_sample_shard, *a, pure=False) for a in args]
    for f in futs:
        yield f.result()
        f.release()


def split_links(emb: np.ndarray, cluster_ids: np.ndarray, threshold: float) -> dict[str, int]:
    """How many near-duplicate links (cosine >= threshold) join rows of different clusters.

    Those are the links SemDeDup does not see and one global range search does.
    """
    from models.semantic_dedup import similar_pairs

    a, b = similar_pairs(emb, threshold)
    split = int((np.asarray(cluster_ids)[a] != np.asarray(cluster_ids)[b]).sum())
    return {"links": int(a.size), "split_links": split}
