"""``curate dedup``: web-scale deduplication of interleaved documents on Spark.

Input: the extract stage's ``documents/`` (DOCUMENTS schema) and, optionally,
``pairs/`` (PAIRS). Output: ``documents/``, ``pairs/`` and ``rejects/``
(REJECTS, one row per removed document or pair, ``duplicate_of`` = the kept
document for duplicates). Steps, in order, each switchable in ``DedupConfig``:

0. With ``dedup.state_dir`` (:mod:`pipelines.dedup_state`): documents an earlier
   snapshot curated (same URL, same text, or a verified MinHash match) are
   ``seen_in:<snapshot>`` (or, ``state_policy: newer_wins``, kept and the earlier
   document listed in ``removals/``); the kept documents are recorded after the
   outputs are written.

1. URL dedup (``url_duplicate``): one document per normalised page URL
   (:mod:`curation.urls`), keeping the latest ``warc_date``, then the latest
   ``warc_filename``, then the smallest ``doc_id`` (``sql/dedup_url_latest.sql``).
2. Exact dedup (``exact_duplicate``): xxh64 of the normalised joined text
   (:func:`curation.minhash.normalize_text`); keep the longest raw text, then
   the latest ``warc_date``, then the smallest ``doc_id``. Documents whose
   normalised text is empty are not grouped (step 6 removes them).
3. Near dedup (``near_duplicate``): MinHash over word ``ngram_size``-gram
   shingles with 64-bit hashes (:mod:`curation.minhash`, ``minhash_scheme``,
   bit-identical to datasketch's; computed in ``mapInArrow`` one Arrow batch
   at a time), ``num_bands`` bands of ``rows_per_band`` values; documents that
   share a band bucket are candidates (``sql/dedup_lsh_candidates.sql``: each
   member paired with the bucket's first ``lsh_bucket_anchors`` members),
   optionally verified by the exact Jaccard of their shingle sets
   (``verify_jaccard``/``jaccard_threshold``), then connected components in
   Spark with large-star/small-star (``sql/dedup_cc_*.sql``, Kiveris et al.
   2014), at most ``max_cc_iterations`` rounds, lineage cut every round by
   ``checkpoint()`` (when ``spark.checkpoint_dir`` is set) or
   ``localCheckpoint()``. One document per component is kept (longest text,
   latest date, smallest id).

   The S-curve: two documents with Jaccard ``s`` become candidates with
   probability ``1 - (1 - s**r)**b``. With b=14, r=8 (112 permutations, as
   datatrove) the curve's steepest point is ``(1/b)**(1/r)`` ~ 0.72:
   P(candidate) is 0.06 at s=0.5, 0.36 at 0.7, 0.92 at 0.8, 0.99 at 0.85,
   ~1 at 0.9. More rows per band moves the threshold up and sharpens the
   curve (fewer false candidates, more missed pairs near the threshold); more
   bands move it down and raise recall at the cost of more candidates and
   more signature values per document. Verification removes the false
   candidates below ``jaccard_threshold`` (default 0.8, as NeMo Curator; cost:
   one join of candidate pairs with both texts); without it, chains of false
   candidates can merge unrelated documents into one component. Measured
   (tests/pipelines/test_spark_dedup.py): pair precision and recall at true
   Jaccard >= 0.8 both >= 0.95 on edited real pages and on the sample, and
   the same kept set as datasketch's MinHashLSH with the same parameters.
   Components are transitive, so two documents of one component can be
   below 0.8 to each other (a 0.95 and a 0.8 copy of one page).
4. Paragraph dedup (counter ``paragraphs_removed``): a paragraph (text
   positions are split on the blank line extract joins paragraphs with) whose
   normalised text occurs in more than ``paragraph_max_per_domain`` documents
   of the same domain (host without ``www.``) is removed from all of them
   (OBELICS step 9; ``sql/dedup_paragraph_counts.sql``).
5. Image dedup: an image URL in more than ``image_max_docs`` documents is
   dropped from every document (its pairs rejected ``image_too_common``); a
   repeated image URL inside a document keeps its first position; then
   documents with an identical non-empty set of images keep one
   (``image_set_duplicate``, OBELICS step 11). Positions removed in 4/5 are
   cut from ``texts``/``images``/``metadata`` together, so they stay aligned;
   text positions that become neighbours are joined (:func:`curation.layout.cut_positions`).
6. Documents left without text (``no_text``) or, if configured, without an
   image (``no_image``) are removed.

``duplicate_of`` is resolved transitively: a page removed by URL dedup in
favour of a page that exact dedup removed later points to the final keeper.
(If the keeper is later removed for a non-duplicate reason, e.g. ``no_text``
after paragraph removal, ``duplicate_of`` still names it and it is in the
rejects.)

Resume (:mod:`pipelines.dedup_steps`): each step writes its result as Parquet with a done-marker
under ``<run>/_work/dedup-<hash of the dedup config and the inputs' run ids>/<step>/`` (``keys``,
``url``, ``exact``, ``near_candidates``, ``near_components``, ``paragraphs``, ``images``,
``image_sets``, ``documents``, ``doc_rejects``, ``pairs``; ``seen`` with a state), so a killed
dedup reruns only the steps after the last finished one (``dedup: N step(s) already finished,
resumed: ...``; ``steps_resumed`` in stats.json); the directory is removed once the counts conserve.

Only the per-row work that SQL cannot do is Python (URL normalisation, text
hashing and MinHash, Jaccard verification, cutting positions out of the
aligned lists and the metadata JSON); all grouping, counting and joining is
Spark SQL in ``sql/dedup_*.sql``.
"""
from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import xxhash

from curation.config import DedupConfig
from curation.layout import PARAGRAPH_SEP, WHOLE_POSITION, cut_positions, load_metadata
from curation.minhash import MinHasher, band_hashes, batch_shingles, normalize_text
from curation.rejects import spark_rejects
from curation.schemas import DOCUMENTS, PAIRS, spark_ddl
from curation.spark import get_spark
from curation.sql import load_sql
from curation.stage import Stage, StageContext, StageStats
from curation.urls import normalize_url, url_domain
from pipelines.dedup_steps import StepStore

log = logging.getLogger(__name__)

STAGE = "dedup"
FEATURES_DDL = (
    "doc_id string, url_norm string, domain string, text_len bigint, text_hash bigint, "
    "bands array<bigint>, general_metadata string"
)
VERIFY_DDL = "src string, dst string, jaccard double"
REWRITE_DDL = spark_ddl(DOCUMENTS)
HIST_BUCKETS = ((2, 2), (3, 5), (6, 10), (11, 100), (101, 1000), (1001, None))


# --------------------------------------------------------------------------- Arrow helpers
def _list_texts(col: pa.Array) -> list[str]:
    """Joined text of every row of a list<string> column; invalid UTF-8 replaced, nulls skipped."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    offsets = col.offsets.to_numpy()
    values = col.values
    raw = values.cast(pa.binary()).to_pylist() if len(values) else []
    out = []
    for i in range(len(col)):
        if not col[i].is_valid:
            out.append("")
            continue
        parts = [b.decode("utf-8", "replace") for b in raw[offsets[i] : offsets[i + 1]] if b]
        out.append("\n".join(parts))
    return out


def _str_values(col: pa.Array) -> list[str | None]:
    return [None if b is None else b.decode("utf-8", "replace") for b in col.cast(pa.binary()).to_pylist()]


def _features_fn(cfg: DedupConfig):
    num_perm = cfg.num_bands * cfg.rows_per_band

    def fn(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        hasher = MinHasher(num_perm, cfg.ngram_size, cfg.seed, scheme=cfg.minhash_scheme)
        for batch in batches:
            n = batch.num_rows
            urls = _str_values(batch.column("url"))
            texts = _list_texts(batch.column("texts"))
            norm = [normalize_text(t) for t in texts]
            text_hash = [
                xxhash.xxh64_intdigest(t.encode("utf-8", "surrogatepass")) if t else None for t in norm
            ]
            text_hash = [None if h is None else (h - (1 << 64) if h >= (1 << 63) else h) for h in text_hash]
            bands: list[Any] = [None] * n
            if cfg.near_dedup and n:
                hs, docs = batch_shingles(norm, cfg.ngram_size)
                sig = hasher._signatures(hs, docs, n)
                bh = band_hashes(sig, cfg.num_bands, cfg.rows_per_band)
                has = np.bincount(docs, minlength=n) > 0
                bands = [bh[i].tolist() if has[i] else None for i in range(n)]
            yield pa.RecordBatch.from_arrays(
                [
                    batch.column("doc_id"),
                    pa.array([normalize_url(u) for u in urls], pa.string()),
                    pa.array([url_domain(u) for u in urls], pa.string()),
                    pa.array([len(t) for t in texts], pa.int64()),
                    pa.array(text_hash, pa.int64()),
                    pa.array(bands, pa.list_(pa.int64())),
                    batch.column("general_metadata"),
                ],
                names=["doc_id", "url_norm", "domain", "text_len", "text_hash", "bands", "general_metadata"],
            )

    return fn


def _verify_fn(cfg: DedupConfig):
    def fn(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            a = _list_texts(batch.column("src_texts"))
            b = _list_texts(batch.column("dst_texts"))
            sa, da = batch_shingles(a, cfg.ngram_size)
            sb, db = batch_shingles(b, cfg.ngram_size)
            ca = np.r_[0, np.cumsum(np.bincount(da, minlength=len(a)))]
            cb = np.r_[0, np.cumsum(np.bincount(db, minlength=len(b)))]
            jac = []
            for i in range(len(a)):
                x = np.unique(sa[ca[i] : ca[i + 1]])
                y = np.unique(sb[cb[i] : cb[i + 1]])
                if len(x) == 0 and len(y) == 0:
                    jac.append(1.0)
                    continue
                inter = len(np.intersect1d(x, y, assume_unique=True))
                jac.append(inter / (len(x) + len(y) - inter))
            yield pa.RecordBatch.from_arrays(
                [batch.column("src"), batch.column("dst"), pa.array(jac, pa.float64())],
                names=["src", "dst", "jaccard"],
            )

    return fn


# The separator as a Spark SQL string literal's body ('\n\n'); it has no regex metacharacter,
# so split() in sql/dedup_paragraph_counts.sql cuts exactly where curation.layout joins.
_SQL_PARAGRAPH_SEP = PARAGRAPH_SEP.encode("unicode_escape").decode("ascii")


def _rewrite_fn():
    """``mapInArrow`` body over the documents that lose something (rows carry ``drops``)."""
    list_bin = pa.list_(pa.binary())

    def fn(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            texts = batch.column("texts").cast(list_bin).to_pylist()
            images = batch.column("images").to_pylist()
            metas = _str_values(batch.column("metadata"))
            drops = batch.column("drops").to_pylist()
            new_t, new_i, new_m = [], [], []
            for i in range(batch.num_rows):
                by_pos: dict[int, set[int]] = {}
                for d in drops[i] or ():
                    by_pos.setdefault(d["pos"], set()).add(d["ppos"])
                t, im, m = cut_positions(texts[i] or [], images[i] or [], load_metadata(metas[i]), by_pos)
                new_t.append(t)
                new_i.append(im)
                new_m.append(json.dumps(m, ensure_ascii=False))
            cols = {name: batch.column(name) for name in DOCUMENTS.names}
            cols["texts"] = pa.array(new_t, list_bin).view(pa.list_(pa.string()))
            cols["images"] = pa.array(new_i, pa.list_(pa.string()))
            cols["metadata"] = pa.array(new_m, pa.string())
            yield pa.RecordBatch.from_arrays([cols[n] for n in DOCUMENTS.names], names=DOCUMENTS.names)

    return fn


# --------------------------------------------------------------------------- the job
@dataclass
class DedupResult:
    """What :func:`run_dedup` produced: DataFrames (lazy, but built on checkpoints) and counters."""

    documents: Any
    pairs: Any | None
    rejects: Any
    counters: dict[str, Any] = field(default_factory=dict)
    # Near-dup edges kept for connected components: (src, dst[, jaccard]); None if the step is off.
    near_pairs: Any | None = None
    # With dedup.state_dir: the earlier documents this run supersedes (newer_wins), and the call that
    # records this run's kept documents in the state once the outputs are written.
    removals: Any | None = None
    record_state: Any | None = None


class _Views:
    def __init__(self, spark):
        self.spark = spark
        self.prefix = f"dedup_{uuid.uuid4().hex[:8]}"
        self.names: list[str] = []

    def __call__(self, df, name: str) -> str:
        view = f"{self.prefix}_{name}"
        df.createOrReplaceTempView(view)
        self.names.append(view)
        return view

    def drop(self) -> None:
        for v in self.names:
            self.spark.catalog.dropTempView(v)


def _cut(df, spark):
    """Cut lineage: reliable checkpoint when a checkpoint dir is set, else a local one."""
    if spark.sparkContext.getCheckpointDir():
        return df.checkpoint(eager=True)
    return df.localCheckpoint(eager=True)


def connected_components(spark, edges, max_iterations: int, views: _Views) -> tuple[Any, int, bool]:
    """Large-star/small-star over ``edges`` (src, dst). Returns (node, root) rows, iterations, converged.

    Every node of the graph appears once; ``root`` is the smallest node of its component.
    Each round is cut from its lineage (:func:`_cut`); convergence (small-star returned its
    input) is one action per round.
    """
    from pyspark.sql import functions as F

    cur = _cut(edges.select("src", "dst").where("src <> dst").distinct(), spark)
    iterations = 0
    converged = False
    while iterations < max_iterations:
        iterations += 1
        large = _cut(spark.sql(load_sql("dedup_cc_large_star", edges=views(cur, f"cc{iterations}a"))), spark)
        small = _cut(spark.sql(load_sql("dedup_cc_small_star", edges=views(large, f"cc{iterations}b"))), spark)
        a, b = small.withColumn("_a", F.lit(1)), cur.withColumn("_b", F.lit(1))
        changed = a.join(b, ["src", "dst"], "full_outer").where(F.col("_a").isNull() | F.col("_b").isNull())
        cur = small
        if changed.isEmpty():
            converged = True
            break
    if not converged:
        log.warning("connected components did not converge in %d iterations; components may be split", iterations)
        # Not a star forest yet: take each node's smallest neighbour-or-self as its label.
        sym = cur.select(F.col("src").alias("node"), F.col("dst").alias("root")).unionByName(
            cur.select(F.col("dst").alias("node"), F.col("src").alias("root"))
        )
        return (
            _cut(sym.groupBy("node").agg(F.least(F.min("root"), F.first("node")).alias("root")), spark),
            iterations,
            converged,
        )
    # At the fixed point every edge is (node, root) with root < node; roots map to themselves.
    members = cur.select(F.col("src").alias("node"), F.col("dst").alias("root"))
    roots = cur.select(F.col("dst").alias("node"), F.col("dst").alias("root"))
    comp = members.unionByName(roots).groupBy("node").agg(F.min("root").alias("root"))
    return _cut(comp, spark), iterations, converged


def _histogram(sizes: list[int]) -> dict[str, int]:
    hist: dict[str, int] = {}
    for lo, hi in HIST_BUCKETS:
        label = f"{lo}" if lo == hi else (f"{lo}-{hi}" if hi else f">{lo - 1}")
        hist[label] = sum(1 for s in sizes if s >= lo and (hi is None or s <= hi))
    return hist


@dataclass
class _Job:
    """What every step reads: the session and config, the input documents (cut on first use) and
    their keys, the temp views, the counters, the reject frames of the steps run so far, and the
    step checkpoints (:class:`pipelines.dedup_steps.StepStore`)."""

    spark: Any
    cfg: DedupConfig
    views: _Views
    documents_in: Any
    steps: StepStore
    keys: Any = None
    keys_view: str = ""
    counters: dict[str, Any] = field(default_factory=dict)
    rejects: list = field(default_factory=list)  # (row_id, reason, detail, duplicate_of) frames, read from cuts
    _docs: Any = None

    @classmethod
    def start(cls, spark, documents_df, cfg: DedupConfig, steps: StepStore | None = None) -> "_Job":
        """Compute each document's keys (URL, text hash, LSH bands, ...) once (step ``keys``)."""
        job = cls(spark, cfg, _Views(spark), documents_df, steps or StepStore(spark, None))

        def keys():
            feats = job.docs.select("doc_id", "url", "texts", "general_metadata").mapInArrow(
                _features_fn(cfg), FEATURES_DDL)
            return {"keys": _cut(spark.sql(load_sql("dedup_doc_keys", features=job.views(feats, "features"))), spark)}

        job.keys = job.step("keys", keys)["keys"]
        job.keys_view = job.views(job.keys, "keys")
        return job

    @property
    def docs(self):
        """The input documents, cut from their lineage on first use (a rerun whose steps all
        finished never reads them)."""
        if self._docs is None:
            self._docs = _cut(self.documents_in.select(*DOCUMENTS.names), self.spark)
        return self._docs

    def step(self, name: str, compute) -> dict[str, Any]:
        """``compute()``'s frames, or the finished step's files on a rerun (:class:`StepStore`)."""
        return self.steps.run(name, compute, self.counters)

    def sql(self, name: str, **params: object):
        return self.spark.sql(load_sql(name, **params))

    def cut(self, df):
        return _cut(df, self.spark)

    def reject(self, frame) -> None:
        """Record a step's reject frame: later steps see only the documents no frame removed."""
        if frame is not None:
            self.rejects.append(frame)

    def alive(self):
        """Keys of the documents no step has removed yet (a lazy anti-join on the cut rejects)."""
        from pyspark.sql import functions as F

        alive = self.keys
        for part in self.rejects:
            alive = alive.join(part.select(F.col("row_id").alias("doc_id")), "doc_id", "left_anti")
        return alive


def _removed_from(groups, reason: str, detail_col):
    """Rows (doc_id, keep_id) of a keep-one-per-group query -> the reject frame of those not kept."""
    from pyspark.sql import functions as F

    return groups.where("doc_id <> keep_id").select(
        F.col("doc_id").alias("row_id"), F.lit(reason).alias("reason"),
        detail_col.alias("detail"), F.col("keep_id").alias("duplicate_of"),
    )


def url_duplicates(job: _Job):
    """Step 1: one document per normalised URL (latest capture); the reject frame of the others."""
    from pyspark.sql import functions as F

    url = job.sql("dedup_url_latest", keys=job.keys_view)
    return job.cut(_removed_from(url, "url_duplicate", F.concat(F.lit("same URL "), F.col("url_norm"))))


def exact_duplicates(job: _Job):
    """Step 2: one surviving document per normalised-text hash; the reject frame of the others."""
    from pyspark.sql import functions as F

    grp = job.sql("dedup_keep_best", table=job.views(job.alive(), "alive_exact"), group="text_hash")
    return job.cut(_removed_from(grp, "exact_duplicate", F.lit("same normalised text")))


def near_duplicates(job: _Job) -> tuple[Any, Any]:
    """Step 3: LSH candidates -> (Jaccard verification) -> connected components -> one kept per
    component. Returns (reject frame or None when there is no edge, the edges kept). Two
    checkpointed steps: ``near_candidates`` (the verified edges) and ``near_components``."""
    near_pairs = job.step("near_candidates", lambda: {"edges": near_candidates(job)})["edges"]
    cfg, counters = job.cfg, job.counters
    n_edges = counters["near_verified_pairs"] if cfg.verify_jaccard else counters["near_candidate_pairs"]
    rejects = job.step("near_components", lambda: {"rejects": near_components(job, near_pairs, n_edges)})["rejects"]
    return rejects, near_pairs


def near_candidates(job: _Job):
    """Step 3a: the LSH candidate pairs sharing a band bucket, with verification the pairs whose
    exact Jaccard reaches the threshold: the edges of the components."""
    from pyspark.sql import functions as F

    cfg, counters = job.cfg, job.counters
    anchors = cfg.lsh_bucket_anchors if cfg.verify_jaccard else 1
    cand = job.cut(job.sql("dedup_lsh_candidates", keys=job.views(job.alive(), "alive_near"), anchors=anchors))
    if not cfg.verify_jaccard:
        counters["near_candidate_pairs"] = cand.count()
        return cand
    texts = job.docs.select("doc_id", "texts")
    joined = (
        cand.join(texts.select(F.col("doc_id").alias("src"), F.col("texts").alias("src_texts")), "src")
        .join(texts.select(F.col("doc_id").alias("dst"), F.col("texts").alias("dst_texts")), "dst")
        .select("src", "dst", "src_texts", "dst_texts")
    )
    scored = job.cut(joined.mapInArrow(_verify_fn(cfg), VERIFY_DDL))
    row = scored.agg(F.count("*").alias("n"),
                     F.count(F.when(F.col("jaccard") >= cfg.jaccard_threshold, 1)).alias("ok")).first()
    counters["near_candidate_pairs"] = row["n"]
    counters["near_verified_pairs"] = row["ok"]
    counters["near_rejected_candidate_pairs"] = row["n"] - row["ok"]
    return scored.where(F.col("jaccard") >= cfg.jaccard_threshold)


def near_components(job: _Job, near_pairs, n_edges: int):
    """Step 3b: connected components of the edges, one document kept per component; the reject
    frame of the others (None when there is no edge)."""
    from pyspark.sql import functions as F

    cfg, counters = job.cfg, job.counters
    rejects = None
    if n_edges:
        comp, iters, converged = connected_components(job.spark, near_pairs.select("src", "dst"),
                                                      cfg.max_cc_iterations, job.views)
        sizes = [r["count"] for r in comp.groupBy("root").count().collect()]
        member_keys = job.keys.join(comp.withColumnRenamed("node", "doc_id"), "doc_id")
        grp = job.sql("dedup_keep_best", table=job.views(member_keys, "components"), group="root")
        rejects = job.cut(
            _removed_from(grp, "near_duplicate", F.concat(F.lit("MinHash component of "), F.col("grp"))))
    else:
        iters, converged, sizes = 0, True, []
    counters["cc_iterations"] = iters
    counters["cc_converged"] = converged
    counters["near_components"] = len(sizes)
    counters["near_component_size_max"] = max(sizes, default=0)
    counters["near_component_size_histogram"] = _histogram(sizes)
    return rejects


def repeated_paragraphs(job: _Job, alive_docs_view: str):
    """Step 4: (doc_id, pos, ppos) of every paragraph repeated in more than
    ``paragraph_max_per_domain`` documents of its domain."""
    from pyspark.sql import functions as F

    para = job.cut(job.sql("dedup_paragraph_counts", docs=alive_docs_view,
                           max_per_domain=job.cfg.paragraph_max_per_domain, paragraph_sep=_SQL_PARAGRAPH_SEP))
    row = para.agg(F.count("*").alias("n"), F.countDistinct("doc_id").alias("docs")).first()
    job.counters["paragraphs_removed"] = row["n"]
    job.counters["paragraph_docs_touched"] = row["docs"]
    return para.select("doc_id", "pos", "ppos")


def common_images(job: _Job, alive_docs_view: str) -> tuple[Any, Any]:
    """Step 5a: image URLs in more than ``image_max_docs`` documents (url, n_docs), and the
    (doc_id, pos) of their positions and of images repeated inside a document (first one kept)."""
    from pyspark.sql import functions as F

    common = job.cut(job.sql("dedup_image_doc_counts", docs=alive_docs_view, max_docs=job.cfg.image_max_docs))
    img_pos = job.cut(job.sql("dedup_image_positions", docs=alive_docs_view, common=job.views(common, "common")))
    by_reason = {r["reason"]: r["count"] for r in img_pos.groupBy("reason").count().collect()}
    job.counters["images_too_common_urls"] = common.count()
    job.counters["image_positions_too_common"] = by_reason.get("image_too_common", 0)
    job.counters["image_positions_repeated_in_doc"] = by_reason.get("image_repeated_in_doc", 0)
    return common, img_pos.select("doc_id", F.col("pos").cast("int"))


def image_set_duplicates(job: _Job, alive_docs_view: str, image_drops):
    """Step 5b: one document per identical non-empty set of (remaining) images; the others' reject frame."""
    from pyspark.sql import functions as F

    sets = job.sql("dedup_image_sets", docs=alive_docs_view, dropped=job.views(image_drops, "image_drops"),
                   keys=job.keys_view)
    grp = job.sql("dedup_keep_best", table=job.views(sets, "image_sets"), group="image_set")
    return job.cut(_removed_from(grp, "image_set_duplicate", F.lit("identical set of images")))


def cut_dropped(job: _Job, alive_docs, drop_parts: list):
    """The documents still alive, with the paragraphs/positions of ``drop_parts`` cut out
    (:func:`curation.layout.cut_positions` in ``mapInArrow``, only on the documents that lose
    something; the others pass through untouched)."""
    from pyspark.sql import functions as F

    dropped = job.spark.createDataFrame([], "doc_id string, pos int, ppos int")
    for part in drop_parts:
        dropped = dropped.unionByName(part.select("doc_id", F.col("pos").cast("int"), F.col("ppos").cast("int")))
    drops = dropped.distinct().groupBy("doc_id").agg(F.collect_list(F.struct("pos", "ppos")).alias("drops"))
    survivors = job.cut(
        alive_docs.join(job.alive().select("doc_id"), "doc_id", "left_semi")
        .select(*DOCUMENTS.names).join(drops, "doc_id", "left")
    )
    touched = survivors.where(F.col("drops").isNotNull()).select(*DOCUMENTS.names, "drops")
    return survivors.where(F.col("drops").isNull()).select(*DOCUMENTS.names).unionByName(
        touched.mapInArrow(_rewrite_fn(), REWRITE_DDL)
    )


def empty_documents(job: _Job, documents) -> tuple[Any, Any]:
    """Step 6: (reject frame of the documents left without text / images, the kept documents)."""
    from pyspark.sql import functions as F

    cfg = job.cfg
    n_text = F.size(F.filter(F.coalesce("texts", F.array()), lambda t: t.isNotNull() & (F.trim(t) != "")))
    n_img = F.size(F.filter(F.coalesce("images", F.array()), lambda t: t.isNotNull() & (t != "")))
    empty_reason = F.when(F.lit(cfg.drop_docs_without_text) & (n_text == 0), F.lit("no_text")).when(
        F.lit(cfg.drop_docs_without_images) & (n_img == 0), F.lit("no_image")
    )
    flagged = job.cut(documents.withColumn("_reason", empty_reason))
    rejects = flagged.where(F.col("_reason").isNotNull()).select(
        F.col("doc_id").alias("row_id"), F.col("_reason").alias("reason"),
        F.lit("nothing left after dedup").alias("detail"), F.lit(None).cast("string").alias("duplicate_of"),
    )
    return rejects, flagged.where(F.col("_reason").isNull()).select(*DOCUMENTS.names)


def document_rejects(job: _Job):
    """Every step's rejects in one frame, ``duplicate_of`` followed to the final keeper (one
    query: a chain has one link per step); counts the duplicates per reason."""
    doc_rej = job.spark.createDataFrame([], "row_id string, reason string, detail string, duplicate_of string")
    for part in job.rejects:
        doc_rej = doc_rej.unionByName(part)
    doc_rej = job.cut(job.sql("dedup_resolve_duplicate_of", rejects=job.views(doc_rej, "rej_raw")))
    job.counters["documents_in"] = job.docs.count()
    by_reason = {r["reason"]: r["count"] for r in doc_rej.groupBy("reason").count().collect()}
    for reason, name in (("url_duplicate", "url_duplicates"), ("exact_duplicate", "exact_duplicates"),
                         ("near_duplicate", "near_duplicates"), ("image_set_duplicate", "image_set_duplicates")):
        job.counters[name] = by_reason.get(reason, 0)
    return doc_rej


def decide_pairs(job: _Job, pairs_df, doc_rejects_view: str, kept, common_view: str) -> tuple[Any, Any]:
    """(kept pairs, pair rejects): a pair goes with its document and with a too-common image."""
    from pyspark.sql import functions as F

    decided = job.cut(job.sql(
        "dedup_pairs",
        pairs=job.views(pairs_df.select(*PAIRS.names), "pairs"),
        doc_rejects=doc_rejects_view,
        kept_docs=job.views(kept.select("doc_id"), "kept"),
        common=common_view,
    ))
    kept_pairs = decided.where(F.col("reject_reason").isNull()).select(*PAIRS.names)
    rejects = spark_rejects(decided.where(F.col("reject_reason").isNotNull()), "pairs", STAGE, row_id="key",
                            reason="reject_reason", detail="reject_detail", duplicate_of=None)
    return kept_pairs, rejects


def run_dedup(spark, documents_df, pairs_df, cfg: DedupConfig, state=None, steps: StepStore | None = None) -> DedupResult:
    """Run every enabled dedup step; return kept documents/pairs, rejects and counters.

    Each step is a function returning its reject frame (or the positions it drops); a step
    reads only the documents no earlier step removed (:meth:`_Job.alive`). Intermediate results
    that later steps read more than once are cut from their lineage (:func:`_cut`); counters come
    from a few aggregate actions on those, so a small input costs tens of Spark jobs, not hundreds.
    With ``steps`` (a :class:`StepStore` with a work directory) each step's result is written
    there and a rerun reads the steps that finished instead of computing them.
    """
    from pyspark.sql import functions as F

    if hasattr(cfg, "validate"):
        cfg.validate()
    job = _Job.start(spark, documents_df, cfg, steps)
    removals = sigs = None
    if state is not None:  # step 0: what an earlier snapshot curated (pipelines/dedup_state.py)
        from pipelines.dedup_state import seen_before

        def seen():
            rejects, removed, signatures = seen_before(job, state, _list_texts)
            return {"rejects": rejects, "removals": removed, "sigs": signatures}

        got = job.step("seen", seen)
        removals, sigs = got["removals"], got["sigs"]
        job.reject(got["rejects"])
    if cfg.url_dedup:
        job.reject(job.step("url", lambda: {"rejects": url_duplicates(job)})["rejects"])
    if cfg.exact_dedup:
        job.reject(job.step("exact", lambda: {"rejects": exact_duplicates(job)})["rejects"])
    near_pairs = None
    if cfg.near_dedup:
        near_rejects, near_pairs = near_duplicates(job)
        job.reject(near_rejects)

    memo: dict[str, Any] = {}

    def alive_docs() -> tuple[Any, str]:
        """The surviving documents with their domain (cut, and a view), built only when a step needs them."""
        if not memo:
            memo["df"] = job.cut(job.docs.join(job.alive().select("doc_id", "domain"), "doc_id"))
            memo["view"] = job.views(memo["df"], "alive_docs")
        return memo["df"], memo["view"]

    drop_parts = []  # (doc_id, pos, ppos): ppos = paragraph inside a text position, -1 = the whole position
    if cfg.paragraph_dedup:
        drop_parts.append(job.step("paragraphs", lambda: {"drops": repeated_paragraphs(job, alive_docs()[1])})["drops"])
    common = spark.createDataFrame([], "url string, n_docs bigint")
    image_drops = spark.createDataFrame([], "doc_id string, pos int")
    if cfg.image_dedup:
        got = job.step("images", lambda: dict(zip(("common", "drops"), common_images(job, alive_docs()[1]))))
        common, image_drops = got["common"], got["drops"]
        drop_parts.append(image_drops.withColumn("ppos", F.lit(WHOLE_POSITION)))
    if cfg.image_set_dedup:
        job.reject(job.step("image_sets",
                            lambda: {"rejects": image_set_duplicates(job, alive_docs()[1], image_drops)})["rejects"])

    got = job.step("documents", lambda: dict(zip(("rejects", "kept"),
                                                 empty_documents(job, cut_dropped(job, alive_docs()[0], drop_parts)))))
    kept = got["kept"]
    job.reject(got["rejects"])
    doc_rej = job.step("doc_rejects", lambda: {"rejects": document_rejects(job)})["rejects"]
    rejects = spark_rejects(doc_rej, "documents", STAGE)
    pairs_out = None
    if pairs_df is not None:
        got = job.step("pairs", lambda: dict(zip(("kept", "rejects"), decide_pairs(
            job, pairs_df, job.views(doc_rej, "doc_rejects"), kept, job.views(common, "common_final")))))
        pairs_out = got["kept"]
        rejects = rejects.unionByName(got["rejects"])
    record = None
    if state is not None:
        from pipelines.dedup_state import record_kept

        def record(written_documents):
            return record_kept(job, state, sigs, written_documents)
    return DedupResult(documents=kept, pairs=pairs_out, rejects=rejects, counters=job.counters, near_pairs=near_pairs,
                       removals=removals, record_state=record)


# --------------------------------------------------------------------------- the stage
class DedupStage(Stage):
    """``curate dedup``: inputs {"documents": path, "pairs": path (optional)}."""

    name = "dedup"
    outputs = ("documents", "pairs")
    config_sections = ("dedup",)

    def run(self, ctx: StageContext) -> StageStats:
        spark = get_spark(ctx.config.spark)
        cfg = ctx.config.dedup
        docs_in = spark.read.schema(spark_ddl(DOCUMENTS)).parquet(ctx.inputs["documents"])
        pairs_path = ctx.inputs.get("pairs")
        pairs_in = spark.read.schema(spark_ddl(PAIRS)).parquet(pairs_path) if pairs_path else None
        state = None
        if cfg.state_dir:  # cross-snapshot: this snapshot against what earlier ones curated
            from pipelines.dedup_state import DedupState

            state = DedupState(cfg.state_dir, ctx.config.snapshot, ctx.run_id)
        steps = self.step_store(spark, ctx, state)
        res = run_dedup(spark, docs_in, pairs_in, cfg, state, steps)
        if steps.resumed:
            log.info("dedup: %d step(s) already finished, resumed: %s; computed: %s (work dir %s)",
                     len(steps.resumed), ", ".join(steps.resumed), ", ".join(steps.computed) or "none", steps.root)

        res.documents.write.mode("overwrite").parquet(ctx.output_path("documents"))
        if res.pairs is not None:
            res.pairs.write.mode("overwrite").parquet(ctx.output_path("pairs"))
        else:
            ctx.write_empty_outputs({"pairs": PAIRS})
        res.rejects.write.mode("overwrite").parquet(ctx.rejects_path)
        if res.removals is not None:  # newer_wins: a takedown-style list of the earlier documents
            res.removals.write.mode("overwrite").parquet(ctx.output_path("removals"))
        if res.record_state is not None:
            res.record_state(spark.read.parquet(ctx.output_path("documents")))

        # Counted from the files just written (Parquet row counts), independently of the job's counters.
        counts = {
            (r["table"], r["reason"]): r["count"]
            for r in spark.read.parquet(ctx.rejects_path).groupBy("table", "reason").count().collect()
        }
        doc_rej = {reason: n for (t, reason), n in counts.items() if t == "documents"}
        pair_rej = {reason: n for (t, reason), n in counts.items() if t == "pairs"}
        n_docs_out = spark.read.parquet(ctx.output_path("documents")).count()
        stats = StageStats(
            stage=STAGE,
            rows_in=res.counters["documents_in"],
            rows_out=n_docs_out,
            rejected=doc_rej,
            outputs={"documents": n_docs_out},
            counters=res.counters,
        )
        if res.pairs is not None:
            n_pairs_in = pairs_in.count()
            n_pairs_out = spark.read.parquet(ctx.output_path("pairs")).count()
            stats.outputs["pairs"] = n_pairs_out
            stats.tables["pairs"] = {"rows_in": n_pairs_in, "rows_out": n_pairs_out, "rejected": pair_rej}
        else:
            stats.outputs["pairs"] = 0
        stats.counters["steps_resumed"] = list(steps.resumed)
        if stats.conserved():  # the outputs are written: the step checkpoints are no longer needed
            steps.remove()
        return stats

    def step_store(self, spark, ctx: StageContext, state=None) -> StepStore:
        """The step checkpoints of this run: ``<run>/_work/dedup-<key>/`` (:mod:`pipelines.dedup_steps`),
        keyed by the dedup config, the inputs' run ids and, with a state, the earlier snapshots it reads."""
        from curation.dask_cluster import work_dir_for
        from pipelines.dedup_steps import step_key

        earlier = None
        if state is not None:
            manifests = state.manifests()
            earlier = {s: manifests.get(s) for s in state.earlier()}
        key = step_key(ctx.config.section("dedup"), ctx.input_run_ids, ctx.inputs, earlier)
        return StepStore(spark, work_dir_for(ctx.run_root, self.name, key))
