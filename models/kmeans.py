"""Spherical k-means over unit embeddings (faiss), fitted once on a bounded sample.

Why here: SemDeDup (pipelines/score_global.py) and the image-based filter (DataComp's
"image-based" baseline) both cluster CLIP image embeddings and then assign every row to its
nearest centroid. The fit runs on the Dask client over a bounded sample (so the client's memory
does not grow with the run); :func:`assign` is cheap and runs per shard on the workers.

Initial centroids: greedy k-means++ (as scikit-learn: ``2 + log k`` candidates per step, the one
that lowers the potential most), drawn with ``numpy.random.default_rng(seed)`` on at most
``_INIT_FLOPS``' worth of the sample; faiss's default (k random rows) leaves two centroids in one
tight cluster and none in another in most seeds on well-separated data (measured: 15 of 20 seeds
on 5 clusters of 50 rows, 0 of 20 with this init). Then faiss's Lloyd iterations.

Deterministic for a seed: the init is seeded, and the fit runs single-threaded (``faiss.omp_set_num_threads(1)`` for the call) because
OpenMP reductions in a different thread count can move a centroid in the last bits, and the
sample is small enough that one thread is fast. Spherical: centroids are re-normalised after each
iteration, so inner product = cosine, as SemDeDup clusters unit vectors.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np


def unit_f32(x: np.ndarray) -> np.ndarray:
    """float32, contiguous, rows of norm 1 (zero rows stay zero; float16 storage leaves norms ~1e-3
    off 1, so stored embeddings are re-normalised too). Shared with models/semantic_dedup.py."""
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim != 2:
        raise ValueError(f"embeddings must be (n, dim), got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(np.divide(x, norms, out=np.zeros_like(x), where=norms > 0))


def key_hashes(keys, seed: int) -> np.ndarray:
    """A seeded 64-bit hash of each row's key (uint64): what :func:`sample_mask` draws by."""
    import hashlib

    return np.fromiter((int.from_bytes(hashlib.blake2b(f"{seed}:{k}".encode(), digest_size=8).digest(), "little")
                        for k in keys), dtype=np.uint64, count=len(keys))


def sample_mask(hashes: np.ndarray, fraction: float) -> np.ndarray:
    """The rows whose key hash falls under ``fraction`` of the hash range: about ``fraction`` of them.

    Why by key and not by position: the rows a sample holds, and (sorted by hash, see
    :func:`in_hash_order`) their order, then depend only on the rows, not on how a run laid them
    out in files. Spark's writes put the same rows in other part files and another order from one
    run to the next (measured: 379/161 vs 378/162 images in two parts), and a k-means fitted on a
    positional sample moved with them (the image-based step kept 434 of 480 pairs in one run and
    443 in the other, on identical rows).
    """
    if fraction >= 1.0:
        return np.ones(hashes.shape[0], dtype=bool)
    return hashes < np.uint64(min(2**64 - 1, int(max(0.0, fraction) * 2.0**64)))


def in_hash_order(parts: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The sampled rows of every shard, ``(hashes, embeddings)`` each, as one array ordered by key hash."""
    parts = [(h, e) for h, e in parts if h.size]
    if not parts:
        return np.zeros((0, 0), np.float32)
    h = np.concatenate([p[0] for p in parts])
    e = np.concatenate([np.asarray(p[1], dtype=np.float32) for p in parts])
    return np.ascontiguousarray(e[np.argsort(h, kind="stable")])


_INIT_FLOPS = 4e9  # bounds the k-means++ init to a few seconds whatever k and the sample


def _kmeanspp(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Greedy k-means++ seeds (rows of ``x``, unit vectors; squared distance = 2 - 2 cos)."""
    rng = np.random.default_rng(seed)
    n, d = x.shape
    trials = 2 + int(np.log(k))
    rows = min(n, max(k, int(_INIT_FLOPS // (k * trials * d))))
    if rows < n:
        x = x[np.sort(rng.choice(n, size=rows, replace=False))]
        n = rows
    x64 = x.astype(np.float64)
    chosen = [int(rng.integers(n))]
    d2 = np.maximum(0.0, 2.0 - 2.0 * (x64 @ x64[chosen[0]]))
    for _ in range(1, k):
        total = float(d2.sum())
        cand = rng.choice(n, size=trials, p=d2 / total) if total > 0 else rng.integers(n, size=trials)
        new = np.minimum(d2[None, :], np.maximum(0.0, 2.0 - 2.0 * (x64[cand] @ x64.T)))
        best = int(np.argmin(new.sum(axis=1)))
        chosen.append(int(cand[best]))
        d2 = new[best]
    return np.ascontiguousarray(x[chosen])


@contextmanager
def _one_thread():
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def fit_kmeans(sample: np.ndarray, k: int, seed: int, niter: int = 20) -> np.ndarray:
    """(k', dim) float32 unit centroids of ``sample``; ``k' = min(k, n)`` (never an empty cluster).

    The same sample and seed give the same centroids, bit for bit. ``k`` larger than the number of
    distinct rows is cut to ``n`` so faiss does not warn about (or fail on) too few points.
    """
    import faiss

    emb = unit_f32(sample)
    n, d = emb.shape
    if n == 0:
        raise ValueError("fit_kmeans: empty sample")
    if k < 1:
        raise ValueError(f"fit_kmeans: k must be >= 1, got {k}")
    k = min(int(k), n)
    if k == 1:
        c = emb.mean(axis=0, keepdims=True)
        return unit_f32(c)
    km = faiss.Kmeans(d, k, niter=int(niter), seed=int(seed), spherical=True, verbose=False,
                      min_points_per_centroid=1, max_points_per_centroid=max(256, -(-n // k)))
    with _one_thread():
        km.train(emb, init_centroids=_kmeanspp(emb, k, seed))
    return unit_f32(km.centroids.reshape(k, d))


def assign(emb: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cluster id int32, cosine to that centroid float32) of each row; ties go to the lowest id.

    Exact brute force in numpy (rows x k matrix product, in chunks so memory stays bounded): an
    approximate index could put a row in a different cluster on another machine.
    """
    x = unit_f32(emb)
    c = unit_f32(centroids)
    n = x.shape[0]
    if x.shape[1] != c.shape[1]:
        raise ValueError(f"assign: dim {x.shape[1]} != centroid dim {c.shape[1]}")
    ids = np.zeros(n, dtype=np.int32)
    cos = np.zeros(n, dtype=np.float32)
    chunk = max(1, (1 << 24) // max(1, c.shape[0]))
    for lo in range(0, n, chunk):
        sims = x[lo:lo + chunk] @ c.T
        best = np.argmax(sims, axis=1)  # first maximum = lowest id on ties
        ids[lo:lo + chunk] = best
        cos[lo:lo + chunk] = sims[np.arange(len(best)), best]
    return ids, cos
