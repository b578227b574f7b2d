"""Independent references the dedup tests compare the Spark job against.

- :func:`datasketch_near_dup_keep`: near-duplicate removal with datasketch's ``MinHash`` and
  ``MinHashLSH`` (same scheme, seed, permutations, bands x rows as the job), candidates
  verified by exact Jaccard like the job, components by a plain union-find, one document kept
  per component by the job's rule. Single-machine, quadratic where it may be: a reference,
  not the pipeline.
- :func:`pair_quality`: precision/recall of duplicate pairs against true Jaccard.
"""
from __future__ import annotations

import itertools
import json
from datetime import datetime

import numpy as np

from curation.config import DedupConfig
from curation.minhash import MinHasher, jaccard, shingles


def doc_text(doc: dict) -> str:
    """The text the job hashes: non-empty text positions joined by newlines."""
    return "\n".join(t for t in (doc["texts"] or []) if t)


def _date(doc: dict) -> float | None:
    try:
        raw = json.loads(doc["general_metadata"] or "{}").get("warc_date")
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp() if raw else None
    except (ValueError, AttributeError):
        return None


def keep_order(doc: dict) -> tuple:
    """The job's keeper rule: longest text, then latest warc_date (missing last), then smallest id."""
    d = _date(doc)
    return (-len(doc_text(doc)), d is None, -(d or 0.0), doc["doc_id"])


def datasketch_near_dup_keep(docs: list[dict], cfg: DedupConfig) -> tuple[set[str], dict[str, str]]:
    """(kept doc ids, removed id -> kept id of its component) by datasketch, same parameters as ``cfg``."""
    import datasketch

    num_perm = cfg.num_bands * cfg.rows_per_band
    hasher = MinHasher(num_perm, cfg.ngram_size, cfg.seed, scheme=cfg.minhash_scheme)
    lsh = datasketch.MinHashLSH(num_perm=num_perm, params=(cfg.num_bands, cfg.rows_per_band))
    sh, mh = {}, {}
    for doc in docs:
        s = shingles(doc_text(doc), cfg.ngram_size)
        if not len(s):
            continue  # no words: nothing to compare (the job leaves these to the no_text step)
        m = datasketch.MinHash(num_perm=num_perm, seed=cfg.seed, scheme=cfg.minhash_scheme, hashfunc=lambda v: v)
        m.update_batch([int(v) for v in hasher.hash_inputs(s)])
        lsh.insert(doc["doc_id"], m)
        sh[doc["doc_id"]], mh[doc["doc_id"]] = s, m
    parent = {d["doc_id"]: d["doc_id"] for d in docs}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for doc_id, m in mh.items():
        for other in lsh.query(m):
            if other == doc_id:
                continue
            if not cfg.verify_jaccard or jaccard(sh[doc_id], sh[other]) >= cfg.jaccard_threshold:
                parent[find(other)] = find(doc_id)
    by_id = {d["doc_id"]: d for d in docs}
    groups: dict[str, list[str]] = {}
    for d in docs:
        groups.setdefault(find(d["doc_id"]), []).append(d["doc_id"])
    kept, dup_of = set(), {}
    for members in groups.values():
        keeper = min(members, key=lambda i: keep_order(by_id[i]))
        kept.add(keeper)
        dup_of.update({i: keeper for i in members if i != keeper})
    return kept, dup_of


def pair_quality(ids: list[str], texts: list[str], group_of: dict[str, str], edges: set[tuple[str, str]] | None,
                 threshold: float = 0.8, ngram: int = 5) -> dict[str, float]:
    """Pair precision/recall at true Jaccard >= ``threshold``.

    ``group_of`` maps every id to the id it was deduplicated into (itself when kept). A pair is
    *detected* when both ends land in the same group. ``edges`` are the verified near-duplicate
    pairs the job linked directly. Returns recall (true pairs detected), edge precision (linked
    pairs that are true) and group precision (co-grouped pairs that are true; lower by nature,
    since components are transitive).
    """
    sh = [shingles(t, ngram) for t in texts]
    truth = {}
    for i, j in itertools.combinations(range(len(ids)), 2):
        if len(np.intersect1d(sh[i], sh[j], assume_unique=True)):
            truth[tuple(sorted((ids[i], ids[j])))] = jaccard(sh[i], sh[j])
    positives = {p for p, v in truth.items() if v >= threshold}
    grouped = {tuple(sorted(p)) for p in itertools.combinations(ids, 2) if group_of[p[0]] == group_of[p[1]]}
    out = {
        "positives": len(positives),
        "recall": sum(1 for p in positives if p in grouped) / max(1, len(positives)),
        "group_pairs": len(grouped),
        "group_precision": sum(1 for p in grouped if truth.get(p, 0.0) >= threshold) / max(1, len(grouped)),
    }
    if edges is not None:
        out["edges"] = len(edges)
        out["edge_precision"] = sum(1 for e in edges if truth.get(e, 0.0) >= threshold) / max(1, len(edges))
        out["edge_recall"] = len(edges & positives) / max(1, len(positives))
    return out
