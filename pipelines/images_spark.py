"""The images stage after the fetch, in Spark: duplicates, joins and writes over img2dataset's shards.

The driver never holds an image's bytes: it reads the fetch shards as a Spark DataFrame (column
pruning keeps the bytes on disk until the writes need them), runs the duplicate steps and the joins
as Spark jobs, and only collects counts, reason histograms and file names. The same rules as the
single-process reference (:func:`pipelines.images.fetch_and_filter`, kept for the bench and the
equality test):

* exact duplicates: one image per sha256, the preferred one (most pixels, then the smallest URL:
  :func:`filters.image.preference_order`) kept, by a window over the sha256 groups;
* near duplicates: candidate edges from a banded LSH join (``sql/images_phash_candidates.sql``;
  ``phash_max_hamming + 1`` bands, pigeonhole: two hashes within the bound share a band; above 16
  bands, one band, i.e. every pair), verified by Hamming distance, each edge pointing from the
  preferred image to the other. The keeper rule is the greedy one of
  :func:`filters.image.near_duplicates` (visit images in preference order, keep one unless it is
  within the bound of an image already kept: no chaining). It is resolved on the edge graph in
  rounds: an undecided image with a kept better neighbour is rejected, one whose better neighbours
  are all rejected is kept; the best undecided image always decides, so the rounds end. A rejected
  image names its closest kept better neighbour (ties: the preferred one), as the reference does;
* pairs: joined with the kept images by URL (bytes ride along), the others rejected with the
  image's reason;
* documents: image positions exploded, joined with the kept images by URL, gathered back per
  document, and cut in a ``mapInArrow`` task by :func:`curation.layout.cut_positions` (texts
  around a removed image joined as extract joins them), ``image_bytes`` aligned with positions;
* WebDataset tars: one or more per partition, written by the tasks (:mod:`curation.wds_writer`);
  the driver only renames them to ``NNNNN.tar`` and writes ``sizes.json``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
from fsspec.core import url_to_fs

from curation.schemas import DOCUMENTS, IMAGE_PAIRS, IMAGES, INTERLEAVED, spark_ddl
from curation.sql import load_sql

STAGE = "images"
MAX_INDEXED_BANDS = 16  # as filters.image.near_duplicates: narrower bands than 4 bits index nothing
IMAGE_REJECTS_DDL = "url string, reason string, detail string, duplicate_of string"


# --------------------------------------------------------------------------- reading


def parquet_files(path: str | None) -> list[str]:
    """The data files of a Parquet dataset (none when missing); hidden and ``_`` files skipped."""
    if not path:
        return []
    fs, p = url_to_fs(path)
    if not fs.exists(p):
        return []
    proto = path.split("://", 1)[0] + "://" if "://" in path else ""
    return sorted(proto + f for f in fs.find(p) if f.endswith(".parquet") and "/." not in f[len(p):]
                  and "/_" not in f[len(p):])


def read_table(spark, path: str | None, schema: pa.Schema):
    """A Parquet dataset with ``schema``'s columns (an empty frame when the path holds no file)."""
    files = parquet_files(path)
    ddl = spark_ddl(schema)
    if not files:
        return spark.createDataFrame([], ddl)
    return spark.read.schema(ddl).parquet(*files).select(*schema.names)


FETCH_DDL = ("url string, width int, height int, image binary, format string, phash string, sha256 string, "
             "reencoded string, reason string, detail string")


def read_fetched(spark, work_dir: str, shard_ids: list[int]):
    """The finished fetch shards (:func:`curation.fetch.read_shards`'s rows) as a DataFrame."""
    from curation.fetch import SHARD_COUNT_DIGITS

    files = [f"{work_dir.rstrip('/')}/shards/{i:0{SHARD_COUNT_DIGITS}d}.parquet" for i in sorted(shard_ids)]
    if not files:
        return spark.createDataFrame([], FETCH_DDL)
    return spark.read.schema(FETCH_DDL).parquet(*files)


def shard_stats(work_dir: str, shard_ids: list[int]) -> dict[str, int]:
    """img2dataset's per-shard ``*_stats.json`` counts, summed (what :func:`curation.fetch.read_shards` sums)."""
    from curation.fetch import SHARD_COUNT_DIGITS

    fs, path = url_to_fs(f"{work_dir.rstrip('/')}/shards")
    summary = {"count": 0, "successes": 0, "failed_to_download": 0, "failed_to_resize": 0}
    for i in sorted(shard_ids):
        with fs.open(f"{path}/{i:0{SHARD_COUNT_DIGITS}d}_stats.json", "r") as fh:
            stats = json.load(fh)
        for key in summary:
            summary[key] += int(stats.get(key, 0))
    return summary


# --------------------------------------------------------------------------- duplicates


def _bands_fn(n_bands: int):
    """``mapInArrow``: (url, pixels, phash hex) -> (url, pixels, h: the hash as bigint, bands)."""

    def fn(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from filters.image import phash_band_values

        for b in batches:
            h = np.array([int(x, 16) for x in b.column("phash").to_pylist()], dtype=np.uint64)
            if n_bands > MAX_INDEXED_BANDS:  # one band: every pair is a candidate, as the reference compares all
                bands = np.zeros((len(h), 1), dtype=np.int64)
            else:
                bands = phash_band_values(h, n_bands).astype(np.int64)
            offsets = pa.array(np.arange(0, bands.size + 1, bands.shape[1], dtype=np.int32))
            yield pa.RecordBatch.from_arrays(
                [b.column("url"), b.column("pixels"), pa.array(h.view(np.int64)),
                 pa.ListArray.from_arrays(offsets, pa.array(bands.ravel()))],
                names=["url", "pixels", "h", "bands"])

    return fn


def _cut(df):
    """Materialise ``df`` once, lineage cut (the resolution rounds: each builds on the last)."""
    return df.localCheckpoint()


_KEPT: list = []  # persisted frames, released at the end of images_after_fetch


def _keep(df):
    """Reuse ``df`` without recomputing it; lazy (no job of its own, unlike :func:`_cut`)."""
    from pyspark import StorageLevel

    _KEPT.append(df)
    return df.persist(StorageLevel.MEMORY_AND_DISK)


def _release() -> None:
    while _KEPT:
        _KEPT.pop().unpersist()


def exact_duplicates(images):
    """(survivors, rejects): one image per sha256 kept (most pixels, then the smallest URL)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    w = Window.partitionBy("sha256").orderBy(F.col("pixels").desc(), F.col("url").asc())
    ranked = images.withColumn("_rn", F.row_number().over(w)).withColumn("_keeper", F.first("url").over(w))
    rejects = ranked.where("_rn > 1").select(
        "url", F.lit("exact_duplicate").alias("reason"),
        F.concat(F.lit("same sha256 as "), F.col("_keeper")).alias("detail"), F.col("_keeper").alias("duplicate_of"))
    return ranked.where("_rn = 1").drop("_rn", "_keeper"), rejects


@dataclass
class NearResult:
    rejects: Any  # DataFrame IMAGE_REJECTS_DDL
    edges: int = 0
    rounds: int = 0


def near_edges(spark, images, max_distance: int):
    """Verified near-duplicate edges (src preferred over dst, distance <= bound) among ``images``."""
    hashed = images.select("url", "pixels", "phash").mapInArrow(
        _bands_fn(max_distance + 1), "url string, pixels bigint, h bigint, bands array<bigint>")
    view = f"images_hashes_{id(hashed)}"
    hashed.createOrReplaceTempView(view)
    try:
        return _keep(spark.sql(load_sql("images_phash_candidates", hashes=view, max_distance=int(max_distance))))
    finally:
        spark.catalog.dropTempView(view)


def near_duplicates(spark, images, max_distance: int) -> NearResult:
    """The greedy keeper rule of :func:`filters.image.near_duplicates`, resolved on the edge graph in rounds."""
    from pyspark.sql import functions as F

    empty = spark.createDataFrame([], IMAGE_REJECTS_DDL)
    if max_distance < 0:
        return NearResult(empty)
    edges = near_edges(spark, images, max_distance)
    n_edges = edges.count()
    if n_edges == 0:
        return NearResult(empty)
    targets = _cut(edges.select(F.col("dst").alias("url")).distinct())
    # sources nobody is preferred to: kept from the start
    decided = _cut(edges.select(F.col("src").alias("url")).distinct().join(targets, "url", "left_anti")
                   .withColumn("kept", F.lit(True)))
    # Undecided targets left = targets - (decided - the sources kept from the start): every image a
    # round decides is a target, so a count of the (checkpointed, narrow) decided frame is the check,
    # not an anti join per round; and the loop stops as soon as the last target is decided.
    n_targets, n_sources = targets.count(), decided.count()
    n_decided, rounds = n_sources, 0
    while n_decided - n_sources < n_targets:
        undecided = targets.join(decided, "url", "left_anti")
        rounds += 1
        incoming = (edges.join(undecided.withColumnRenamed("url", "dst"), "dst")
                    .join(decided.withColumnRenamed("url", "src"), "src", "left"))
        verdict = incoming.groupBy(F.col("dst").alias("url")).agg(
            F.max(F.coalesce(F.col("kept").cast("int"), F.lit(0))).alias("any_kept"),
            F.max(F.col("kept").isNull().cast("int")).alias("any_open"))
        new = verdict.where("any_kept = 1 OR any_open = 0").select("url", (F.col("any_kept") == 0).alias("kept"))
        decided = _cut(decided.unionByName(new))
        n_decided = decided.count()
    kept_src = decided.where("kept").select(F.col("url").alias("src"))
    rejected = decided.where("NOT kept").select(F.col("url").alias("dst"))
    from pyspark.sql import Window

    w = Window.partitionBy("dst").orderBy(F.col("distance").asc(), F.col("src_pixels").desc(), F.col("src").asc())
    best = (edges.join(rejected, "dst").join(kept_src, "src")
            .withColumn("_rn", F.row_number().over(w)).where("_rn = 1"))
    rejects = best.select(
        F.col("dst").alias("url"), F.lit("near_duplicate").alias("reason"),
        F.concat(F.lit("pHash distance "), F.col("distance").cast("string"), F.lit(" to "), F.col("src")).alias("detail"),
        F.col("src").alias("duplicate_of"))
    return NearResult(_keep(rejects), n_edges, rounds)


def decide_duplicates(spark, meta, max_distance: int):
    """(kept urls, exact + near duplicate rejects, the near step's :class:`NearResult`) among ``meta``
    (url, sha256, phash, pixels): exact duplicates first, then near duplicates among the survivors."""
    alive, exact_rej = exact_duplicates(meta)
    alive = _keep(alive)
    near = near_duplicates(spark, alive, max_distance)
    kept = _keep(alive.join(near.rejects.select("url"), "url", "left_anti").select("url"))
    return kept, exact_rej.unionByName(near.rejects), near


# --------------------------------------------------------------------------- joins


PAIR_IMAGE_COLUMNS = ("image", "width", "height", "sha256")


def join_pairs(pairs, kept, image_rejects):
    """(IMAGE_PAIRS rows whose image was kept, REJECTS rows of the others with their image's reason)."""
    from pyspark.sql import functions as F

    from curation.rejects import spark_rejects

    joined = pairs.join(kept.select("url", *PAIR_IMAGE_COLUMNS), "url", "left")
    out = joined.where(F.col("image").isNotNull()).select(*IMAGE_PAIRS.names)
    lost = (joined.where(F.col("image").isNull()).select("key", "url")
            .join(image_rejects.select("url", "reason", "detail", "duplicate_of"), "url", "left"))
    rejects = spark_rejects(
        lost, "pairs", STAGE, row_id="key", reason=F.coalesce("reason", F.lit("no_image_url")),
        detail=F.substring(F.concat(F.lit("image "), F.coalesce(F.col("url"), F.lit("None")), F.lit(": "),
                                    F.coalesce("detail", F.lit(""))), 1, 500))
    return out, rejects


DOC_EXTRA_DDL = "n_had int, n_left int"


def _cut_documents_fn():
    """``mapInArrow``: documents with their kept positions -> INTERLEAVED rows plus image counts."""

    def fn(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from curation.layout import cut_positions, drop_images, load_metadata

        for batch in batches:
            cols: dict[str, list] = {"texts": [], "images": [], "metadata": [], "image_bytes": [],
                                     "n_had": [], "n_left": []}
            rows = batch.select(["texts", "images", "metadata", "kept"]).to_pylist()
            for row in rows:
                texts, images, raw = row["texts"] or [], row["images"] or [], row["metadata"]
                blobs = {k["pos"]: k["image"] for k in (row["kept"] or [])}
                n_had = sum(1 for u in images if u is not None)
                n_drop = n_had - len(blobs)
                t, im, m = cut_positions(texts, images, load_metadata(raw), drop_images(images, blobs.keys()))
                # kept image positions stay in order through the cut: the i-th image left is the i-th kept
                it = iter(blobs[p] for p in sorted(blobs))
                cols["texts"].append(t)
                cols["images"].append(im)
                cols["metadata"].append(json.dumps(m, ensure_ascii=False) if (n_drop or raw is None) else raw)
                cols["image_bytes"].append([next(it) if u is not None else None for u in im])
                cols["n_had"].append(n_had)
                cols["n_left"].append(sum(1 for u in im if u is not None))
            arrays = [batch.column(n) for n in DOCUMENTS.names]
            for n in ("texts", "images", "metadata"):
                arrays[DOCUMENTS.names.index(n)] = pa.array(cols[n], DOCUMENTS.field(n).type)
            arrays += [pa.array(cols["image_bytes"], pa.list_(pa.binary())),
                       pa.array(cols["n_had"], pa.int32()), pa.array(cols["n_left"], pa.int32())]
            yield pa.RecordBatch.from_arrays(arrays, names=INTERLEAVED.names + ["n_had", "n_left"])

    return fn


def join_documents(docs, kept):
    """INTERLEAVED rows (plus ``n_had``/``n_left``: images per document before and after), positions
    of images not kept cut out."""
    from pyspark.sql import functions as F

    positions = (docs.select("doc_id", F.posexplode("images").alias("pos", "url"))
                 .where(F.col("url").isNotNull()))
    kept_pos = (positions.join(kept.select("url", "image"), "url")
                .groupBy("doc_id").agg(F.collect_list(F.struct("pos", "image")).alias("kept")))
    with_kept = docs.join(kept_pos, "doc_id", "left")
    return with_kept.mapInArrow(_cut_documents_fn(), f"{spark_ddl(INTERLEAVED)}, {DOC_EXTRA_DDL}")


# --------------------------------------------------------------------------- the whole step


@dataclass
class SparkImagesResult:
    """Counts only: what the driver collects."""

    kept: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    counters: dict[str, Any] = field(default_factory=dict)
    pairs_in: int = 0
    pairs_out: int = 0
    pair_reasons: dict[str, int] = field(default_factory=dict)
    docs_in: int = 0
    docs_out: int = 0
    doc_reasons: dict[str, int] = field(default_factory=dict)
    formats: dict[str, int] = field(default_factory=dict)
    webdataset: dict[str, int] = field(default_factory=dict)


# Shuffle partitions for the stage's joins: one per this many input bytes (fetch shards, documents,
# pairs), at most the run's ``spark.shuffle_partitions``. On the sample (~20 MB) that is one: every
# shuffle partition is a task with a fixed cost, and AQE coalesces only after a map stage has run.
TARGET_PARTITION_BYTES = 128 << 20


def input_bytes(*frames) -> int:
    """The bytes of the files the frames read (the driver lists file names and sizes, no job)."""
    by_fs: dict[str, tuple[Any, list[str]]] = {}
    for f in (f for df in frames for f in df.inputFiles()):
        fs, p = url_to_fs(f)
        by_fs.setdefault(f.split("://", 1)[0] if "://" in f else "", (fs, []))[1].append(p)
    # sizes() per filesystem: one batched call on an object store, not a request per file
    return sum(int(s or 0) for fs, paths in by_fs.values() for s in fs.sizes(paths))


def stage_shuffle_partitions(n_bytes: int, configured: int) -> int:
    """``spark.sql.shuffle.partitions`` for this stage: from the input size, capped by the run's setting."""
    return max(1, min(int(configured), -(-int(n_bytes) // TARGET_PARTITION_BYTES)))


def images_after_fetch(spark, *, fetched, to_fetch, refused, docs, pairs, outputs: dict[str, str],
                       rejects_path: str, max_distance: int, drop_documents_without_images: bool,
                       seen=None, state_record=None, webdataset: dict | None = None) -> SparkImagesResult:
    """Everything after the fetch: decide each fetched URL, join pairs and documents, write the outputs.

    ``fetched``: the fetch shards' rows; ``to_fetch``: DataFrame (url) of the URLs sent to the fetch;
    ``refused``: DataFrame IMAGE_REJECTS_DDL of the URLs refused before it. ``seen``/``state_record``:
    the cross-snapshot state's lookup and recording (:class:`pipelines.dedup_state.DedupState`), given
    url/sha256/pHash lists, never bytes. ``webdataset``: {"dir", "samples_per_tar", "image_format"}.

    Few Spark jobs, because each costs tens to hundreds of ms however small the input: the fetched
    rows' metadata is materialised once; output counts and the documents' image counts are observed
    while the outputs are written (``Observation``, no job of their own); every histogram comes from
    one aggregate over the written rejects, the kept images and the metadata.
    """
    from pyspark.sql import functions as F

    key = "spark.sql.shuffle.partitions"
    configured = spark.conf.get(key)
    spark.conf.set(key, str(stage_shuffle_partitions(input_bytes(fetched, docs, pairs), int(configured))))
    try:
        return _after_fetch(spark, F, fetched=fetched, to_fetch=to_fetch, refused=refused, docs=docs, pairs=pairs,
                            outputs=outputs, rejects_path=rejects_path, max_distance=max_distance,
                            drop_documents_without_images=drop_documents_without_images, seen=seen,
                            state_record=state_record, webdataset=webdataset)
    finally:
        _release()
        spark.conf.set(key, configured)


def _after_fetch(spark, F, *, fetched, to_fetch, refused, docs, pairs, outputs, rejects_path, max_distance,
                 drop_documents_without_images, seen, state_record, webdataset) -> SparkImagesResult:
    from pyspark.sql import Observation

    from curation.rejects import REJECTS_DDL, spark_rejects

    res = SparkImagesResult()
    # the fetched rows of this URL list without their bytes, read once: duplicates, refusals, counters
    fetched_meta = _keep(fetched.join(to_fetch, "url", "left_semi").select(
        "url", "width", "height", "sha256", "phash", "format", "reencoded", "reason", "detail",
        F.col("image").isNotNull().alias("ok"),
        (F.col("width").cast("long") * F.col("height").cast("long")).alias("pixels")))
    meta = fetched_meta.where("ok").select("url", "width", "height", "sha256", "phash", "format", "pixels")
    bad = fetched_meta.where("NOT ok").select(
        "url", F.coalesce("reason", F.lit("fetch_error:other")).alias("reason"),
        F.coalesce("detail", F.lit("")).alias("detail"), F.lit(None).cast("string").alias("duplicate_of"))
    parts = [refused, bad]
    if seen is not None:  # before the in-run steps: an image seen before never becomes this run's keeper
        rows = meta.select("url", "sha256", "phash").collect()  # hashes, not bytes
        hashes = np.array([int(r["phash"], 16) for r in rows], dtype=np.uint64)
        matches = seen([r["sha256"] for r in rows], hashes)
        from pipelines.dedup_state import SEEN_IN

        seen_rows = [(r["url"], SEEN_IN + m[0], m[2], m[1]) for r, m in zip(rows, matches) if m is not None]
        seen_df = spark.createDataFrame(seen_rows, IMAGE_REJECTS_DDL)
        parts.append(seen_df)
        meta = meta.join(seen_df.select("url"), "url", "left_anti")
        res.counters["seen_in_earlier_snapshots"] = len(seen_rows)
    kept_meta, dup_rejects, near = decide_duplicates(spark, meta, max_distance)
    parts.append(dup_rejects)
    res.counters["near_duplicate_edges"] = near.edges
    res.counters["near_duplicate_rounds"] = near.rounds
    decided = parts[0]
    for p in parts[1:]:
        decided = decided.unionByName(p)
    lost = to_fetch.join(fetched_meta.select("url"), "url", "left_anti").select(
        "url", F.lit("fetch_error:lost").alias("reason"), F.lit("no result from img2dataset").alias("detail"),
        F.lit(None).cast("string").alias("duplicate_of"))
    image_rejects = _keep(decided.unionByName(lost))

    n_images = Observation("images_written")
    kept = (fetched.where(F.col("image").isNotNull()).join(kept_meta, "url", "left_semi").select(*IMAGES.names)
            .observe(n_images, F.count(F.lit(1)).alias("n")))
    kept.sortWithinPartitions("url").write.mode("overwrite").parquet(outputs["images"])
    res.kept = int(n_images.get["n"])
    kept = read_table(spark, outputs["images"], IMAGES)  # the bytes now come from the run's own copy

    n_pairs = Observation("pairs_written")
    image_pairs, pair_rejects = join_pairs(pairs, kept, image_rejects)
    image_pairs.observe(n_pairs, F.count(F.lit(1)).alias("n")).write.mode("overwrite").parquet(outputs["pairs"])
    res.pairs_out = int(n_pairs.get["n"])
    image_pairs = read_table(spark, outputs["pairs"], IMAGE_PAIRS)  # a schema given: no inference job

    doc_stats = Observation("documents_cut")
    docs_out = _keep(join_documents(docs, kept))
    observed = docs_out.observe(
        doc_stats, F.count(F.lit(1)).alias("n"), F.sum(F.col("n_had") - F.col("n_left")).alias("removed"),
        F.sum((F.col("n_had") > F.col("n_left")).cast("int")).alias("touched"),
        F.sum((F.col("n_left") == 0).cast("int")).alias("empty"))
    doc_rejects = spark.createDataFrame([], REJECTS_DDL)
    if drop_documents_without_images:
        doc_rejects = spark_rejects(
            docs_out.where("n_left = 0"), "documents", STAGE, row_id="doc_id", reason=F.lit("no_images"),
            detail=F.when(F.col("n_had") > 0, F.concat(F.col("n_had").cast("string"), F.lit(" image(s), none kept")))
            .otherwise(F.lit("no image in input")), duplicate_of=None)
        observed = observed.where("n_left > 0")
    observed.select(*INTERLEAVED.names).write.mode("overwrite").parquet(outputs["documents"])
    stats = doc_stats.get
    res.counters["image_positions_removed"] = int(stats["removed"] or 0)
    res.counters["documents_touched"] = int(stats["touched"] or 0)
    res.docs_out = int(stats["n"]) - (int(stats["empty"] or 0) if drop_documents_without_images else 0)

    image_rows = spark_rejects(image_rejects, "images", STAGE, row_id="url")
    rejects = image_rows.unionByName(pair_rejects).unionByName(doc_rejects)
    # a union has the partitions of all its inputs: as many files as the stage has shuffle partitions
    rejects.coalesce(int(spark.conf.get("spark.sql.shuffle.partitions"))).write.mode("overwrite").parquet(rejects_path)

    # every histogram in one aggregate: reasons per table (from the written rejects), kept formats, re-encodings
    written = spark.read.schema(REJECTS_DDL).parquet(rejects_path)
    kinds = (written.select(F.col("table").alias("kind"), F.col("reason").alias("value"))
             .unionByName(kept.select(F.lit("formats").alias("kind"), F.col("format").alias("value")))
             .unionByName(fetched_meta.where(F.col("ok") & F.col("reencoded").isNotNull() & (F.col("reencoded") != ""))
                          .select(F.lit("reencoded").alias("kind"), F.col("reencoded").alias("value"))))
    hist: dict[str, dict[str, int]] = {"images": {}, "pairs": {}, "documents": {}, "formats": {}, "reencoded": {}}
    for r in kinds.groupBy("kind", "value").count().collect():
        if r["value"] is not None:
            hist[r["kind"]][r["value"]] = int(r["count"])
    res.reasons, res.pair_reasons, res.doc_reasons = hist["images"], hist["pairs"], hist["documents"]
    res.formats, res.counters["reencoded"] = hist["formats"], hist["reencoded"]

    if webdataset is not None:
        from curation.wds_writer import publish_shards, write_partition_shards_fn

        fmt = kept.select("url", "format")
        with_fmt = image_pairs.join(fmt, "url").orderBy("key")
        parts_written = with_fmt.mapInArrow(
            write_partition_shards_fn(webdataset["dir"], webdataset["samples_per_tar"], webdataset["image_format"]),
            "name string, samples long").collect()
        res.webdataset = publish_shards(webdataset["dir"], [(r["name"], int(r["samples"])) for r in parts_written])
    if state_record is not None:  # after the outputs: this run's kept images join the cross-snapshot state
        rows = kept.select("url", "sha256", "phash").collect()  # hashes, not bytes
        res.counters["state_entries"] = state_record(
            [r["sha256"] for r in rows], np.array([int(r["phash"], 16) for r in rows], dtype=np.uint64),
            [r["url"] for r in rows])
    return res
