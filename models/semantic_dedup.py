"""Semantic near-duplicate removal and eval-set decontamination over CLIP image embeddings (faiss).

- :func:`semantic_dedup`: every pair of rows whose image embeddings have cosine >= ``threshold``
  is linked; each connected component keeps one row (highest ``priority``, e.g. clip_score; ties
  to the lowest index) and the others are duplicates *of it*. Links come from a faiss range
  search: exact (``IndexFlatIP``) up to ``exact_max`` rows, an inverted-file index
  (``IndexIVFFlat``, a few probes) above, which may miss a few links but never invents one.
  Components are transitive (A~B, B~C puts A and C together), as in SemDeDup's clusters.
- :class:`EvalIndex`: DataComp-style decontamination: a training image is contaminated when its
  embedding is within ``threshold`` cosine of any image of the evaluation set. The eval
  embeddings come from a directory of images, a Parquet file/dataset with an ``image`` column
  (encoded with the same CLIP as the training images), or a ``.npy`` of unit vectors.

faiss-cpu here; ``faiss-gpu`` by extra has the same API (indexes can be moved with
``faiss.index_cpu_to_all_gpus``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.kmeans import unit_f32

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


def _range_index(emb: np.ndarray, exact_max: int):
    import faiss

    n, d = emb.shape
    if n <= exact_max:
        index = faiss.IndexFlatIP(d)
    else:
        nlist = int(min(4 * np.sqrt(n), n // 39 or 1))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        train = emb[rng.choice(n, size=min(n, 256 * nlist), replace=False)]
        index.train(train)
        index.nprobe = 8
    index.add(emb)
    return index


def similar_pairs(emb: np.ndarray, threshold: float, exact_max: int = 200_000, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``(i, j)``, ``i < j``, whose cosine is at least ``threshold`` (rows are unit vectors)."""
    emb = unit_f32(emb)
    n = emb.shape[0]
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    index = _range_index(emb, exact_max)
    # faiss range search keeps inner products strictly above the radius; step just below it.
    radius = float(np.nextafter(np.float32(threshold), np.float32(-np.inf)))
    src, dst = [], []
    for lo in range(0, n, chunk):
        lims, _, ids = index.range_search(emb[lo:lo + chunk], radius)
        counts = np.diff(lims).astype(np.int64)
        rows = np.repeat(np.arange(lo, lo + len(counts)), counts)
        keep = ids > rows
        src.append(rows[keep])
        dst.append(ids[keep].astype(np.int64))
    return np.concatenate(src), np.concatenate(dst)


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected-component label (smallest member index) of each of ``n`` nodes."""
    parent = np.arange(n)

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for i, j in zip(a.tolist(), b.tolist()):
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    return np.array([find(i) for i in range(n)], dtype=np.int64)


@dataclass
class DedupResult:
    keep: np.ndarray  # bool per row
    duplicate_of: np.ndarray  # index of the kept row of its component; -1 for kept rows
    n_links: int
    n_components_with_duplicates: int


def semantic_dedup(emb: np.ndarray, threshold: float, priority: np.ndarray | None = None,
                   exact_max: int = 200_000) -> DedupResult:
    """Keep one row per component of near-duplicate images (cosine >= ``threshold``)."""
    emb = unit_f32(emb)
    n = emb.shape[0]
    prio = np.zeros(n) if priority is None else np.nan_to_num(np.asarray(priority, dtype=np.float64), nan=-np.inf)
    a, b = similar_pairs(emb, threshold, exact_max)
    labels = _components(n, a, b)
    # Winner per component: highest priority, then lowest index.
    order = np.lexsort((np.arange(n), -prio, labels))
    first = np.ones(n, dtype=bool)
    first[1:] = labels[order][1:] != labels[order][:-1]
    winner_of_label = dict(zip(labels[order][first].tolist(), order[first].tolist()))
    winners = np.array([winner_of_label[label] for label in labels.tolist()], dtype=np.int64)
    keep = winners == np.arange(n)
    duplicate_of = np.where(keep, -1, winners)
    n_dup_components = len({int(w) for w in winners[~keep]})
    return DedupResult(keep, duplicate_of, int(a.size), n_dup_components)


class EvalIndex:
    """Nearest evaluation image of each training image (exact inner product over unit vectors)."""

    def __init__(self, eval_embeddings: np.ndarray):
        import faiss

        emb = unit_f32(eval_embeddings)
        self.size = emb.shape[0]
        self.index = faiss.IndexFlatIP(emb.shape[1])
        if self.size:
            self.index.add(emb)

    def nearest(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cosine to the nearest eval image, its index); (-inf, -1) when the eval set is empty."""
        emb = unit_f32(emb)
        if not self.size or not emb.shape[0]:
            return np.full(emb.shape[0], -np.inf, dtype=np.float32), np.full(emb.shape[0], -1, dtype=np.int64)
        sims, ids = self.index.search(emb, 1)
        return sims[:, 0], ids[:, 0]

    def contaminated(self, emb: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mask of rows with cosine >= threshold to some eval image, those cosines, eval indices)."""
        sims, ids = self.nearest(emb)
        return sims >= threshold, sims, ids


def load_eval_embeddings(path: str, scorer) -> np.ndarray:
    """Unit embeddings of an evaluation set: image directory, Parquet (``image`` column) or ``.npy``.

    Images are encoded with ``scorer`` (the same model as the training images; embeddings of
    another model are not comparable). A ``.npy`` must already hold unit vectors of that model.
    Images that cannot be decoded are skipped with a warning (they cannot match anything).
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"decontamination eval set not found: {path}")
    if p.suffix == ".npy":
        emb = np.load(p).astype(np.float32)
        if emb.ndim != 2:
            raise ValueError(f"{path}: expected an (n, dim) array of embeddings, got shape {emb.shape}")
        return emb
    if p.is_dir() and not any(f.suffix == ".parquet" for f in p.iterdir()):
        files = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        blobs = [f.read_bytes() for f in files]
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(p, columns=["image"])
        blobs = table.column("image").to_pylist()
    res = scorer.encode_images(blobs)
    if (~res.ok).any():
        log.warning("decontamination eval set %s: %d of %d images could not be decoded and are skipped",
                    path, int((~res.ok).sum()), len(blobs))
    return res.embeddings[res.ok]
