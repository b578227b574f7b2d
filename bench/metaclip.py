"""Benchmark of MetaCLIP's metadata matching and balancing on real captions; prints one JSON object.

Input: the 1,000 real LAION-style alt-text captions of ``shared/realdata/laion/`` (img2dataset's
``test_1000.parquet``, column ``TEXT``) and the shipped WordNet-derived metadata
(``filters/resources/metaclip_wordnet30.txt``, 86,654 entries; ``--metadata`` for another list,
e.g. MetaCLIP's 500k ``metadata.json``).

1. Throughput, captions/s per core (CPU seconds of this one process, and wall seconds):
   - ``matcher``: :meth:`filters.metaclip.MetadataMatcher.match` over the whole Arrow column
     repeated ``--replicate`` times (20,000 captions: a 2 ms run would time the clock, not the
     matcher), Aho-Corasick, one haystack per batch; automaton build time reported apart;
   - ``per_caption_automaton``: MetaCLIP's own ``substr_matching`` loop shape (the same
     automaton, ``spacing`` and ``automaton.iter`` per caption, a set of ids);
   - ``python_loop``: the plain Python substring loop ``[e for e in entries if e in caption]``
     (padded entries in the spaced caption, i.e. the same rule) on the first ``--loop-captions``.
   All three must give the same ids on the captions they share (``agree``). Target: matcher >=
   10x the Python loop.
2. The entry-count distribution on these captions: matched share, distinct entries matched,
   head entries, tail entries, and for several ``t`` the kept share drawn with seeds
   0..``--seeds``-1 (mean, min, max) next to its expectation under MetaCLIP's probabilities
   (sum over pairs of ``1 - prod(1 - p_e)``). Nothing is tuned here: every number is on all
   1,000 captions.

Usage: python bench/metaclip.py [--metadata FILE] [--t 5 20 100] [--repeats 5] [--loop-captions 200]
CPU only.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute  # noqa: E402,F401  (pa.compute)
import pyarrow.parquet as pq  # noqa: E402

from filters.metaclip import (  # noqa: E402
    MetadataMatcher,
    balance_keep,
    default_metadata_path,
    entry_counts,
    entry_probabilities,
    load_metadata,
    spacing,
)

REALDATA = Path(os.environ.get("REALDATA_DIR", ROOT / ".." / "shared" / "realdata")).resolve()
LAION = REALDATA / "laion" / "img2dataset_test_1000.parquet"


def timed(fn, repeats: int):
    """(result, best wall seconds, best CPU seconds) over ``repeats`` runs."""
    best_wall = best_cpu = float("inf")
    out = None
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        best_wall = min(best_wall, time.perf_counter() - w)
        best_cpu = min(best_cpu, time.process_time() - c)
    return out, best_wall, best_cpu


def _spread(ids: np.ndarray, k: int) -> np.ndarray:
    return ids[np.unique(np.linspace(0, len(ids) - 1, k).astype(int))] if len(ids) else ids


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--metadata", default=str(default_metadata_path()))
    ap.add_argument("--t", type=int, nargs="+", default=[5, 20, 100])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--loop-captions", type=int, default=200)
    ap.add_argument("--head", type=int, default=15)
    ap.add_argument("--replicate", type=int, default=20, help="time the automaton paths on the captions repeated R times")
    args = ap.parse_args(argv)

    captions = pq.read_table(LAION, columns=["TEXT"]).column("TEXT").combine_chunks()
    cap_list = captions.to_pylist()
    n = len(cap_list)
    entries = load_metadata(args.metadata)
    spaced_entries = [f" {e} " for e in entries]

    matcher = MetadataMatcher(entries)
    w, c = time.perf_counter(), time.process_time()
    automaton = matcher.automaton
    build = {"wall_s": round(time.perf_counter() - w, 3), "cpu_s": round(time.process_time() - c, 3)}

    big = pa.concat_arrays([captions] * args.replicate)
    big_list = cap_list * args.replicate
    n_big = len(big_list)
    big_matches, m_wall, m_cpu = timed(lambda: matcher.match(big), args.repeats)
    matches = matcher.match(captions)

    def per_caption():
        out = []
        for cap in big_list:
            ids = {v for _, v in automaton.iter(spacing(cap))} if cap else set()
            out.append(sorted(ids))
        return out

    per_cap, p_wall, p_cpu = timed(per_caption, args.repeats)

    k = min(args.loop_captions, n)

    def python_loop():
        out = []
        for cap in cap_list[:k]:
            spaced = spacing(cap) if cap else ""
            out.append([i for i, e in enumerate(spaced_entries) if e in spaced])
        return out

    loop, l_wall, l_cpu = timed(python_loop, 1)
    got = matches.to_pylist()
    agree = got == per_cap[:n] and got[:k] == loop and big_matches.to_pylist()[:n] == got

    def rate(count, secs):
        return round(count / secs, 1) if secs > 0 else None

    throughput = {
        "matcher": {"captions": n_big, "captions_per_s_cpu": rate(n_big, m_cpu), "captions_per_s_wall": rate(n_big, m_wall)},
        "per_caption_automaton": {"captions": n_big, "captions_per_s_cpu": rate(n_big, p_cpu), "captions_per_s_wall": rate(n_big, p_wall)},
        "python_loop": {"captions": k, "captions_per_s_cpu": rate(k, l_cpu), "captions_per_s_wall": rate(k, l_wall)},
        "speedup_vs_python_loop_cpu": round((n_big / m_cpu) / (k / l_cpu), 1),
        "speedup_vs_per_caption_automaton_cpu": round(p_cpu / m_cpu, 2),
        "automaton_build": build,
        "agree": agree,
    }

    counts = entry_counts(matches, len(entries))
    lens = np.diff(matches.offsets.to_numpy())
    order = np.argsort(-counts, kind="stable")
    matched_entries = int((counts > 0).sum())
    distribution = {
        "captions": n,
        "null_or_empty_captions": int(sum(1 for x in cap_list if not x)),
        "matched_share": round(float((lens > 0).mean()), 4),
        # Not MetaCLIP's rule (it is case-sensitive): how much Title Case alt text costs a
        # lower-case metadata list such as WordNet's.
        "matched_share_if_captions_lowercased": round(float(
            (np.diff(matcher.match(pa.compute.utf8_lower(captions)).offsets.to_numpy()) > 0).mean()), 4),
        "matches_per_caption_mean": round(float(lens.mean()), 2),
        "matches_per_matched_caption_median": float(np.median(lens[lens > 0])) if (lens > 0).any() else 0.0,
        "distinct_entries_matched": matched_entries,
        "entries_matched_once": int((counts == 1).sum()),
        "entries_matched_2_to_5": int(((counts >= 2) & (counts <= 5)).sum()),
        "head": [[entries[i], int(counts[i])] for i in order[: args.head] if counts[i] > 0],
        # Ten entries matched exactly once, evenly spaced over the (sorted) list.
        "tail_sample": [entries[i] for i in _spread(np.flatnonzero(counts == 1), 10)],
    }

    keys = pa.array([f"laion-{i:04d}" for i in range(n)])
    flat_rows = np.repeat(np.arange(n), lens)
    flat_vals = matches.values.to_numpy().astype(np.int64)
    balance = []
    for t in args.t:
        p = entry_probabilities(counts, t)
        miss = np.ones(n)
        np.multiply.at(miss, flat_rows, 1.0 - p[flat_vals])
        expected = float(np.where(lens > 0, 1.0 - miss, 0.0).mean())
        shares = [float(balance_keep(keys, matches, counts, t, s).mean()) for s in range(args.seeds)]
        balance.append({
            "t": t,
            "head_entries_over_t": int((counts > t).sum()),
            "kept_share_mean": round(float(np.mean(shares)), 4),
            "kept_share_min": round(min(shares), 4),
            "kept_share_max": round(max(shares), 4),
            "kept_share_expected": round(expected, 4),
            "kept_share_of_matched": round(float(np.mean(shares)) / max(distribution["matched_share"], 1e-12), 4),
        })

    return {
        "bench": "metaclip",
        "input": str(LAION.name),
        "metadata": Path(args.metadata).name,
        "metadata_entries": len(entries),
        "seeds": args.seeds,
        "throughput": throughput,
        "distribution": distribution,
        "balance": balance,
        "python": platform.python_version(),
        "cpus_visible": os.cpu_count(),
    }


if __name__ == "__main__":
    print(json.dumps(main(), ensure_ascii=False))
