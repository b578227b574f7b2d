"""``curate score``: CLIP scores and embeddings, pair filters, MMC4 documents, semantic dedup (Dask).

Inputs (the image stage's outputs): ``pairs`` (IMAGE_PAIRS), ``documents`` (INTERLEAVED, image
bytes aligned with positions), ``images`` (IMAGES, one row per unique image). Any of them may be
absent (counted as zero rows), not all.

A :class:`curation.dask_stage.DaskStage`: the base owns the client, the preflight (the CLIP, the
safety heads, the eval index and the face cascade loaded on one worker by :meth:`ScoreStage.setup`
before any shard), the work directory, the empty outputs and the clean-up; this module holds the
phases, each a ``run.map`` (:func:`curation.dask_cluster.run_shards`) over row-group shards
(models loaded once per worker, per-shard outputs atomic, finished shards skipped on rerun):

1. ``images``: every unique image is decoded and encoded once; its unit embedding is kept.
2. ``pairs``: captions are encoded; each pair's image embedding is looked up by URL in phase 1's
   output (decoded from the pair's own bytes only when the image table lacks it); ``clip_score``
   is their cosine. Per row: undecodable images, eval-set contamination and DataComp's basic
   filter give reasons.
3. ``documents``: sentences (``models.mmc4.split_sentences``) of each document are encoded,
   images looked up like pairs, the image x sentence similarity goes to
   ``models.mmc4.build_mmc4_document`` (max-weight assignment, MMC4 schema, ``is_core``).

Then the decisions that need the pool (``ScoreStage._decide``): ``score.recipe``'s steps
(``filters.pairs.RECIPE_STEPS``; ``recipe: null`` is ``filter_mode``'s CLIP-score filter alone)
in a decision pass on the workers. The client computes only pool-wide values: the top-fraction
cutoff, the image-based step's k-means centroids (a bounded sample) and target clusters,
MetaCLIP's entry counts (summed from a counting pass on the workers); the pass writes each
shard's verdicts beside its scores. SemDeDup of the survivors' image embeddings
(pipelines/score_global.py: k-means, then near-duplicates inside each cluster on the workers)
follows. A last sharded pass writes the stage's outputs:

``<stage>/pairs/`` SCORED_PAIRS (``embedding_row`` is a stage-wide row number),
``<stage>/embeddings/{image,text}/<shard>.npy`` float16 unit vectors with one row per input
pair, ``index.json`` mapping row ranges to files (:func:`load_embeddings` reads them),
``<stage>/mmc4/`` MMC4 documents (+ ``is_core``, ``doc_id``), ``rejects/``, ``stats.json`` with
``tables`` for documents, document images and images, each conserved.

Per-shard intermediates live in ``<out>/_work/score-<hash>/`` (keyed by the model, the
per-row settings and the inputs' run ids), so a crashed run resumes where it stopped although
the stage runner deletes an unfinished stage directory.
"""
from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from curation.config import PairFilterConfig, ScoreConfig
from curation.dask_cluster import (
    Shard,
    ShardOutput,
    cpu_threads_per_worker,
    plan_shards,
    read_shard,
    setup_once,
    work_dir_for,
    worker_device,
)
from curation.dask_stage import DaskRun, DaskStage, Resources
from curation.errors import StageError
from curation.rejects import concat_rejects, rejects_table
from curation.schemas import IMAGE_PAIRS, IMAGES, INTERLEAVED, SCORED_IMAGES, SCORED_PAIRS
from curation.stage import StageContext, StageStats
from filters.pairs import PairView, basic_filters, find_rejection, recipe_steps
from models.assignment import assign
from models.mmc4 import build_mmc4_document, mmc4_arrow_schema, split_sentences
from models.scoring import RANDOM_WEIGHTS_WARNING, ModelSpec, clip_scores, load_scorer
from models.safety_heads import HeadPaths, SafetyHeads, resolve_heads, safety_reasons
from models.faces import FaceColumns, document_is_fewer_faces, gather_faces, mmc4_schema_with_faces

log = logging.getLogger(__name__)

STAGE = "score"
EMBED_DTYPE = np.float16
# MMC4's schema (models/mmc4.py) plus the document id the rejects and upstream stages use.
MMC4_DOCUMENTS = mmc4_schema_with_faces(mmc4_arrow_schema()).append(pa.field("doc_id", pa.string()))


# --------------------------------------------------------------------------- worker side


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs besides the shard (picklable, small)."""

    model: ModelSpec
    batch_size: int
    loader_threads: int
    filters: PairFilterConfig
    mmc4_min_sim: float
    eval_path: str | None
    eval_threshold: float
    heads: HeadPaths | None = None  # LAION's NSFW/aesthetic heads for this CLIP (None: null columns)
    max_nsfw: float | None = None
    min_aesthetic: float | None = None
    faces: bool = False  # face counts and boxes per image (models/faces.py)

    def __hash__(self) -> int:
        # The DaskStage base caches a worker's models under the spec (setup_once): the filter
        # settings are a plain (unhashable) dataclass, hashed here by their values.
        return hash((self.model, self.batch_size, self.loader_threads, json.dumps(asdict(self.filters), sort_keys=True),
                     self.mmc4_min_sim, self.eval_path, self.eval_threshold, self.heads, self.max_nsfw,
                     self.min_aesthetic, self.faces))

    def safety_heads(self) -> SafetyHeads:
        return setup_once(("safety-heads", self.heads), lambda: SafetyHeads.load(self.heads or HeadPaths(None, None, "")))

    def scorer(self):
        """This worker process's CLIP scorer, loaded once on the worker's device (GPUs spread over workers)."""
        m = self.model
        return setup_once(("clip-scorer", m, self.batch_size, self.loader_threads),
                          lambda: load_scorer(m, self.batch_size, self.loader_threads, worker_device(m.device)))

    def eval_index(self):
        if not self.eval_path:
            return None
        return setup_once(("eval-index", self.model, self.eval_path), partial(_build_eval_index, self))

    def pair_filters(self):
        key = ("pair-filters", json.dumps(asdict(self.filters), sort_keys=True))
        return setup_once(key, partial(basic_filters, self.filters))


def _build_eval_index(spec: WorkerSpec):
    from models.semantic_dedup import EvalIndex, load_eval_embeddings

    emb = load_eval_embeddings(spec.eval_path, spec.scorer())
    log.info("decontamination: %d eval images from %s", emb.shape[0], spec.eval_path)
    return EvalIndex(emb)


@dataclass
class ImageLookup:
    """Rows of a shard -> (file, row) of phase 1's image embeddings; file index -1 = not there."""

    files: list[str]
    file_idx: np.ndarray
    row: np.ndarray
    width: np.ndarray
    height: np.ndarray

    def gather(self, dim: int) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.file_idx)
        emb = np.zeros((n, dim), dtype=np.float32)
        found = self.file_idx >= 0
        for f in np.unique(self.file_idx[found]).tolist():
            sel = np.flatnonzero(self.file_idx == f)
            arr = _load_npy(self.files[f])
            emb[sel] = arr[self.row[sel]]
        return emb, found


def _load_npy(path: str) -> np.ndarray:
    """A ``.npy`` file, memory-mapped when local (only the gathered rows are read)."""
    from fsspec.implementations.local import LocalFileSystem

    fs, p = url_to_fs(path)
    if isinstance(fs, LocalFileSystem):
        return np.load(p, mmap_mode="r")
    with fs.open(p, "rb") as fh:
        return np.load(fh)


def _faces_for(spec: WorkerSpec, lookup: ImageLookup | None, n: int) -> FaceColumns:
    """Phase 1's faces of these rows (count -1 = not computed: faces off, or the image is not in phase 1)."""
    if not spec.faces or lookup is None:
        return FaceColumns.empty(n)
    files = [f.replace("/images_emb/", "/images_faces/")[: -len(".npy")] + ".parquet" for f in lookup.files]
    return gather_faces(files, lookup.file_idx, lookup.row)


def _looked_up(lookup: ImageLookup | None, n: int, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """(embeddings, ok, sizes, errors) of a shard's ``n`` images with phase 1's embeddings and sizes
    filled in; the rows still not ok are for :func:`_encode_missing` (from the shard's own bytes)."""
    emb = np.zeros((n, dim), dtype=np.float32)
    ok = np.zeros(n, dtype=bool)
    sizes = np.zeros((n, 2), dtype=np.int64)
    errors: list[tuple[str, str] | None] = [None] * n
    if lookup is not None:
        found_emb, found = lookup.gather(dim)
        emb[found], ok[found] = found_emb[found], True
        sizes[found] = np.stack([lookup.width, lookup.height], axis=1)[found]
    return emb, ok, sizes, errors


def _encode_missing(scorer, blobs: list[bytes | None], need: np.ndarray, emb: np.ndarray, ok: np.ndarray,
                    errors: list, sizes: np.ndarray) -> tuple[int, float]:
    """Decode + encode the rows in ``need`` into ``emb``/``ok``/``errors``/``sizes``; (count, model seconds)."""
    idx = np.flatnonzero(need)
    if not idx.size:
        return 0, 0.0
    res = scorer.encode_images([blobs[i] for i in idx.tolist()])
    emb[idx] = res.embeddings
    ok[idx] = res.ok
    sizes[idx] = res.sizes
    for j, i in enumerate(idx.tolist()):
        errors[i] = res.errors[j]
    return int(idx.size), res.seconds_model


def embed_images_shard(spec: WorkerSpec, shard: Shard, payload: Any, out: ShardOutput) -> dict:
    """Phase 1: encode each unique image once; write its embedding, decode status and size."""
    t = read_shard(shard, ["url", "image", "width", "height", "sha256"], schema=IMAGES)
    scorer = spec.scorer()
    start = time.perf_counter()
    res = scorer.encode_images(t.column("image").to_pylist())
    out.write_array("images_emb", res.embeddings)
    width = np.where(res.sizes[:, 0] > 0, res.sizes[:, 0], t.column("width").fill_null(0).to_numpy()).astype(np.int32)
    height = np.where(res.sizes[:, 1] > 0, res.sizes[:, 1], t.column("height").fill_null(0).to_numpy()).astype(np.int32)
    out.write_table("images_meta", pa.table({"url": t.column("url"), "ok": pa.array(res.ok), "width": width, "height": height}))
    if spec.faces:  # beside the decode, on this worker, batched in threads (models/faces.py)
        faces, rows, images = FaceColumns.empty(t.num_rows), np.flatnonzero(res.ok), t.column("image")
        faces.fill(rows, [images[i].as_py() for i in rows.tolist()])
        out.write_table("images_faces", faces.table())
    # The stage's image table (SCORED_IMAGES): the heads and faces once per decodable image.
    nsfw, aesthetic = spec.safety_heads().score(res.embeddings, res.ok)
    f_cols = (faces if spec.faces else FaceColumns.empty(t.num_rows)).arrays()
    out.write_table("images", pa.table({
        "url": t.column("url"), "width": width, "height": height, "sha256": t.column("sha256"),
        "nsfw_score": pa.array(nsfw, pa.float32(), from_pandas=True),
        "aesthetic_score": pa.array(aesthetic, pa.float32(), from_pandas=True), **f_cols,
    }).filter(pa.array(res.ok)).cast(SCORED_IMAGES))
    bad = np.flatnonzero(~res.ok).tolist()
    urls = t.column("url").to_pylist()
    out.write_table("rejects", rejects_table([urls[i] for i in bad], "images", STAGE, [res.errors[i][0] for i in bad],
                                             [res.errors[i][1] for i in bad]))
    return {
        "rows": t.num_rows, "rows_out": int(res.ok.sum()),
        "rejected": dict(Counter(res.errors[i][0] for i in bad)),
        "images_encoded": t.num_rows, "seconds_model": res.seconds_model,
        "seconds": time.perf_counter() - start,
        "images_with_faces": int((faces.count > 0).sum()) if spec.faces else 0,
    }


def score_pairs_shard(spec: WorkerSpec, shard: Shard, lookup: ImageLookup | None, out: ShardOutput) -> dict:
    """Phase 2: clip_score per pair plus the per-row reasons (undecodable, decontaminated, basic filter)."""
    start = time.perf_counter()
    t = read_shard(shard, ["key", "caption", "width", "height"], schema=IMAGE_PAIRS)
    n = t.num_rows
    scorer = spec.scorer()
    txt = scorer.encode_texts(t.column("caption").to_pylist())
    dim = txt.shape[1] if n else scorer.dim
    emb, ok, sizes, errors = _looked_up(lookup, n, dim)
    need = ~ok
    blobs = read_shard(shard, ["image"], schema=IMAGE_PAIRS).column("image").to_pylist() if need.any() else []
    encoded, model_s = _encode_missing(scorer, blobs, need, emb, ok, errors, sizes)
    faces = _faces_for(spec, lookup, n)
    if spec.faces and (need & ok).any():  # images phase 1 did not have: from the pair's own bytes
        own = np.flatnonzero(need & ok)
        faces.fill(own, [blobs[i] for i in own.tolist()])
    del blobs
    scores = clip_scores(emb, txt)
    scores[~ok] = np.nan

    reasons: list[str | None] = [e[0] if e else None for e in errors]
    details: list[str | None] = [e[1] if e else None for e in errors]
    index = spec.eval_index()
    n_contaminated = 0
    if index is not None and ok.any():
        rows = np.flatnonzero(ok)
        hit, sims, ids = index.contaminated(emb[rows], spec.eval_threshold)
        for r, s, j in zip(rows[hit].tolist(), sims[hit].tolist(), ids[hit].tolist()):
            reasons[r], details[r] = "decontaminated", f"cosine {s:.4f} to eval image {j}"
            n_contaminated += 1
    # Safety heads on the image embeddings already here: one matmul per shard (models/safety_heads.py).
    nsfw, aesthetic = spec.safety_heads().score(emb, ok)
    for i, r in enumerate(safety_reasons(nsfw, aesthetic, spec.max_nsfw, spec.min_aesthetic)):
        if r is not None and reasons[i] is None:
            reasons[i], details[i] = r
    filters = spec.pair_filters()
    if filters:
        captions = t.column("caption").to_pylist()
        widths = t.column("width").to_pylist()
        heights = t.column("height").to_pylist()
        for i in range(n):
            if reasons[i] is not None:
                continue
            view = PairView(captions[i], widths[i] or int(sizes[i, 0]) or None, heights[i] or int(sizes[i, 1]) or None)
            rejection = find_rejection(filters, view)
            if rejection is not None:
                reasons[i], details[i] = rejection.reason, rejection.detail
    out.write_table("pairs_scores", pa.table({
        "key": t.column("key"),
        "clip_score": pa.array(scores, pa.float32()),
        "nsfw_score": pa.array(nsfw, pa.float32(), from_pandas=True),  # NaN (no head / not decoded) -> null
        "aesthetic_score": pa.array(aesthetic, pa.float32(), from_pandas=True),
        **faces.arrays(),
        "reason": pa.array(reasons, pa.string()),
        "detail": pa.array(details, pa.string()),
    }))
    out.write_array("pairs_img", emb.astype(EMBED_DTYPE))
    out.write_array("pairs_txt", txt.astype(EMBED_DTYPE))
    return {
        "rows": n, "scored": int(ok.sum()), "reasons": dict(Counter(r for r in reasons if r)),
        "images_encoded": encoded, "images_looked_up": int(n - need.sum()), "decontaminated": n_contaminated,
        "seconds_model": model_s, "seconds": time.perf_counter() - start, "dim": int(dim),
    }


def _doc_sentences(texts: list[str | None] | None) -> list[str]:
    return split_sentences("\n".join(t for t in (texts or []) if t))


def mmc4_shard(spec: WorkerSpec, shard: Shard, lookup: ImageLookup | None, out: ShardOutput) -> dict:
    """Phase 3: MMC4 documents (sentences x images similarity, max-weight assignment, is_core)."""
    start = time.perf_counter()
    t = read_shard(shard, ["doc_id", "url", "texts", "images"], schema=INTERLEAVED)
    docs = t.to_pylist()
    scorer = spec.scorer()
    sentences = [_doc_sentences(d["texts"]) for d in docs]
    flat_sent = [s for ss in sentences for s in ss]
    sent_emb = scorer.encode_texts(flat_sent)
    dim = sent_emb.shape[1] if flat_sent else scorer.dim
    # Images in (document, position) order: the order the driver's lookup was built in.
    positions = [[i for i, u in enumerate(d["images"] or []) if u is not None] for d in docs]
    n_img = sum(len(p) for p in positions)
    emb, ok, sizes, errors = _looked_up(lookup, n_img, dim)
    need = ~ok
    encoded, model_s = 0, 0.0
    faces = _faces_for(spec, lookup, n_img)
    if need.any():
        bytes_col = read_shard(shard, ["image_bytes"], schema=INTERLEAVED).column("image_bytes").to_pylist()
        blobs: list[bytes | None] = []
        for d, pos in enumerate(positions):
            aligned = bytes_col[d] or []
            blobs.extend(aligned[i] if i < len(aligned) else None for i in pos)
        del bytes_col
        encoded, model_s = _encode_missing(scorer, blobs, need, emb, ok, errors, sizes)
        if spec.faces and (need & ok).any():
            own = np.flatnonzero(need & ok)
            faces.fill(own, [blobs[i] for i in own.tolist()])
        del blobs
    contaminated = np.zeros(n_img, dtype=bool)
    contam_detail: dict[int, str] = {}
    index = spec.eval_index()
    if index is not None and ok.any():
        rows = np.flatnonzero(ok)
        hit, sims, ids = index.contaminated(emb[rows], spec.eval_threshold)
        contaminated[rows[hit]] = True
        contam_detail = {int(r): f"cosine {s:.4f} to eval image {j}" for r, s, j in zip(rows[hit], sims[hit], ids[hit])}

    out_rows: list[dict] = []
    doc_rej: list[tuple[str, str, str | None]] = []
    img_rej: list[tuple[str, str, str | None]] = []
    n_core = n_images_out = 0
    k = s0 = 0
    for d, doc in enumerate(docs):
        pos = positions[d]
        img_idx = np.arange(k, k + len(pos))
        k += len(pos)
        sents = sentences[d]
        s_emb = sent_emb[s0:s0 + len(sents)]
        s0 += len(sents)
        doc_id, urls = doc["doc_id"], doc["images"] or []

        def img_id(i: int) -> str:
            return f"{doc_id}-{pos[i]}"

        usable = []
        for j, gi in enumerate(img_idx.tolist()):
            if not ok[gi]:
                img_rej.append((img_id(j), errors[gi][0], f"{urls[pos[j]]}: {errors[gi][1]}"))
            elif contaminated[gi]:
                img_rej.append((img_id(j), "decontaminated", f"{urls[pos[j]]}: {contam_detail[gi]}"))
            else:
                usable.append(j)
        if not pos:
            doc_rej.append((doc_id, "no_images", None))
            continue
        if not sents:
            doc_rej.append((doc_id, "no_sentences", None))
            img_rej.extend((img_id(j), "document_rejected", "no_sentences") for j in usable)
            continue
        sim = emb[img_idx[usable]] @ s_emb.T if usable else np.zeros((0, len(sents)))
        mm = build_mmc4_document(doc["url"], sents, [urls[pos[j]] for j in usable], sim, min_sim=spec.mmc4_min_sim)
        for row, (j, s) in enumerate(zip(usable, assign(sim, min_sim=spec.mmc4_min_sim))):
            if s is None:  # the images build_mmc4_document left out
                img_rej.append((img_id(j), "below_min_sim",
                                f"best sentence similarity {float(sim[row].max()):.4f} < {spec.mmc4_min_sim}"))
        if not mm["image_info"]:
            doc_rej.append((doc_id, "no_images_kept", f"{len(pos)} images, none kept"))
            continue
        mm["doc_id"] = doc_id
        face_row = {urls[pos[j]]: int(img_idx[j]) for j in usable}  # MMC4's face_detections per kept image
        counts = [int(faces.count[face_row[info["raw_url"]]]) for info in mm["image_info"]]
        for info in mm["image_info"]:
            info["face_detections"] = faces.detections[face_row[info["raw_url"]]]
        mm["is_fewer_faces"] = document_is_fewer_faces(counts) if min(counts) >= 0 else None
        out_rows.append(mm)
        n_core += bool(mm["is_core"])
        n_images_out += len(mm["image_info"])
    out.write_table("mmc4", pa.Table.from_pylist(out_rows, schema=MMC4_DOCUMENTS))
    rej = concat_rejects([
        rejects_table([r[0] for r in doc_rej], "documents", STAGE, [r[1] for r in doc_rej], [r[2] for r in doc_rej]),
        rejects_table([r[0] for r in img_rej], "document_images", STAGE, [r[1] for r in img_rej],
                      [r[2] for r in img_rej]),
    ])
    out.write_table("rejects", rej)
    return {
        "rows": len(docs), "rows_out": len(out_rows), "rejected": dict(Counter(r[1] for r in doc_rej)),
        "images_in": n_img, "images_out": n_images_out, "images_rejected": dict(Counter(r[1] for r in img_rej)),
        "core": n_core, "sentences": len(flat_sent), "images_encoded": encoded,
        "images_looked_up": int(n_img - need.sum()), "seconds_model": model_s, "seconds": time.perf_counter() - start,
    }


# --------------------------------------------------------------------------- decision pass (workers)

# Score histogram the decision pass returns per shard (for the stats' percentiles without gathering
# the run's scores): bins of 0.001 over [-1, 1].
_HIST_BINS = 2000


@dataclass(frozen=True)
class DecideSpec:
    """What the decision pass's workers need: the steps and the pool-wide state, as values or file paths.

    The client computes the pool-wide state (the top-fraction cutoff, k-means centroids and the
    target ids, MetaCLIP's summed entry counts) and passes it here as small values or files in
    ``decide_dir``; the rows, captions and embeddings stay in the shard files.
    """

    work_dir: str  # the scoring passes' work dir (pairs_scores/, pairs_img/)
    decide_dir: str
    steps: tuple[str, ...]
    min_clip_score: float = 0.28
    cutoff: float | None = None  # clip_top_fraction: the pool's cut (filters.pairs.top_fraction_cutoff)
    synsets: str | None = None  # text_based word list (None: the packaged default)
    metadata: str | None = None  # metaclip metadata file
    metaclip_t: int = 20_000
    metaclip_seed: int = 0

    def text_matcher(self):
        from filters.text_based import SynsetWordMatcher, load_synset_words

        return setup_once(("text-based", self.synsets), lambda: SynsetWordMatcher(load_synset_words(self.synsets)))

    def image_filter(self):
        from filters.image_based import ImageBasedFilter

        path = f"{self.decide_dir}/image_based.npz"

        def load():
            with np.load(_local_or_fetch(path)) as z:
                return ImageBasedFilter(z["centroids"], z["target_ids"])

        return setup_once(("image-based", path), load)

    def metaclip_matcher(self):
        from filters.metaclip import MetadataMatcher, load_metadata

        return setup_once(("metaclip-matcher", self.metadata), lambda: MetadataMatcher(load_metadata(self.metadata)))

    def metaclip_counts(self) -> np.ndarray:
        path = f"{self.decide_dir}/metaclip_counts.npy"
        return setup_once(("metaclip-counts", path), lambda: np.asarray(_load_npy(path)))


def _local_or_fetch(path: str):
    fs, p = url_to_fs(path)
    return fs.open(p, "rb")


@dataclass
class _ShardRows:
    """One pairs shard as the decision steps see it: verdicts so far, and columns read on demand."""

    spec: DecideSpec
    shard: Shard
    key: pa.Array
    score: np.ndarray
    reason: np.ndarray  # object: None = still kept
    detail: np.ndarray
    _captions: pa.Array | None = None
    _emb: np.ndarray | None = None

    @classmethod
    def read(cls, spec: DecideSpec, shard: Shard) -> "_ShardRows":
        t = pq.read_table(f"{spec.work_dir}/pairs_scores/{shard.id}.parquet", columns=["key", "clip_score", "reason", "detail"])
        return cls(spec, shard, t.column("key").combine_chunks(),
                   t.column("clip_score").to_numpy(zero_copy_only=False).astype(np.float64),
                   np.array(t.column("reason").to_pylist(), dtype=object),
                   np.array(t.column("detail").to_pylist(), dtype=object))

    def captions(self) -> pa.Array:
        if self._captions is None:
            self._captions = read_shard(self.shard, ["caption"], schema=IMAGE_PAIRS).column("caption").combine_chunks()
        return self._captions

    def embeddings(self) -> np.ndarray:
        if self._emb is None:
            self._emb = np.asarray(_load_npy(f"{self.spec.work_dir}/pairs_img/{self.shard.id}.npy"), dtype=np.float32)
        return self._emb

    def alive(self) -> np.ndarray:
        return np.array([r is None for r in self.reason], dtype=bool)

    def reject(self, rows: np.ndarray, reason: str | np.ndarray, detail) -> int:
        """Give ``rows`` (indices) ``reason``/``detail`` (scalars, or arrays aligned with ``rows``)."""
        self.reason[rows] = reason
        self.detail[rows] = detail
        return int(rows.size)


def _metaclip_matches(rows: _ShardRows, alive: np.ndarray) -> pa.ListArray:
    """Entry ids matched in each caption; rows not ``alive`` get none (they do not count)."""
    captions = rows.captions()
    masked = pc.if_else(pa.array(alive), captions, pa.scalar(None, pa.string()))
    return rows.spec.metaclip_matcher().match(masked)


def _apply_step(step: str, rows: _ShardRows) -> int:
    """Apply one recipe step to the rows still kept; returns how many it rejected."""
    spec = rows.spec
    alive = rows.alive()
    idx = np.flatnonzero(alive)
    if not idx.size:
        return 0
    if step in ("clip_threshold", "clip_top_fraction"):
        from filters.pairs import ClipScoreThresholdFilter, TopFractionFilter

        cut = spec.min_clip_score if step == "clip_threshold" else spec.cutoff
        name = (ClipScoreThresholdFilter if step == "clip_threshold" else TopFractionFilter).name
        s = rows.score[idx]
        bad = idx[~(s >= cut)]  # NaN fails, as ThresholdFilter
        return rows.reject(bad, name, np.array([f"clip_score {v:.4f} < {cut:.4f}" for v in rows.score[bad]], dtype=object))
    if step == "text_based":
        from filters.text_based import REASON

        hit = spec.text_matcher().matches(rows.captions().take(pa.array(idx)))
        return rows.reject(idx[~hit], REASON, "no ImageNet-21k synset word in the caption")
    if step == "image_based":
        from filters.image_based import REASON

        keep, cluster = spec.image_filter().keep(rows.embeddings()[idx])
        bad = ~keep
        return rows.reject(idx[bad], REASON,
                           np.array([f"nearest centroid {c} is no target image's" for c in cluster[bad]], dtype=object))
    if step == "metaclip":
        from filters.metaclip import balance_decisions

        matches = _metaclip_matches(rows, alive)
        keep, why = balance_decisions(rows.key, matches, spec.metaclip_counts(), spec.metaclip_t, spec.metaclip_seed)
        bad = idx[~keep[idx]]
        lens = np.diff(matches.offsets.to_numpy())[bad]
        details = np.array([None if n == 0 else f"{n} entries matched, none drawn (t={spec.metaclip_t})" for n in lens],
                           dtype=object)
        return rows.reject(bad, why[bad], details)
    raise ValueError(f"unknown recipe step {step!r}")


def _score_summary(score: np.ndarray) -> dict:
    """Sum, count and a sparse 0.001-bin histogram of the finite scores (the client adds them up)."""
    s = score[np.isfinite(score)]
    b = np.clip(((s + 1.0) * (_HIST_BINS / 2)).astype(np.int64), 0, _HIST_BINS - 1)
    bins, counts = np.unique(b, return_counts=True)
    return {"n": int(s.size), "sum": float(s.sum()), "hist": {str(k): int(v) for k, v in zip(bins.tolist(), counts.tolist())}}


def metaclip_count_shard(spec: DecideSpec, shard: Shard, payload: Any, out: ShardOutput) -> dict:
    """MetaCLIP pass 1: the steps before ``metaclip``, then entry counts over the captions still kept."""
    from filters.metaclip import entry_counts

    rows = _ShardRows.read(spec, shard)
    for step in spec.steps[: spec.steps.index("metaclip")]:
        _apply_step(step, rows)
    alive = rows.alive()
    matches = _metaclip_matches(rows, alive)
    out.write_array("counts", entry_counts(matches, len(spec.metaclip_matcher())))
    lens = np.diff(matches.offsets.to_numpy())
    return {"rows": len(alive), "candidates": int(alive.sum()), "matched": int((lens > 0).sum())}


def decide_pairs_shard(spec: DecideSpec, shard: Shard, payload: Any, out: ShardOutput) -> dict:
    """The decision pass: every recipe step in order on one shard; writes reason/detail per row."""
    start = time.perf_counter()
    rows = _ShardRows.read(spec, shard)
    steps = {}
    for step in spec.steps:
        n_in = int(rows.alive().sum())
        steps[step] = {"in": n_in, "rejected": _apply_step(step, rows)}
    out.write_table("decisions", pa.table({"reason": pa.array(rows.reason.tolist(), pa.string()),
                                           "detail": pa.array(rows.detail.tolist(), pa.string())}))
    return {"rows": len(rows.reason), "kept": int(rows.alive().sum()), "steps": steps,
            "scores": _score_summary(rows.score), "seconds": time.perf_counter() - start}


def write_pairs_shard(work_dir: str, decide_dir: str, dedup_dir: str | None, dedup_threshold: float, shard: Shard,
                      payload: Any, out: ShardOutput) -> dict:
    """Last pass: kept pairs as SCORED_PAIRS, their rejects, and the float16 embeddings.

    The verdicts are the decision pass's file plus SemDeDup's duplicates of this shard (``dedup_dir``)."""
    t = read_shard(shard, IMAGE_PAIRS.names, schema=IMAGE_PAIRS)
    scores = pq.read_table(f"{work_dir}/pairs_scores/{shard.id}.parquet")
    dec = pq.read_table(f"{decide_dir}/decisions/{shard.id}.parquet")
    if scores.num_rows != t.num_rows or dec.num_rows != t.num_rows:
        raise StageError(f"shard {shard.id}: {scores.num_rows} scores, {dec.num_rows} decisions for {t.num_rows} rows")
    reason = dec.column("reason").to_pylist()
    detail = dec.column("detail").to_pylist()
    dup: list[str | None] = [None] * t.num_rows
    if dedup_dir is not None:
        from pipelines.score_global import read_duplicates

        dup = read_duplicates(dedup_dir, shard.id, t.num_rows)
        for i in (i for i, w in enumerate(dup) if w is not None):
            reason[i], detail[i] = "semantic_duplicate", f"image cosine >= {dedup_threshold}"
    keep = np.array([r is None for r in reason], dtype=bool)
    full = t.append_column("clip_score", scores.column("clip_score")).append_column(
        "embedding_row", pa.array(np.arange(shard.offset, shard.offset + t.num_rows, dtype=np.int64)))
    for name in ("nsfw_score", "aesthetic_score", "face_count", "face_detections", "is_fewer_faces"):
        full = full.append_column(name, scores.column(name))
    out.write_table("pairs", full.filter(pa.array(keep)).cast(SCORED_PAIRS))
    idx = np.flatnonzero(~keep).tolist()
    keys = t.column("key").to_pylist()
    out.write_table("rejects", rejects_table([keys[i] for i in idx], "pairs", STAGE, [reason[i] for i in idx],
                                             [detail[i] for i in idx], [dup[i] for i in idx]))
    for kind in ("img", "txt"):
        arr = np.asarray(_load_npy(f"{work_dir}/pairs_{kind}/{shard.id}.npy"))
        out.write_array("embeddings/" + ("image" if kind == "img" else "text"), arr)
    return {"rows": t.num_rows, "rows_out": int(keep.sum()), "rejected": dict(Counter(reason[i] for i in idx))}


# --------------------------------------------------------------------------- client side


def _lookup_table(work_dir: str, image_shards: list[Shard]) -> tuple[pa.Table, list[str]] | None:
    """Decodable images of phase 1: url -> (file index, row, width, height)."""
    if not image_shards:
        return None
    parts, files = [], []
    for f, s in enumerate(image_shards):
        meta = pq.read_table(f"{work_dir}/images_meta/{s.id}.parquet")
        files.append(f"{work_dir}/images_emb/{s.id}.npy")
        n = meta.num_rows
        meta = meta.append_column("file", pa.array(np.full(n, f, dtype=np.int32))).append_column(
            "row", pa.array(np.arange(n, dtype=np.int64)))
        parts.append(meta.filter(meta.column("ok")))
    table = pa.concat_tables(parts)
    # index_in finds the first occurrence of a URL, so a repeated URL (the image stage writes
    # unique ones) resolves to its first decodable copy.
    return table, files


def _lookup_for(urls: pa.Array, index: tuple[pa.Table, list[str]] | None) -> ImageLookup | None:
    if index is None:
        return None
    table, files = index
    n = len(urls)
    if not table.num_rows or not n:
        missing = np.full(n, -1, dtype=np.int64)
        return ImageLookup(files, missing, missing.copy(), np.zeros(n, np.int64), np.zeros(n, np.int64))
    pos = pc.index_in(urls, value_set=table.column("url")).fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    hit = pos >= 0
    take = np.where(hit, pos, 0)

    def col(name: str, missing: int) -> np.ndarray:
        return np.where(hit, table.column(name).to_numpy()[take], missing).astype(np.int64)

    return ImageLookup(files, col("file", -1), col("row", -1), col("width", 0), col("height", 0))


def _top_fraction_cutoff(client, score_files: list[str], fraction: float) -> float:
    """DataComp's cut over the pool: every pair with a finite clip_score, before any filter.

    DataComp's ``get_threshold`` ranks the whole pool's scores (``load_uids_with_image_filter``
    computes it before its image-based and caption filters), so in ``[basic, image_based,
    clip_top_fraction]`` the 30% is of the pool, not of the image-based survivors, and the recipe
    is the intersection of the two sets. The rank rule is :func:`filters.pairs.top_fraction_cutoff`'s,
    computed on the workers by pipelines/score_global.py (two-pass histogram refinement).
    """
    from pipelines.score_global import exact_top_fraction_cutoff

    return float(exact_top_fraction_cutoff(client, score_files, "clip_score", fraction))


def _scores_from_histograms(parts: list[dict]) -> dict | None:
    """Mean (exact) and p10/p50/p90 (to the 0.001 bin, linear inside it) of the pool's finite scores."""
    n = sum(p["n"] for p in parts)
    if not n:
        return None
    hist = np.zeros(_HIST_BINS, dtype=np.int64)
    for p in parts:
        for k, v in p["hist"].items():
            hist[int(k)] += v
    cum = np.cumsum(hist)
    width = 2.0 / _HIST_BINS
    out = {"mean": round(sum(p["sum"] for p in parts) / n, 4)}
    for q in (10, 50, 90):
        rank = q / 100 * n
        b = int(np.searchsorted(cum, rank, side="left"))
        b = min(b, _HIST_BINS - 1)
        before = cum[b - 1] if b else 0
        frac = (rank - before) / hist[b] if hist[b] else 0.0
        out[f"p{q}"] = round(-1.0 + width * (b + frac), 4)
    return out


def _write_npy(path: str, arr: np.ndarray) -> None:
    fs, p = url_to_fs(path)
    fs.makedirs(p.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(p + ".tmp", "wb") as fh:
        np.save(fh, arr)
    fs.mv(p + ".tmp", p)


# ``score.image_based.targets: clean``: the pictures of the run's clean human-captioned set
# (``bootstrap.clean_data``, or a sample run's ``_sample/clean``), the sample's stand-in for ImageNet.
CLEAN_TARGETS = "clean"


def _clean_targets(ctx: StageContext) -> str:
    """The clean set of the run the inputs come from (a score run into another folder, e.g. the
    experiment's recipe variants, reads a sample run's images and its ``_sample/clean``)."""
    from models.resolve import source_root_of
    from pipelines.bootstrap import clean_data_of

    roots = [source_root_of(ctx.inputs["pairs"])] if ctx.inputs.get("pairs") else []
    roots.append(ctx.run_root)
    clean = next((c for c in (clean_data_of(ctx.config, r) for r in roots) if c is not None), None)
    if clean is None:
        raise StageError("score: image_based.targets is 'clean' but the run has no clean set "
                         "(set bootstrap.clean_data, or run a sample, whose _sample/clean is used)")
    # A COCO json's folder holds its images/; the directory is encoded image by image.
    return clean.rsplit("/", 1)[0] if clean.endswith(".json") else clean


def _target_embeddings(spec: WorkerSpec, path: str) -> np.ndarray:
    """Unit embeddings of the image-based step's target images, with this run's CLIP (on a worker)."""
    from models.semantic_dedup import load_eval_embeddings

    try:
        return np.asarray(load_eval_embeddings(path, spec.scorer()), dtype=np.float32)
    except FileNotFoundError:
        raise StageError(f"score: image_based.targets not found: {path}") from None


def _copy_into(src: str, dst: str) -> None:
    """Copy one finished work file into the stage directory (temp name + rename)."""
    fs, s = url_to_fs(src)
    _, d = url_to_fs(dst)
    fs.makedirs(d.rsplit("/", 1)[0], exist_ok=True)
    tmp = f"{d.rsplit('/', 1)[0]}/.tmp-{d.rsplit('/', 1)[1]}"
    fs.copy(s, tmp)
    fs.mv(tmp, d)


def load_embeddings(stage_dir: str, rows: np.ndarray | None = None, kind: str = "image") -> np.ndarray:
    """float16 unit embeddings (``kind`` image or text) of stage-wide ``embedding_row`` values (all when None)."""
    base = stage_dir.rstrip("/") + "/embeddings"
    fs, p = url_to_fs(base)
    with fs.open(f"{p}/index.json", "r") as fh:
        index = json.load(fh)
    shards = index["shards"]
    offsets = np.array([s["offset"] for s in shards], dtype=np.int64)
    dim = index["dim"]
    if rows is None:
        arrays = [_load_npy(f"{base}/{s[kind]}") for s in shards]
        return np.concatenate(arrays) if arrays else np.zeros((0, dim), dtype=EMBED_DTYPE)
    rows = np.asarray(rows, dtype=np.int64)
    out = np.zeros((len(rows), dim), dtype=EMBED_DTYPE)
    which = np.searchsorted(offsets, rows, side="right") - 1
    for w in np.unique(which).tolist():
        sel = np.flatnonzero(which == w)
        arr = _load_npy(f"{base}/{shards[w][kind]}")
        out[sel] = arr[rows[sel] - shards[w]["offset"]]
    return out


def _sum_counters(summaries, key: str) -> dict[str, int]:
    total: Counter = Counter()
    for s in summaries:
        total.update(s.get(key, {}))
    return dict(total)


@dataclass(frozen=True)
class ScorePlan:
    """What the score stage decides before its client opens: its settings with the models resolved
    (``pretrained: bootstrap`` -> the run's checkpoint, ``image_based.targets: clean`` -> the clean
    set), the basic filter as the recipe sets it, the safety heads, and the shards of each input."""

    cfg: ScoreConfig
    filters: PairFilterConfig
    heads: HeadPaths
    shards: dict[str, list[Shard]]  # images, pairs, documents (an absent input: no shards)


@dataclass(frozen=True)
class ScoreModels:
    """What :meth:`ScoreStage.setup` loads on a worker (each also cached by its own ``setup_once`` key,
    so the tasks' ``spec.scorer()`` etc. find the same objects)."""

    scorer: Any
    heads: SafetyHeads
    eval_index: Any


class ScoreStage(DaskStage):
    """``curate score``: inputs {"pairs", "documents", "images"} (any subset present on disk).

    Its phases on :class:`curation.dask_stage.DaskStage` (client, preflight, work dir and its
    clean-up, empty outputs are the base's): encode images, score pairs, MMC4 documents (per
    shard); the pool-wide decisions (``_decide``); the writes (per shard).
    """

    name = STAGE
    outputs = ("pairs", "mmc4", "embeddings", "images")
    config_sections = ("score", "safety.heads_dir", "safety.nsfw_head", "safety.aesthetic_head", "safety.max_nsfw",
                       "safety.min_aesthetic", "safety.faces")
    output_schemas = {"pairs": SCORED_PAIRS, "mmc4": MMC4_DOCUMENTS, "images": SCORED_IMAGES}
    # One CLIP (ViT-B-32: ~0.6 GB in fp32) plus a batch of decoded images and its activations.
    resources = Resources(cpus=1.0, memory_gb=2.0)

    def resources_for(self, ctx: StageContext) -> Resources:
        """A GPU per task when the config asks for CUDA; ``auto`` and ``cpu`` run anywhere."""
        device = ctx.config.score.device
        return replace(self.resources, gpus=1.0) if device.startswith("cuda") else self.resources

    def plan(self, ctx: StageContext) -> ScorePlan:
        cfg: ScoreConfig = ctx.config.score
        if cfg.pretrained == "bootstrap":  # the CLIP this run trained itself (pipelines/bootstrap.py)
            from models.resolve import local_model, models_dir_of, resolve_model, source_root_of

            models = ctx.inputs.get("models") or models_dir_of(source_root_of(ctx.inputs["pairs"]))
            # A checkpoint in a remote run directory is copied to the local model cache (open_clip
            # loads local files); a local one is used where it is.
            cfg = replace(cfg, pretrained=local_model(resolve_model(cfg.pretrained, "clip", models)))
        if cfg.recipe and "image_based" in cfg.recipe and cfg.image_based.targets == CLEAN_TARGETS:
            cfg = replace(cfg, image_based=replace(cfg.image_based, targets=_clean_targets(ctx)))
        plans: dict[str, list[Shard]] = {}
        present = []
        for key in ("images", "pairs", "documents"):
            path = ctx.inputs.get(key)
            fs, p = url_to_fs(path) if path else (None, None)
            if path and fs.exists(p):
                present.append(key)
                plans[key] = plan_shards(path, cfg.shard_rows, prefix=f"{key}-")
            else:
                plans[key] = []
                if path:
                    log.warning("score: input %s not found at %s: counted as 0 rows", key, path)
        if not present:
            raise StageError(f"score: none of its inputs exist ({ctx.inputs}); run the images stage first")
        safety = ctx.config.safety
        heads = resolve_heads(cfg.model, cfg.pretrained, safety.heads_dir, safety.nsfw_head, safety.aesthetic_head)
        filters = cfg.filters  # DataComp's basic filter runs in the scoring pass; a recipe turns it on or off
        if cfg.recipe is not None:
            filters = replace(filters, enabled="basic" in cfg.recipe)
        log.info("score: %s shards (%s)", sum(len(v) for v in plans.values()), {k: len(v) for k, v in plans.items()})
        return ScorePlan(cfg, filters, heads, plans)

    def work_key(self, ctx: StageContext, plan: ScorePlan) -> dict[str, Any]:
        """What decides the per-shard work (not the global filter/dedup settings, applied after):
        unchanged from before the stage toolkit, so an earlier run's ``_work/score-*`` still resumes."""
        cfg, heads, safety = plan.cfg, plan.heads, ctx.config.safety
        return {
            "model": [cfg.model, cfg.pretrained, cfg.seed], "filters": asdict(plan.filters),
            "mmc4_min_sim": cfg.mmc4_min_sim, "decontaminate": [cfg.decontaminate_eval, cfg.decontaminate_threshold],
            "shard_rows": cfg.shard_rows, "inputs": ctx.input_run_ids,
            "safety": [heads.nsfw, heads.aesthetic, safety.max_nsfw, safety.min_aesthetic, safety.faces],
            "images_table": 1,  # phase 1 writes score/images (a work dir of an older run lacks it)
        }

    def worker_spec(self, ctx: StageContext, plan: ScorePlan, client: Any) -> WorkerSpec:
        cfg, safety = plan.cfg, ctx.config.safety
        return WorkerSpec(
            model=ModelSpec(cfg.model, cfg.pretrained, cfg.device, cfg.seed, cpu_threads_per_worker(client)),
            batch_size=cfg.batch_size, loader_threads=cfg.loader_threads, filters=plan.filters,
            mmc4_min_sim=cfg.mmc4_min_sim, eval_path=cfg.decontaminate_eval, eval_threshold=cfg.decontaminate_threshold,
            heads=plan.heads, max_nsfw=safety.max_nsfw, min_aesthetic=safety.min_aesthetic, faces=safety.faces,
        )

    def setup(self, spec: WorkerSpec) -> ScoreModels:
        """The CLIP scorer, the safety heads, the eval index and (with ``safety.faces``) the face
        cascade on this worker: a missing checkpoint or cascade fails in the preflight, once, with
        the loader's hint (models.clip, models.faces), not once per shard. The cascade is per
        thread (OpenCV's classifier is not thread-safe): this checks it loads; each detection
        thread loads its own."""
        models = ScoreModels(spec.scorer(), spec.safety_heads(), spec.eval_index())
        if spec.faces:
            from models.faces import _cascade

            _cascade()
        return models

    def preflight_info(self, spec: WorkerSpec, models: ScoreModels) -> dict:
        return {"embedding_dim": models.scorer.dim}

    def phases(self, run: DaskRun, plan: ScorePlan) -> StageStats:
        ctx, cfg, plans, spec, work_dir = run.ctx, plan.cfg, plan.shards, run.spec, run.work_dir
        counters: dict[str, Any] = {"model": cfg.model, "pretrained": cfg.pretrained, "filter_mode": cfg.filter_mode,
                                    "work_dir": work_dir}
        if cfg.pretrained is None:
            counters["warning"] = RANDOM_WEIGHTS_WARNING.format(name=cfg.model)
            log.warning(counters["warning"])
        counters["embedding_dim"] = run.info["embedding_dim"]
        SafetyHeads.load(plan.heads, counters["embedding_dim"])  # a head of another width fails here, named
        counters["safety_heads"] = plan.heads.note

        # Encode, per shard: unique images, then pairs and documents looking their images up.
        img_sum = run.map("images", partial(embed_images_shard, spec), plans["images"])
        index = _lookup_table(work_dir, plans["images"])
        pair_payloads = {s.id: _lookup_for(read_shard(s, ["url"], schema=IMAGE_PAIRS).column("url").combine_chunks(), index)
                         for s in plans["pairs"]}
        pair_sum = run.map("pairs", partial(score_pairs_shard, spec), plans["pairs"], payloads=pair_payloads)
        doc_sum: dict[str, dict] = {}
        if cfg.mmc4:
            doc_payloads = {}
            for s in plans["documents"]:
                images = read_shard(s, ["images"], schema=INTERLEAVED).column("images").combine_chunks()
                flat = pc.list_flatten(images)
                doc_payloads[s.id] = _lookup_for(flat.filter(pc.is_valid(flat)), index)
            doc_sum = run.map("documents", partial(mmc4_shard, spec), plans["documents"], payloads=doc_payloads)
        # The global steps, then the decisions written per shard.
        decide_dir, dedup_dir, dec_counters, _ = self._decide(run, cfg, plans["pairs"])
        counters.update(dec_counters)
        write = partial(write_pairs_shard, work_dir, decide_dir, dedup_dir, cfg.semantic_dedup_threshold)
        write_sum = run.map("write", write, plans["pairs"], ctx.stage_dir, uses_model=False)

        # Copy phase 1 and 3 outputs (rejects, MMC4 documents) into the stage directory.
        for s in plans["images"] + (plans["documents"] if cfg.mmc4 else []):
            _copy_into(f"{work_dir}/rejects/{s.id}.parquet", f"{ctx.rejects_path}/{s.id}.parquet")
        for s in plans["images"]:
            _copy_into(f"{work_dir}/images/{s.id}.parquet", f"{ctx.output_path('images')}/{s.id}.parquet")
        for s in plans["documents"] if cfg.mmc4 else []:
            _copy_into(f"{work_dir}/mmc4/{s.id}.parquet", f"{ctx.output_path('mmc4')}/{s.id}.parquet")
        self._write_index(ctx, plans["pairs"], counters["embedding_dim"])
        return self._stats(cfg, plans, img_sum, pair_sum, doc_sum, write_sum, counters)

    # ----------------------------------------------------------------- global decisions

    def _decide(self, run: DaskRun, cfg: ScoreConfig, shards: list[Shard]) -> tuple[str, str | None, dict, dict]:
        """The decisions that need the pool: the recipe's steps (filters.pairs.RECIPE_STEPS), then semantic dedup.

        Rows stay in shard files: the client computes only the pool-wide state (the top-fraction
        cutoff, k-means centroids of a bounded sample and the target ids, MetaCLIP's summed entry
        counts), the decision pass applies the steps per shard on the workers and writes
        ``<decide_dir>/decisions/<shard>.parquet``; SemDeDup of the survivors writes its own per-shard
        files. Returns (decide_dir, SemDeDup's dir or None, counters, the decision pass's summaries).
        """
        client, work_dir = run.client, run.work_dir
        steps = recipe_steps(cfg.recipe, cfg.filter_mode)
        counters: dict[str, Any] = {"recipe": list(cfg.recipe) if cfg.recipe is not None else None}
        decide_key = {"steps": list(steps), "min_clip_score": cfg.min_clip_score, "top_fraction": cfg.top_fraction,
                      "text_based": asdict(cfg.text_based), "image_based": asdict(cfg.image_based),
                      "metaclip": asdict(cfg.metaclip)}
        decide_dir = work_dir_for(work_dir, "decide", decide_key)  # inside work_dir: removed with it
        if not shards:
            return decide_dir, None, counters, {}
        dspec = DecideSpec(work_dir=work_dir, decide_dir=decide_dir, steps=steps, min_clip_score=cfg.min_clip_score,
                           synsets=cfg.text_based.synsets, metadata=cfg.metaclip.metadata,
                           metaclip_t=cfg.metaclip.t, metaclip_seed=cfg.metaclip.seed)
        score_files = [f"{work_dir}/pairs_scores/{s.id}.parquet" for s in shards]
        if "clip_top_fraction" in steps:
            cutoff = _top_fraction_cutoff(client, score_files, cfg.top_fraction)
            dspec = replace(dspec, cutoff=cutoff)
            counters["clip_score_cutoff"] = None if math.isinf(cutoff) else round(float(cutoff), 6)
        elif "clip_threshold" in steps:
            counters["clip_score_cutoff"] = round(float(cfg.min_clip_score), 6)
        if "image_based" in steps:
            counters["image_based"] = self._image_based_state(run, cfg, decide_dir, shards)
        if "metaclip" in steps:
            count_sum = run.map("metaclip-counts", partial(metaclip_count_shard, dspec), shards, f"{decide_dir}/count",
                                uses_model=False)
            total = None
            for s in shards:  # one entry-count vector at a time: the client holds two
                c = np.asarray(_load_npy(f"{decide_dir}/count/counts/{s.id}.npy"), dtype=np.int64)
                total = c.copy() if total is None else total + c
            _write_npy(f"{decide_dir}/metaclip_counts.npy", total)
            counters["metaclip"] = {
                "entries": int(total.size), "t": cfg.metaclip.t,
                "candidates": sum(v["candidates"] for v in count_sum.values()),
                "matched": sum(v["matched"] for v in count_sum.values()),
                "entries_matched": int((total > 0).sum()), "head_entries": int((total > cfg.metaclip.t).sum()),
            }
        dec_sum = run.map("decide", partial(decide_pairs_shard, dspec), shards, decide_dir, uses_model=False)
        counters["steps"] = {st: {"in": sum(v["steps"][st]["in"] for v in dec_sum.values()),
                                  "rejected": sum(v["steps"][st]["rejected"] for v in dec_sum.values())} for st in steps}
        summary = _scores_from_histograms([v["scores"] for v in dec_sum.values()])
        if summary:
            counters["clip_score"] = summary
        dedup_dir = None
        if cfg.semantic_dedup:
            dedup_dir, counters["semantic_dedup"] = self._semantic_dedup(client, cfg, work_dir, decide_dir, shards)
        return decide_dir, dedup_dir, counters, dec_sum

    def _image_based_state(self, run: DaskRun, cfg: ScoreConfig, decide_dir: str, shards: list[Shard]) -> dict:
        """k-means centroids of a bounded sample of the pool's image embeddings and the target ids, saved for the workers.

        The pool is every scored pair (finite clip_score), as DataComp clusters the whole pool;
        the sample is the rows whose seeded key hash falls under sample_size / rows (models.kmeans.sample_mask),
        in hash order, so it does not depend on how the images stage laid the rows out in files;
        k = min(clusters, ceil(pool / rows_per_cluster)). The client holds one shard's scores at a
        time, the sample (about sample_size rows) and the centroids.
        """
        from filters.image_based import target_cluster_ids
        from models.kmeans import fit_kmeans, in_hash_order, key_hashes, sample_mask

        ib, work_dir = cfg.image_based, run.work_dir
        path = f"{decide_dir}/image_based.npz"
        fs, p = url_to_fs(path)
        if not fs.exists(p):
            # Drawn by a hash of the pair key, in hash order: the same sample whatever the file layout.
            fraction = ib.sample_size / max(1, sum(s.rows for s in shards))
            for attempt in (fraction, 1.0):  # a small draw can miss every row: then take them all
                parts, pool = [], 0
                for s in shards:  # one shard's scores in memory at a time
                    score = pq.read_table(f"{work_dir}/pairs_scores/{s.id}.parquet", columns=["key", "clip_score"])
                    ok = np.isfinite(score.column("clip_score").to_numpy(zero_copy_only=False))
                    pool += int(ok.sum())
                    h = key_hashes(score.column("key").to_pylist(), ib.seed)
                    rows = np.flatnonzero(ok & sample_mask(h, attempt))
                    if rows.size:
                        parts.append((h[rows], _load_npy(f"{work_dir}/pairs_img/{s.id}.npy")[rows]))
                if parts or not pool:
                    break
            if not pool:
                raise StageError("score: recipe image_based: no decodable pair image to cluster")
            sample = in_hash_order(parts)
            k = min(ib.clusters, -(-pool // ib.rows_per_cluster))
            centroids = fit_kmeans(sample, k, ib.seed, ib.niter)
            targets = run.client.submit(_target_embeddings, run.spec, ib.targets, pure=False,  # this run's CLIP
                                        resources=run.resources).result()
            target_ids = target_cluster_ids(targets, centroids)
            fs.makedirs(p.rsplit("/", 1)[0], exist_ok=True)
            with fs.open(p + ".tmp", "wb") as fh:
                np.savez(fh, centroids=centroids, target_ids=target_ids, sample_rows=np.int64(sample.shape[0]),
                         targets=np.int64(targets.shape[0]), pool=np.int64(pool))
            fs.mv(p + ".tmp", p)
        with np.load(_local_or_fetch(path)) as z:
            return {"clusters": int(z["centroids"].shape[0]), "target_clusters": int(z["target_ids"].size),
                    "pool": int(z["pool"]), "sample_rows": int(z["sample_rows"]), "target_images": int(z["targets"])}

    def _semantic_dedup(self, client, cfg: ScoreConfig, work_dir: str, decide_dir: str,
                        shards: list[Shard]) -> tuple[str, dict]:
        """SemDeDup (pipelines/score_global.py) over the pairs every step kept; returns its decisions' dir."""
        from pipelines.score_global import semdedup

        candidates = {}
        for s in shards:  # one bool a row, shard by shard
            dec = pq.read_table(f"{decide_dir}/decisions/{s.id}.parquet", columns=["reason"])
            candidates[s.id] = pc.is_null(dec.column("reason")).to_numpy(zero_copy_only=False)
        res = semdedup(client, work_dir, shards, candidates, cfg.semantic_dedup_threshold)
        return res.dir, res.counters

    # ----------------------------------------------------------------- outputs and stats

    def _write_index(self, ctx: StageContext, shards: list[Shard], dim: int | None) -> None:
        index = {
            "dim": dim, "dtype": "float16", "normalised": True,
            "about": "embedding_row r of score/pairs is row r - offset of the shard whose [offset, offset+rows) holds r",
            "shards": [{"id": s.id, "offset": s.offset, "rows": s.rows, "image": f"image/{s.id}.npy",
                        "text": f"text/{s.id}.npy"} for s in shards],
        }
        fs, p = url_to_fs(ctx.output_path("embeddings"))
        fs.makedirs(p, exist_ok=True)
        with fs.open(f"{p}/index.json", "w") as fh:
            json.dump(index, fh, indent=1)

    def _stats(self, cfg, plans, img_sum, pair_sum, doc_sum, write_sum, counters) -> StageStats:
        pair_rejected = Counter(_sum_counters(write_sum.values(), "rejected"))
        rows_in = sum(s.rows for s in plans["pairs"])
        rows_out = sum(w["rows_out"] for w in write_sum.values())
        stats = StageStats(stage=STAGE, rows_in=rows_in, rows_out=rows_out, rejected=dict(pair_rejected))
        stats.tables["images"] = {
            "rows_in": sum(s["rows"] for s in img_sum.values()),
            "rows_out": sum(s["rows_out"] for s in img_sum.values()),
            "rejected": _sum_counters(img_sum.values(), "rejected"),
        }
        if cfg.mmc4:
            stats.tables["documents"] = {
                "rows_in": sum(s["rows"] for s in doc_sum.values()),
                "rows_out": sum(s["rows_out"] for s in doc_sum.values()),
                "rejected": _sum_counters(doc_sum.values(), "rejected"),
            }
            stats.tables["document_images"] = {
                "rows_in": sum(s["images_in"] for s in doc_sum.values()),
                "rows_out": sum(s["images_out"] for s in doc_sum.values()),
                "rejected": _sum_counters(doc_sum.values(), "images_rejected"),
            }
        all_sums = [*img_sum.values(), *pair_sum.values(), *doc_sum.values()]
        encoded = sum(s.get("images_encoded", 0) for s in all_sums)
        model_s = sum(s.get("seconds_model", 0.0) for s in all_sums)
        counters.update({
            "images_encoded": encoded,
            "images_looked_up": sum(s.get("images_looked_up", 0) for s in all_sums),
            "pair_images_encoded_from_pair_bytes": sum(s.get("images_encoded", 0) for s in pair_sum.values()),
            "decontaminated_pairs": sum(s.get("decontaminated", 0) for s in pair_sum.values()),
            "images_with_faces": sum(s.get("images_with_faces", 0) for s in img_sum.values()),  # models/faces.py
            "sentences_encoded": sum(s.get("sentences", 0) for s in doc_sum.values()),
            "mmc4_core_documents": sum(s.get("core", 0) for s in doc_sum.values()),
            "image_model_seconds": round(model_s, 3),
            "images_per_model_second": round(encoded / model_s, 1) if model_s else None,
            "shards": {k: len(v) for k, v in plans.items()},
            "shards_skipped": sum(bool(s.get("_resumed")) for s in all_sums),  # finished by an earlier attempt
        })
        stats.counters = counters
        stats.outputs = {
            "pairs": rows_out,
            "mmc4": stats.tables.get("documents", {}).get("rows_out", 0),
            "mmc4_core": counters["mmc4_core_documents"],
            "embeddings": rows_in,
            "images": stats.tables["images"]["rows_out"],
        }
        return stats


