"""``curate dedup``: web-scale deduplication of interleaved documents on Spark.

Input: the extract stage's ``documents/`` (DOCUMENTS schema) and, optionally,
``pairs/`` (PAIRS). Output: ``documents/``, ``pairs/`` and ``rejects/``
(REJECTS, one row per removed document or pair, ``duplicate_of`` = the kept
document for duplicates). Steps, in order, each switchable in ``DedupConfig``:

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
   text positions that become neighbours are joined (:func:`rewrite_document`).
6. Documents left without text (``no_text``) or, if configured, without an
   image (``no_image``) are removed.

``duplicate_of`` is resolved transitively: a page removed by URL dedup in
favour of a page that exact dedup removed later points to the final keeper.
(If the keeper is later removed for a non-duplicate reason, e.g. ``no_text``
after paragraph removal, ``duplicate_of`` still names it and it is in the
rejects.)

Only the per-row work that SQL cannot do is Python (URL normalisation, text
hashing and MinHash, Jaccard verification, cutting positions out of the
aligned lists and the metadata JSON); all grouping, counting and joining is
Spark SQL in ``sql/dedup_*.sql``.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import xxhash

from curation.config import DedupConfig, PipelineConfig
from curation.minhash import MinHasher, band_hashes, batch_shingles, normalize_text
from curation.schemas import DOCUMENTS, PAIRS, REJECTS, spark_ddl
from curation.spark import get_spark
from curation.sql import load_sql
from curation.stage import Stage, StageContext, StageRunner, StageStats
from curation.urls import normalize_url, url_domain

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


PARA_SEP = b"\n\n"  # extract joins the paragraphs of one text position with a blank line


def rewrite_document(texts: list[bytes | None], images: list[str | None], meta: list | None,
                     drops: dict[int, set[int]]) -> tuple[list, list, list]:
    """Cut dropped positions/paragraphs out of one document, keeping texts/images/metadata aligned.

    ``drops`` maps a position to the paragraph indices to remove from it (``-1``: the whole
    position). Text stays bytes (never decoded, so bytes that are not UTF-8 pass through). A
    text position left without paragraphs disappears; text positions that become neighbours
    (the image between them was dropped) are joined with a blank line, as extract writes them.
    """
    n = len(texts)
    if not isinstance(meta, list) or len(meta) != n:  # unusable metadata: rebuild a minimal aligned one
        meta = [None if im is None else {"src": im} for im in images]
    out_t: list[bytes | None] = []
    out_i: list[str | None] = []
    out_m: list = []
    for pos in range(n):
        d = drops.get(pos)
        if d is not None and -1 in d:
            continue
        t = texts[pos]
        if t is not None:
            if d:
                parts = [q for k, q in enumerate(t.split(PARA_SEP)) if k not in d]
                if not parts:
                    continue
                t = PARA_SEP.join(parts)
            if out_t and out_t[-1] is not None:
                out_t[-1] = out_t[-1] + PARA_SEP + t
                continue
        out_t.append(t)
        out_i.append(images[pos])
        out_m.append(meta[pos])
    return out_t, out_i, out_m


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
                try:
                    meta = json.loads(metas[i]) if metas[i] is not None else None
                except ValueError:
                    meta = None
                t, im, m = rewrite_document(texts[i] or [], images[i] or [], meta, by_pos)
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


def run_dedup(spark, documents_df, pairs_df, cfg: DedupConfig) -> DedupResult:
    """Run every enabled dedup step; return kept documents/pairs, rejects and counters.

    Intermediate results that later steps read more than once are cut from their lineage
    (:func:`_cut`); counters come from a few aggregate actions on those, so a small input
    costs tens of Spark jobs, not hundreds.
    """
    from pyspark.sql import functions as F

    if hasattr(cfg, "validate"):
        cfg.validate()
    views = _Views(spark)
    counters: dict[str, Any] = {}
    docs = _cut(documents_df.select(*DOCUMENTS.names), spark)

    feats = docs.select("doc_id", "url", "texts", "general_metadata").mapInArrow(_features_fn(cfg), FEATURES_DDL)
    keys = _cut(spark.sql(load_sql("dedup_doc_keys", features=views(feats, "features"))), spark)
    keys_v = views(keys, "keys")

    reject_parts = []  # DataFrames (row_id, reason, detail, duplicate_of), each cut
    near_pairs = None

    def removed_from(pairs, reason: str, detail_col):
        """Rows (doc_id, keep_id) with doc_id != keep_id -> reject frame."""
        return pairs.where("doc_id <> keep_id").select(
            F.col("doc_id").alias("row_id"), F.lit(reason).alias("reason"),
            detail_col.alias("detail"), F.col("keep_id").alias("duplicate_of"),
        )

    def alive_df():
        """Keys of the documents no step has removed yet (a lazy anti-join on the cut rejects)."""
        alive = keys
        for part in reject_parts:
            alive = alive.join(part.select(F.col("row_id").alias("doc_id")), "doc_id", "left_anti")
        return alive

    def alive_keys(name: str) -> str:
        return views(alive_df(), name)

    # 1. URL dedup
    if cfg.url_dedup:
        url = spark.sql(load_sql("dedup_url_latest", keys=keys_v))
        reject_parts.append(
            _cut(removed_from(url, "url_duplicate", F.concat(F.lit("same URL "), F.col("url_norm"))), spark))

    # 2. exact text dedup
    if cfg.exact_dedup:
        grp = spark.sql(load_sql("dedup_keep_best", table=alive_keys("alive_exact"), group="text_hash"))
        reject_parts.append(_cut(removed_from(grp, "exact_duplicate", F.lit("same normalised text")), spark))

    # 3. near-dup: LSH candidates -> (verify) -> connected components -> keep one per component
    if cfg.near_dedup:
        ak = alive_keys("alive_near")
        anchors = cfg.lsh_bucket_anchors if cfg.verify_jaccard else 1
        cand = _cut(spark.sql(load_sql("dedup_lsh_candidates", keys=ak, anchors=anchors)), spark)
        if cfg.verify_jaccard:
            texts = docs.select("doc_id", "texts")
            joined = (
                cand.join(texts.select(F.col("doc_id").alias("src"), F.col("texts").alias("src_texts")), "src")
                .join(texts.select(F.col("doc_id").alias("dst"), F.col("texts").alias("dst_texts")), "dst")
                .select("src", "dst", "src_texts", "dst_texts")
            )
            scored = _cut(joined.mapInArrow(_verify_fn(cfg), VERIFY_DDL), spark)
            near_pairs = scored.where(F.col("jaccard") >= cfg.jaccard_threshold)
            row = scored.agg(F.count("*").alias("n"),
                             F.count(F.when(F.col("jaccard") >= cfg.jaccard_threshold, 1)).alias("ok")).first()
            counters["near_candidate_pairs"] = row["n"]
            counters["near_verified_pairs"] = row["ok"]
            counters["near_rejected_candidate_pairs"] = row["n"] - row["ok"]
            n_edges = row["ok"]
        else:
            near_pairs = cand
            n_edges = counters["near_candidate_pairs"] = cand.count()
        edges = near_pairs.select("src", "dst")
        if n_edges:
            comp, iters, converged = connected_components(spark, edges, cfg.max_cc_iterations, views)
            sizes = [r["count"] for r in comp.groupBy("root").count().collect()]
            member_keys = keys.join(comp.withColumnRenamed("node", "doc_id"), "doc_id")
            grp = spark.sql(load_sql("dedup_keep_best", table=views(member_keys, "components"), group="root"))
            reject_parts.append(_cut(
                removed_from(grp, "near_duplicate", F.concat(F.lit("MinHash component of "), F.col("grp"))), spark))
        else:
            iters, converged, sizes = 0, True, []
        counters["cc_iterations"] = iters
        counters["cc_converged"] = converged
        counters["near_components"] = len(sizes)
        counters["near_component_size_max"] = max(sizes, default=0)
        counters["near_component_size_histogram"] = _histogram(sizes)

    alive_docs = _cut(
        docs.join(alive_df().select("doc_id", "domain"), "doc_id"), spark
    )
    alive_docs_v = views(alive_docs, "alive_docs")
    drop_parts = []  # (doc_id, pos, ppos): ppos = paragraph inside a text position, -1 = the whole position

    # 4. paragraphs repeated across a domain
    if cfg.paragraph_dedup:
        para = _cut(
            spark.sql(load_sql("dedup_paragraph_counts", docs=alive_docs_v, max_per_domain=cfg.paragraph_max_per_domain)),
            spark,
        )
        row = para.agg(F.count("*").alias("n"), F.countDistinct("doc_id").alias("docs")).first()
        counters["paragraphs_removed"] = row["n"]
        counters["paragraph_docs_touched"] = row["docs"]
        drop_parts.append(para.select("doc_id", "pos", "ppos"))

    # 5. images: too common, repeated within a document, identical image sets
    common = spark.createDataFrame([], "url string, n_docs bigint")
    image_drops = spark.createDataFrame([], "doc_id string, pos int")
    if cfg.image_dedup:
        common = _cut(
            spark.sql(load_sql("dedup_image_doc_counts", docs=alive_docs_v, max_docs=cfg.image_max_docs)), spark
        )
        img_pos = _cut(spark.sql(load_sql("dedup_image_positions", docs=alive_docs_v, common=views(common, "common"))), spark)
        by_reason = {r["reason"]: r["count"] for r in img_pos.groupBy("reason").count().collect()}
        counters["images_too_common_urls"] = common.count()
        counters["image_positions_too_common"] = by_reason.get("image_too_common", 0)
        counters["image_positions_repeated_in_doc"] = by_reason.get("image_repeated_in_doc", 0)
        image_drops = img_pos.select("doc_id", F.col("pos").cast("int"))
        drop_parts.append(image_drops.withColumn("ppos", F.lit(-1)))
    common_v = views(common, "common_final")

    if cfg.image_set_dedup:
        sets = spark.sql(load_sql("dedup_image_sets", docs=alive_docs_v, dropped=views(image_drops, "image_drops"),
                                  keys=keys_v))
        grp = spark.sql(load_sql("dedup_keep_best", table=views(sets, "image_sets"), group="image_set"))
        reject_parts.append(_cut(removed_from(grp, "image_set_duplicate", F.lit("identical set of images")), spark))

    # Cut removed paragraphs/positions out of the surviving documents that lose something
    # (texts/images/metadata stay aligned); the others pass through untouched.
    dropped = spark.createDataFrame([], "doc_id string, pos int, ppos int")
    for part in drop_parts:
        dropped = dropped.unionByName(part.select("doc_id", F.col("pos").cast("int"), F.col("ppos").cast("int")))
    drops = dropped.distinct().groupBy("doc_id").agg(F.collect_list(F.struct("pos", "ppos")).alias("drops"))
    survivors = _cut(
        alive_docs.join(alive_df().select("doc_id"), "doc_id", "left_semi")
        .select(*DOCUMENTS.names).join(drops, "doc_id", "left"),
        spark,
    )
    touched = survivors.where(F.col("drops").isNotNull()).select(*DOCUMENTS.names, "drops")
    rewritten = survivors.where(F.col("drops").isNull()).select(*DOCUMENTS.names).unionByName(
        touched.mapInArrow(_rewrite_fn(), REWRITE_DDL)
    )

    # 6. documents left without text / images
    n_text = F.size(F.filter(F.coalesce("texts", F.array()), lambda t: t.isNotNull() & (F.trim(t) != "")))
    n_img = F.size(F.filter(F.coalesce("images", F.array()), lambda t: t.isNotNull() & (t != "")))
    empty_reason = F.when(F.lit(cfg.drop_docs_without_text) & (n_text == 0), F.lit("no_text")).when(
        F.lit(cfg.drop_docs_without_images) & (n_img == 0), F.lit("no_image")
    )
    flagged = _cut(rewritten.withColumn("_reason", empty_reason), spark)
    reject_parts.append(flagged.where(F.col("_reason").isNotNull()).select(
        F.col("doc_id").alias("row_id"), F.col("_reason").alias("reason"),
        F.lit("nothing left after dedup").alias("detail"), F.lit(None).cast("string").alias("duplicate_of"),
    ))
    kept = flagged.where(F.col("_reason").isNull()).select(*DOCUMENTS.names)

    # Rejects: duplicate_of followed to the final keeper (one query: a chain has one link per step).
    doc_rej = spark.createDataFrame([], "row_id string, reason string, detail string, duplicate_of string")
    for part in reject_parts:
        doc_rej = doc_rej.unionByName(part)
    doc_rej = _cut(spark.sql(load_sql("dedup_resolve_duplicate_of", rejects=views(doc_rej, "rej_raw"))), spark)
    doc_rej_v = views(doc_rej, "doc_rejects")
    rejects = doc_rej.select(
        "row_id", F.lit("documents").alias("table"), F.lit(STAGE).alias("stage"), "reason", "detail", "duplicate_of"
    )
    counters["documents_in"] = docs.count()
    by_reason = {r["reason"]: r["count"] for r in doc_rej.groupBy("reason").count().collect()}
    for reason, name in (("url_duplicate", "url_duplicates"), ("exact_duplicate", "exact_duplicates"),
                         ("near_duplicate", "near_duplicates"), ("image_set_duplicate", "image_set_duplicates")):
        counters[name] = by_reason.get(reason, 0)

    pairs_out = None
    if pairs_df is not None:
        pairs_in = pairs_df.select(*PAIRS.names)
        decided = _cut(
            spark.sql(
                load_sql(
                    "dedup_pairs",
                    pairs=views(pairs_in, "pairs"),
                    doc_rejects=doc_rej_v,
                    kept_docs=views(kept.select("doc_id"), "kept"),
                    common=common_v,
                )
            ),
            spark,
        )
        pairs_out = decided.where(F.col("reject_reason").isNull()).select(*PAIRS.names)
        pair_rej = decided.where(F.col("reject_reason").isNotNull()).select(
            F.col("key").alias("row_id"), F.lit("pairs").alias("table"), F.lit(STAGE).alias("stage"),
            F.col("reject_reason").alias("reason"), F.col("reject_detail").alias("detail"),
            F.lit(None).cast("string").alias("duplicate_of"),
        )
        rejects = rejects.unionByName(pair_rej)
    return DedupResult(documents=kept, pairs=pairs_out, rejects=rejects, counters=counters, near_pairs=near_pairs)


# --------------------------------------------------------------------------- stage + CLI
class DedupStage(Stage):
    """``curate dedup``: inputs {"documents": path, "pairs": path (optional)}."""

    name = "dedup"
    outputs = ("documents", "pairs")
    config_sections = ("dedup",)

    def run(self, ctx: StageContext) -> StageStats:
        from pyspark.sql import functions as F

        spark = get_spark(ctx.config.spark)
        cfg = ctx.config.dedup
        docs_in = spark.read.schema(spark_ddl(DOCUMENTS)).parquet(ctx.inputs["documents"])
        pairs_path = ctx.inputs.get("pairs")
        pairs_in = spark.read.schema(spark_ddl(PAIRS)).parquet(pairs_path) if pairs_path else None
        res = run_dedup(spark, docs_in, pairs_in, cfg)

        res.documents.write.mode("overwrite").parquet(ctx.output_path("documents"))
        if res.pairs is not None:
            res.pairs.write.mode("overwrite").parquet(ctx.output_path("pairs"))
        else:
            spark.createDataFrame([], spark_ddl(PAIRS)).write.mode("overwrite").parquet(ctx.output_path("pairs"))
        res.rejects.write.mode("overwrite").parquet(ctx.rejects_path)

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
        return stats


def main(argv: list[str] | None = None) -> int:
    """``curate dedup --input DIR --out DIR``: DIR holds ``documents/`` (and ``pairs/``)."""
    from fsspec.core import url_to_fs

    from curation.config import parse_override

    ap = argparse.ArgumentParser(prog="curate dedup", description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", required=True, help="directory with documents/ and optionally pairs/ (extract output)")
    ap.add_argument("--out", required=True, help="output root; the stage writes <out>/dedup/")
    ap.add_argument("--config", default=None)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = PipelineConfig.load(args.config, dict(parse_override(s) for s in args.set))
    base = args.input.rstrip("/")
    fs, path = url_to_fs(base)
    inputs = {"documents": f"{base}/documents"}
    if fs.exists(f"{path}/pairs"):
        inputs["pairs"] = f"{base}/pairs"
    stats = StageRunner(args.out, config, force={STAGE} if args.force else None).run(DedupStage(), inputs)
    print(stats.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
