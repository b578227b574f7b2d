"""Benchmark: the score stage's global steps distributed (pipelines/score_global.py) against the
single-process steps they replaced. Prints one JSON object.

- ``cutoff``: DataComp's top-fraction cut from the two-pass histogram refinement
  (``exact_top_fraction_cutoff``: the client holds one 2^16-bin histogram and one bin's keys)
  against the exact cut over the gathered scores (``filters.pairs.top_fraction_cutoff``): equal
  or not, and seconds.
- ``semdedup``: SemDeDup (k-means, then the near-duplicate search inside each cluster) against
  one global range search over all embeddings (``models.semantic_dedup.semantic_dedup``, what the
  stage did before): seconds, rows removed by each, and whether SemDeDup's removals are a subset
  of the global search's (a per-cluster search can only miss links, never add one).
- ``split_links``: the share of near-duplicate links (cosine >= threshold) whose two rows land in
  different k-means clusters (what SemDeDup cannot see), at several k, on the sample run's image
  embeddings (``--run``: a run directory holding ``score/embeddings/image/*.npy``; skipped when
  none is found) and on synthetic topic embeddings with planted near copies.

Nothing here is tuned: the synthetic data and every setting are fixed, seeded, and reported.

Usage: python bench/score_global.py [--run out/<snapshot>] [--rows 60000] [--shards 12] [--threshold 0.95]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.dask_cluster import Shard  # noqa: E402
from filters.pairs import top_fraction_cutoff  # noqa: E402
from models.kmeans import assign, fit_kmeans  # noqa: E402
from models.semantic_dedup import semantic_dedup  # noqa: E402
from pipelines.score_global import (  # noqa: E402
    SemDedupParams, exact_top_fraction_cutoff, read_duplicates, semdedup, split_links)


@contextmanager
def timed(out: dict, name: str):
    """``out[name + "_seconds"]`` (wall) and ``out[name + "_cpu_seconds"]`` (this process, all threads):
    on a shared machine the wall time includes waiting for a core, the CPU time does not."""
    w, c = time.perf_counter(), time.process_time()
    yield
    out[f"{name}_seconds"] = round(time.perf_counter() - w, 3)
    out[f"{name}_cpu_seconds"] = round(time.process_time() - c, 3)


def topic_embeddings(rng: np.random.Generator, n: int, d: int, topics: int, noise: float = 0.6) -> np.ndarray:
    """Unit vectors around ``topics`` random directions (a web crawl's embeddings cluster by subject)."""
    centres = rng.normal(size=(topics, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    emb = centres[rng.integers(topics, size=n)] + noise * rng.normal(size=(n, d)) / np.sqrt(d)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def near_copies(rng: np.random.Generator, emb: np.ndarray, rows: np.ndarray, noise: float = 0.15) -> np.ndarray:
    """Copies of ``emb[rows]`` nudged by a little noise (cosine ~0.97-0.99 to their source)."""
    cp = emb[rows] + noise * rng.normal(size=(rows.size, emb.shape[1])) / np.sqrt(emb.shape[1])
    return cp / np.linalg.norm(cp, axis=1, keepdims=True)


def cutoff_and_semdedup(rows: int, dim: int, n_shards: int, threshold: float, fraction: float,
                        cluster_rows: int, seed: int) -> dict:
    """The distributed cut and SemDeDup on synthetic shards laid out as the score stage's work dir."""
    rng = np.random.default_rng(seed)
    emb = topic_embeddings(rng, rows, dim, 300)
    cp = rng.choice(rows, rows // 10, replace=False)
    half = cp.size // 2
    emb[cp[:half]] = near_copies(rng, emb, cp[half:2 * half])  # 5% of rows: near copies of another 5%
    scores = rng.normal(0.3, 0.05, rows).astype(np.float32)
    root = Path(tempfile.mkdtemp(prefix="bench-score-global-"))
    try:
        (root / "pairs_scores").mkdir()
        (root / "pairs_img").mkdir()
        shards = []
        for j in range(n_shards):
            lo, hi = j * rows // n_shards, (j + 1) * rows // n_shards
            pq.write_table(pa.table({"key": [f"k{i}" for i in range(lo, hi)], "clip_score": scores[lo:hi]}),
                           root / "pairs_scores" / f"s{j}.parquet")
            np.save(root / "pairs_img" / f"s{j}.npy", emb[lo:hi].astype(np.float16))  # as the stage stores them
            shards.append(Shard(f"s{j}", "", (0,), hi - lo, lo))
        files = [str(root / "pairs_scores" / f"s{j}.parquet") for j in range(n_shards)]
        out: dict = {"split": "synthetic (seeded, no tuning)", "rows": rows, "dim": dim, "shards": n_shards,
                     "threshold": threshold, "fraction": fraction}
        with timed(out, "cutoff"):
            cut = exact_top_fraction_cutoff(None, files, "clip_score", fraction)
        with timed(out, "gathered_cutoff"):
            exact = top_fraction_cutoff(scores.astype(np.float64), fraction)
        out["cutoff"] = float(cut)
        out["cutoff_equal"] = bool(cut == exact)

        masks = {s.id: np.ones(s.rows, bool) for s in shards}
        with timed(out, "semdedup"):
            res = semdedup(None, str(root), shards, masks, threshold,
                           params=SemDedupParams(threshold, cluster_rows=cluster_rows))
        out["semdedup_counters"] = res.counters
        f16 = emb.astype(np.float16).astype(np.float32)
        with timed(out, "global"):
            g = semantic_dedup(f16, threshold, scores.astype(np.float64))
        dup = [x for s in shards for x in read_duplicates(res.dir, s.id, s.rows)]
        mine = np.array([x is not None for x in dup])
        out["removed_global"] = int((~g.keep).sum())
        out["removed_semdedup"] = int(mine.sum())
        out["semdedup_removed_subset_of_global"] = bool((mine & g.keep).sum() == 0)
        return out
    finally:
        shutil.rmtree(root, ignore_errors=True)


def split_share(emb: np.ndarray, ks: list[int], threshold: float, seed: int = 0, sample: int | None = None) -> dict:
    """Per k: links, links split across clusters (and their share), rows removed by the global search
    and by a per-cluster search, the largest cluster."""
    emb = emb.astype(np.float32)
    removed_global = int((~semantic_dedup(emb, threshold).keep).sum())
    out = {}
    for k in ks:
        rng = np.random.default_rng(seed)
        fit_on = emb if sample is None or sample >= len(emb) else emb[rng.choice(len(emb), sample, replace=False)]
        ids, _ = assign(emb, fit_kmeans(fit_on, k, seed))
        links = split_links(emb, ids, threshold)
        keep = np.ones(len(emb), bool)
        for c in np.unique(ids):
            idx = np.flatnonzero(ids == c)
            keep[idx[~semantic_dedup(emb[idx], threshold).keep]] = False
        out[str(k)] = {**links, "split_share": round(links["split_links"] / links["links"], 4) if links["links"] else None,
                       "removed_global": removed_global, "removed_semdedup": int((~keep).sum()),
                       "largest_cluster": int(np.bincount(ids).max())}
    return out


def sample_embeddings(run: str | None) -> tuple[np.ndarray | None, str | None]:
    """The image embeddings a score stage wrote under ``run`` (else the first ``out/*`` run with them)."""
    patterns = [f"{run}/score/embeddings/image/*.npy"] if run else ["out/*/score/embeddings/image/*.npy"]
    for pat in patterns:
        files = sorted(glob.glob(pat))
        if files:
            return np.concatenate([np.load(f) for f in files]), str(Path(files[0]).parents[3])
    return None, None


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--run", default=None, help="a run directory with score/embeddings/image/*.npy (the sample run)")
    ap.add_argument("--rows", type=int, default=60000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--shards", type=int, default=12)
    ap.add_argument("--threshold", type=float, default=0.95)
    ap.add_argument("--fraction", type=float, default=0.3)
    ap.add_argument("--cluster-rows", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    result: dict = {"bench": "score_global", "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                                      "load_avg_1m": round(os.getloadavg()[0], 2)}}
    result["cutoff_and_semdedup"] = cutoff_and_semdedup(args.rows, args.dim, args.shards, args.threshold,
                                                        args.fraction, args.cluster_rows, args.seed)
    emb, run = sample_embeddings(args.run)
    if emb is None:
        result["split_links_sample"] = {"skipped": "no run with score/embeddings/image/*.npy (pass --run)"}
    else:
        result["split_links_sample"] = {"split": f"sample run embeddings ({run})", "rows": int(len(emb)),
                                        "dim": int(emb.shape[1]), "threshold": args.threshold,
                                        "by_k": split_share(emb, [2, 4, 8], args.threshold, args.seed)}
    rng = np.random.default_rng(args.seed)
    n, d = 20000, 64
    base = topic_embeddings(rng, n, d, 200)
    syn = np.concatenate([base, near_copies(rng, base, rng.choice(n, n // 5, replace=False))])
    result["split_links_synthetic"] = {"split": "synthetic: 20k rows around 200 topics + 4k near copies (seeded)",
                                       "rows": int(len(syn)), "dim": d, "threshold": args.threshold,
                                       "by_k": split_share(syn, [10, 50, 200], args.threshold, args.seed, sample=20000)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
