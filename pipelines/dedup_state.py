"""Cross-snapshot deduplication state: what earlier runs curated, so the next one does not re-admit it.

Each snapshot is deduplicated against itself by the dedup stage; without a memory across runs,
curating CC-MAIN-2024-10 after 2024-18 re-admits every page the two share (DataComp, MINT-1T and
OBELICS all deduplicate across dumps). ``dedup.state_dir`` names a persistent index that every run
reads before its own steps and appends its kept documents to after them:

``<state_dir>/``
  ``urls/p=NN/snapshot=S/*.parquet``   ``url_hash`` (Spark ``xxhash64`` of the normalised URL), ``doc_id``
  ``texts/p=NN/snapshot=S/*.parquet``  ``text_hash`` (the exact step's xxh64 of the normalised text), ``doc_id``
  ``bands/p=NN/snapshot=S/*.parquet``  ``band``, ``h`` (the near step's MinHash band keys), ``doc_id``
  ``sigs/p=NN/snapshot=S/*.parquet``   ``doc_id``, ``sig`` (the MinHash signature: a band match is
                                     verified by the estimated Jaccard, as the stage verifies its own)
  ``images/p=NN/snapshot=S/*.parquet``       ``sha256``, ``url`` of the images stage's kept images
                                           (``p``: the sha256's first 8 hex digits mod partitions)
  ``image_bands/p=NN/snapshot=S/*.parquet``  ``band``, ``h`` (pHash band key), ``phash``, ``url``
  ``runs/<snapshot>.json``             the manifest, written last: ``order`` (processing order), run id, counts
  ``_state.json``                      the number of hash-prefix partitions (fixed when the state is created)

``p`` is a hash prefix (``pmod(key, partitions)``), so a lookup is a join of this run's keys with
the state on ``(p, key)``, never a load of the whole state into one process; ``snapshot`` lets a
rerun replace its own entries. Readers use only snapshots that have a manifest (a run that died
while writing left none) and whose ``order`` is before the current snapshot's: a rerun of the
first snapshot after the second ignores the second and changes nothing.

Policies (``dedup.state_policy``): ``first_seen`` (default) rejects a document seen in an earlier
snapshot as ``seen_in:<snapshot>`` (``duplicate_of`` = the earlier document's id); ``newer_wins``
keeps it when this snapshot is the newer capture (snapshot names sort by date: CC-MAIN-YYYY-WW) and
lists the earlier document in a takedown-style removal list (``<run>/dedup/removals/``: snapshot,
doc id, why) for the earlier release to drop; against a newer snapshot it is rejected as under
``first_seen``.

Images (the images stage, :meth:`DedupState.image_matches` / :meth:`DedupState.record_images`):
after its outputs are written, a run records its kept images: the sha256 and the pHash split into
``image_filters.phash_max_hamming + 1`` bands (pigeonhole: two hashes within the bound agree on one
band), keyed by ``(band, h)``. The next run's fetched images are looked up before its own duplicate
step, reading with pyarrow.dataset only the ``p`` partitions its own hashes fall in: one whose
sha256 equals, or whose pHash is within the bound of, an image an earlier snapshot kept is rejected
``seen_in:<snapshot>`` (``duplicate_of`` = the earlier image's URL; its pairs and document positions
go as an in-run duplicate's do). The images stage writes its count (``counts.images``, with the
band count ``counts.image_bands``) into the snapshot's manifest after the tables; readers use only
snapshots whose manifest has it. Images follow ``first_seen`` under either policy (``newer_wins``
has no image removal list yet).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
from fsspec.core import url_to_fs

log = logging.getLogger(__name__)

PARTITIONS = 64
TABLES = ("urls", "texts", "bands", "sigs")
IMAGE_TABLES = ("images", "image_bands")
# Hive partitions of every table: a snapshot named like a number stays a string.
PARTITIONING = pa.schema([("p", pa.int32()), ("snapshot", pa.string())])
IMAGE_SCHEMAS = {
    "images": pa.schema([("sha256", pa.string()), ("url", pa.string())]),
    "image_bands": pa.schema([("band", pa.int32()), ("h", pa.int64()), ("phash", pa.int64()), ("url", pa.string())]),
}
RUNS = "runs"
STATE_FILE = "_state.json"
SEEN_IN = "seen_in:"
SUPERSEDED_BY = "superseded_by:"
POLICIES = ("first_seen", "newer_wins")
SIG_DDL = "doc_id string, sig array<bigint>"
# Read schemas (partition columns included): a snapshot named like a number stays a string.
TABLE_DDL = {
    "urls": "doc_id string, url_hash bigint, p int, snapshot string",
    "texts": "doc_id string, text_hash bigint, p int, snapshot string",
    "bands": "doc_id string, band int, h bigint, p int, snapshot string",
    "sigs": "doc_id string, sig array<bigint>, p int, snapshot string",
}
# Which match decides when a document matches an earlier one in several ways.
_HOW_RANK = {"url": 0, "text": 1, "near": 2}


def _signatures_fn(num_perm: int, ngram: int, seed: int, scheme: str, list_texts: Callable[[pa.Array], list[str]]):
    """``mapInArrow`` body: the MinHash signature of each document (the near step's, slot for slot).

    ``list_texts`` is the dedup job's own joining of a ``texts`` column (passed in, so the text
    hashed here is the near step's and this module does not import the job's).
    """
    def fn(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from curation.minhash import MinHasher, batch_shingles, normalize_text

        hasher = MinHasher(num_perm, ngram, seed, scheme=scheme)
        for batch in batches:
            n = batch.num_rows
            norm = [normalize_text(t) for t in list_texts(batch.column("texts"))]
            sigs: list[Any] = [None] * n
            if n:
                hs, docs = batch_shingles(norm, ngram)
                sig = hasher._signatures(hs, docs, n).astype(np.uint64).view(np.int64)
                has = np.bincount(docs, minlength=n) > 0
                sigs = [sig[i].tolist() if has[i] else None for i in range(n)]
            yield pa.RecordBatch.from_arrays([batch.column("doc_id"), pa.array(sigs, pa.list_(pa.int64()))],
                                             names=["doc_id", "sig"])

    return fn


def signatures(documents_df, cfg, list_texts: Callable[[pa.Array], list[str]]) -> Any:
    """(doc_id, sig) of every document, with the dedup config's MinHash parameters."""
    return documents_df.select("doc_id", "texts").mapInArrow(
        _signatures_fn(cfg.num_bands * cfg.rows_per_band, cfg.ngram_size, cfg.seed, cfg.minhash_scheme, list_texts),
        SIG_DDL)


@dataclass
class DedupState:
    """The index under ``state_dir`` as one snapshot's run sees it."""

    state_dir: str
    snapshot: str
    run_id: str = ""
    # Hash-prefix partitions of a new state; an existing state keeps the number it was created with
    # (``_state.json``): keys are looked up by ``(pmod(key, partitions), key)``.
    partitions: int = PARTITIONS

    def __post_init__(self) -> None:
        fs, base = url_to_fs(self._path(STATE_FILE))
        if fs.exists(base):
            with fs.open(base, "r") as fh:
                self.partitions = int(json.load(fh)["partitions"])

    def _path(self, *parts: str) -> str:
        return "/".join([self.state_dir.rstrip("/"), *parts])

    def _write_state_file(self) -> None:
        fs, base = url_to_fs(self._path(STATE_FILE))
        if not fs.exists(base):
            fs.makedirs(base.rsplit("/", 1)[0], exist_ok=True)
            with fs.open(base, "w") as fh:
                json.dump({"partitions": self.partitions, "tables": list(TABLES + IMAGE_TABLES)}, fh)

    # ---------------------------------------------------------------- manifests
    def manifests(self) -> dict[str, dict]:
        fs, base = url_to_fs(self._path(RUNS))
        if not fs.exists(base):
            return {}
        out = {}
        for f in fs.glob(f"{base}/*.json"):
            with fs.open(f, "r") as fh:
                m = json.load(fh)
            out[m["snapshot"]] = m
        return out

    def earlier(self) -> list[str]:
        """Snapshots recorded before this one (all recorded ones on its first run), in processing order."""
        runs = self.manifests()
        mine = runs.get(self.snapshot, {}).get("order")
        return [s for s, m in sorted(runs.items(), key=lambda kv: kv[1]["order"])
                if s != self.snapshot and (mine is None or m["order"] < mine)]

    def _read(self, spark, table: str, snapshots: list[str]):
        from pyspark.sql import functions as F

        fs, base = url_to_fs(self._path(table))
        if not snapshots or not fs.exists(base) or not fs.glob(f"{base}/p=*/snapshot=*/*.parquet"):
            return None
        return spark.read.schema(TABLE_DDL[table]).option("basePath", self._path(table)) \
            .parquet(self._path(table)).where(F.col("snapshot").isin(snapshots))

    # ---------------------------------------------------------------- lookup
    def matches(self, spark, keys, sigs, jaccard_threshold: float, one_per_document: bool = True):
        """(doc_id, snapshot, old_id, how, jaccard) of this run's documents found in earlier snapshots.

        ``keys``: the dedup stage's per-document keys (doc_id, url_norm, text_hash, bands); ``sigs``:
        :func:`signatures` of the same documents. One row per document: URL match first, then exact
        text, then the best verified MinHash match; among equals the earliest snapshot. With
        ``one_per_document`` false: every match.
        """
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        earlier = self.earlier()
        if not earlier:
            return None
        P = self.partitions
        found = []
        urls = self._read(spark, "urls", earlier)
        if urls is not None:
            k = keys.where(F.col("url_norm").isNotNull()).select(
                "doc_id", F.xxhash64("url_norm").alias("url_hash")).withColumn("p", F.pmod("url_hash", F.lit(P)))
            found.append(k.join(urls.select("p", "url_hash", F.col("doc_id").alias("old_id"), "snapshot"),
                                ["p", "url_hash"]).select("doc_id", "snapshot", "old_id", F.lit("url").alias("how"),
                                                          F.lit(1.0).alias("jaccard")))
        texts = self._read(spark, "texts", earlier)
        if texts is not None:
            k = keys.where(F.col("text_hash").isNotNull()).select("doc_id", "text_hash") \
                .withColumn("p", F.pmod("text_hash", F.lit(P)))
            found.append(k.join(texts.select("p", "text_hash", F.col("doc_id").alias("old_id"), "snapshot"),
                                ["p", "text_hash"]).select("doc_id", "snapshot", "old_id", F.lit("text").alias("how"),
                                                           F.lit(1.0).alias("jaccard")))
        bands = self._read(spark, "bands", earlier)
        old_sigs = self._read(spark, "sigs", earlier)
        if bands is not None and old_sigs is not None and sigs is not None:
            k = keys.where(F.col("bands").isNotNull()).select("doc_id", F.posexplode("bands").alias("band", "h")) \
                .withColumn("p", F.pmod("h", F.lit(P)))
            cand = k.join(bands.select("p", "band", "h", F.col("doc_id").alias("old_id"), "snapshot"),
                          ["p", "band", "h"]).select("doc_id", "snapshot", "old_id").distinct()
            mine = sigs.select("doc_id", F.col("sig").alias("a"))
            theirs = old_sigs.select(F.col("doc_id").alias("old_id"), "snapshot", F.col("sig").alias("b"))
            scored = cand.join(mine, "doc_id").join(theirs, ["old_id", "snapshot"]).select(
                "doc_id", "snapshot", "old_id", F.lit("near").alias("how"),
                F.expr("aggregate(zip_with(a, b, (x, y) -> IF(x = y, 1, 0)), 0, (s, v) -> s + v) / size(a)")
                .alias("jaccard"))
            found.append(scored.where(F.col("jaccard") >= F.lit(jaccard_threshold)))
        if not found:
            return None
        allm = found[0]
        for f in found[1:]:
            allm = allm.unionByName(f)
        if not one_per_document:
            return allm
        order = {s: i for i, s in enumerate(earlier)}
        how_rank = F.create_map(*[x for kv in _HOW_RANK.items() for x in (F.lit(kv[0]), F.lit(kv[1]))])
        snap_rank = F.create_map(*[x for kv in order.items() for x in (F.lit(kv[0]), F.lit(kv[1]))])
        w = Window.partitionBy("doc_id").orderBy(how_rank[F.col("how")], F.col("jaccard").desc(),
                                                 snap_rank[F.col("snapshot")], "old_id")
        return allm.withColumn("_rn", F.row_number().over(w)).where("_rn = 1").drop("_rn")

    def seen_rejects(self, matches):
        """``first_seen``: the reject frame (row_id, reason, detail, duplicate_of) of documents seen before."""
        from pyspark.sql import functions as F

        return matches.select(
            F.col("doc_id").alias("row_id"), F.concat(F.lit(SEEN_IN), F.col("snapshot")).alias("reason"),
            F.format_string("%s match (Jaccard %.3f) with %s of %s", F.col("how"), F.col("jaccard"),
                            F.col("old_id"), F.col("snapshot")).alias("detail"),
            F.col("old_id").alias("duplicate_of"))

    def removals(self, matches):
        """``newer_wins``: the earlier documents this run supersedes (snapshot, doc_id, reason, detail, superseded_by)."""
        from pyspark.sql import functions as F

        # One row per (earlier document, this run's document), however many ways they matched.
        pairs = matches.groupBy("snapshot", "old_id", "doc_id").agg(
            F.concat_ws("+", F.sort_array(F.collect_set("how"))).alias("how"), F.max("jaccard").alias("jaccard"))
        return pairs.select(
            "snapshot", F.col("old_id").alias("doc_id"), F.lit(SUPERSEDED_BY + self.snapshot).alias("reason"),
            F.format_string("%s match (Jaccard %.3f)", F.col("how"), F.col("jaccard")).alias("detail"),
            F.col("doc_id").alias("superseded_by"))

    # ---------------------------------------------------------------- record
    def record(self, spark, keys, sigs, kept_ids) -> dict[str, int]:
        """Replace this snapshot's entries with its kept documents' keys, then write its manifest."""
        from pyspark.sql import functions as F

        P = self.partitions
        kept = keys.join(kept_ids.select("doc_id"), "doc_id", "left_semi")
        snap = F.lit(self.snapshot).alias("snapshot")
        frames = {
            "urls": kept.where(F.col("url_norm").isNotNull()).select(
                "doc_id", F.xxhash64("url_norm").alias("url_hash")).select(
                "doc_id", "url_hash", F.pmod("url_hash", F.lit(P)).alias("p"), snap),
            "texts": kept.where(F.col("text_hash").isNotNull()).select(
                "doc_id", "text_hash", F.pmod("text_hash", F.lit(P)).alias("p"), snap),
            "bands": kept.where(F.col("bands").isNotNull()).select(
                "doc_id", F.posexplode("bands").alias("band", "h")).select(
                "doc_id", "band", "h", F.pmod("h", F.lit(P)).alias("p"), snap),
        }
        if sigs is not None:
            frames["sigs"] = sigs.join(kept_ids.select("doc_id"), "doc_id", "left_semi").where(
                F.col("sig").isNotNull()).select("doc_id", "sig", F.pmod(F.xxhash64("doc_id"), F.lit(P)).alias("p"), snap)
        self._write_state_file()
        self._drop_snapshot()
        for table, df in frames.items():
            df.repartition("p").write.mode("append").partitionBy("p", "snapshot").parquet(self._path(table))
        counts = {"documents": kept.count()}
        self._write_manifest(counts)
        return counts

    def _drop_snapshot(self, tables: tuple[str, ...] = TABLES) -> None:
        for table in tables:
            fs, base = url_to_fs(self._path(table))
            for d in fs.glob(f"{base}/p=*/snapshot={self.snapshot}"):
                fs.rm(d, recursive=True)

    def _write_manifest(self, counts: dict[str, int], keep: tuple[str, ...] = ()) -> None:
        """``keep``: counts of the previous manifest to carry over (the images stage keeps the pages')."""
        runs = self.manifests()
        prev = runs.get(self.snapshot)
        order = prev["order"] if prev else max((m["order"] for m in runs.values()), default=-1) + 1
        run_id = {"run_id": self.run_id}
        if prev and keep:  # the images stage: the pages' counts and run id stay, its own run id is added
            counts = {**{k: v for k, v in prev.get("counts", {}).items() if k in keep}, **counts}
            run_id = {"run_id": prev.get("run_id", ""), "images_run_id": self.run_id}
        body = {"snapshot": self.snapshot, "order": order, **run_id, "counts": counts,
                "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        fs, base = url_to_fs(self._path(RUNS))
        fs.makedirs(base, exist_ok=True)
        tmp = f"{base}/.{self.snapshot}.json.tmp"
        with fs.open(tmp, "w") as fh:
            json.dump(body, fh, indent=1)
        fs.mv(tmp, f"{base}/{self.snapshot}.json")

    # ---------------------------------------------------------------- images
    def _image_snapshots(self) -> list[tuple[str, int]]:
        """Earlier snapshots whose images stage recorded its images: (snapshot, number of pHash bands)."""
        runs = self.manifests()
        return [(s, int(runs[s]["counts"]["image_bands"])) for s in self.earlier()
                if "images" in runs[s].get("counts", {})]

    def _read_images(self, table: str, parts: np.ndarray, snapshots: list[str], where=None) -> pa.Table:
        """Rows of ``table`` in partitions ``parts`` of ``snapshots``: only those directories are read."""
        import pyarrow.dataset as ds

        schema = IMAGE_SCHEMAS[table]
        fs, base = url_to_fs(self._path(table))
        if not snapshots or not len(parts) or not fs.exists(base):
            return schema.append(pa.field("snapshot", pa.string())).empty_table()
        dset = ds.dataset(base, filesystem=fs, format="parquet",
                          schema=pa.unify_schemas([schema, PARTITIONING]),
                          partitioning=ds.partitioning(PARTITIONING, flavor="hive"))
        filt = ds.field("p").isin(pa.array(np.unique(parts), pa.int32())) & ds.field("snapshot").isin(snapshots)
        if where is not None:
            filt = filt & where
        return dset.to_table(columns=[*schema.names, "snapshot"], filter=filt)

    def image_matches(self, sha256: list[str], phash: np.ndarray, max_distance: int) -> list[tuple[str, str, str] | None]:
        """For each image, (snapshot, earlier image URL, detail) when an earlier snapshot kept the same
        sha256 or a pHash within ``max_distance`` bits, else None.

        An exact match wins over a near one; among near ones the smallest distance; then the
        earliest snapshot, then the smallest URL. ``max_distance`` < 0: exact matches only.
        """
        out: list[tuple[str, str, str] | None] = [None] * len(sha256)
        snaps = self._image_snapshots()
        if not snaps or not sha256:
            return out
        rank = {s: i for i, (s, _) in enumerate(snaps)}
        phash = np.asarray(phash, dtype=np.uint64)
        # exact: a join on (p, sha256)
        digests = pa.array(sha256, pa.string())
        old = self._read_images("images", _sha_partition(sha256, self.partitions), [s for s, _ in snaps],
                                _ds_field("sha256").isin(digests))
        best: dict[str, tuple[int, str]] = {}
        for d, url, snap in zip(*(old.column(c).to_pylist() for c in ("sha256", "url", "snapshot"))):
            cand = (rank[snap], url)
            if d not in best or cand < best[d]:
                best[d] = cand
        for i, d in enumerate(sha256):
            if d in best:
                r, url = best[d]
                out[i] = (snaps[r][0], url, f"same sha256 as {url} of {snaps[r][0]}")
        if max_distance < 0:
            return out
        # near: per band layout the earlier runs used, a join on (p, band, h), verified by Hamming distance
        near: dict[int, tuple[int, int, str]] = {}
        for n_bands in sorted({nb for _, nb in snaps}):
            if n_bands < max_distance + 1:
                log.warning("dedup state: images recorded with %d pHash bands cannot find every image within %d "
                            "bits (pigeonhole needs %d): some near matches may be missed",
                            n_bands, max_distance, max_distance + 1)
            band, h = phash_bands(phash, n_bands)
            mine = pa.table({"i": np.repeat(np.arange(len(phash)), n_bands), "band": band.ravel().astype(np.int32),
                             "h": h.ravel()})
            theirs = self._read_images("image_bands", _band_partition(band, h, self.partitions),
                                       [s for s, nb in snaps if nb == n_bands])
            if not theirs.num_rows:
                continue
            cand = mine.join(theirs, ["band", "h"], join_type="inner")
            i = cand.column("i").to_numpy()
            other = cand.column("phash").to_numpy().view(np.uint64)
            dist = np.bitwise_count(phash[i] ^ other).astype(np.int64)
            ok = dist <= max_distance
            for ii, d, url, snap in zip(i[ok].tolist(), dist[ok].tolist(),
                                        np.asarray(cand.column("url").to_pylist(), dtype=object)[ok].tolist(),
                                        np.asarray(cand.column("snapshot").to_pylist(), dtype=object)[ok].tolist()):
                key = (d, rank[snap], url)
                if ii not in near or key < near[ii]:
                    near[ii] = key
        for ii, (d, r, url) in near.items():
            if out[ii] is None:
                out[ii] = (snaps[r][0], url, f"pHash distance {d} to {url} of {snaps[r][0]}")
        return out

    def record_images(self, sha256: list[str], phash: np.ndarray, urls: list[str], max_distance: int) -> dict[str, int]:
        """Replace this snapshot's images with the images stage's kept ones, then note them in its manifest.

        The manifest first loses its image count (readers skip this snapshot's images while they
        are rewritten) and gets it back, with the band layout, once the tables are written.
        """
        import pyarrow.dataset as ds

        P = self.partitions
        n_bands = max(1, min(64, max_distance + 1))
        phash = np.asarray(phash, dtype=np.uint64)
        self._write_state_file()
        self._write_manifest({}, keep=("documents",))
        self._drop_snapshot(IMAGE_TABLES)
        band, h = phash_bands(phash, n_bands)
        n = len(urls)
        tables = {
            "images": pa.table({"sha256": pa.array(sha256, pa.string()), "url": pa.array(urls, pa.string()),
                                "p": pa.array(_sha_partition(sha256, P), pa.int32())}),
            "image_bands": pa.table({
                "band": pa.array(band.ravel(), pa.int32()), "h": pa.array(h.ravel(), pa.int64()),
                "phash": pa.array(np.repeat(phash, n_bands).view(np.int64), pa.int64()),
                "url": pa.array(np.repeat(np.asarray(urls, dtype=object), n_bands), pa.string()),
                "p": pa.array(_band_partition(band, h, P).ravel(), pa.int32())}),
        }
        for table, t in tables.items():
            if not t.num_rows:
                continue
            t = t.append_column("snapshot", pa.array([self.snapshot] * t.num_rows, pa.string()))
            fs, base = url_to_fs(self._path(table))
            ds.write_dataset(t, base, filesystem=fs, format="parquet",
                             partitioning=ds.partitioning(PARTITIONING, flavor="hive"),
                             basename_template=f"part-{self.run_id or 'images'}-{{i}}.parquet",
                             existing_data_behavior="overwrite_or_ignore")
        counts = {"images": n, "image_bands": n_bands}
        self._write_manifest(counts, keep=("documents",))
        return counts


def _ds_field(name: str):
    import pyarrow.dataset as ds

    return ds.field(name)


def phash_bands(phash: np.ndarray, n_bands: int) -> tuple[np.ndarray, np.ndarray]:
    """(band index, band value) of each hash's ``n_bands`` bands, both (n, n_bands) int64."""
    from filters.image import phash_band_values

    h = phash_band_values(phash, n_bands).view(np.int64)
    band = np.broadcast_to(np.arange(n_bands, dtype=np.int64), h.shape)
    return band, h


def _sha_partition(sha256: list[str], partitions: int) -> np.ndarray:
    """``p`` of a sha256: its first 8 hex digits mod the partitions."""
    return np.array([int(d[:8], 16) % partitions for d in sha256], dtype=np.int64)


def _band_partition(band: np.ndarray, h: np.ndarray, partitions: int) -> np.ndarray:
    """``p`` of a (band, h) key: a multiplicative hash of both, mod the partitions."""
    with np.errstate(over="ignore"):
        key = (h.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ band.astype(np.uint64)
        key = key * np.uint64(0xBF58476D1CE4E5B9)
    return ((key >> np.uint64(33)) % np.uint64(partitions)).astype(np.int64)



# --------------------------------------------------------------------------- the dedup stage's steps


def seen_before(job, state: DedupState, list_texts: Callable[[pa.Array], list[str]]) -> tuple[Any, Any, Any]:
    """Step 0 of the dedup job (``dedup.state_dir`` set): documents curated by an earlier snapshot.

    Returns (reject frame for ``first_seen`` or None, removal frame for ``newer_wins`` or None, the
    signatures of this run's documents for :func:`record_kept`). Runs before the in-snapshot steps,
    so a page seen before never becomes this snapshot's keeper.
    """
    cfg = job.cfg
    sigs = job.cut(signatures(job.docs, cfg, list_texts)) if cfg.near_dedup else None
    newer_wins = cfg.state_policy == "newer_wins"
    found = state.matches(job.spark, job.keys, sigs, cfg.jaccard_threshold, one_per_document=not newer_wins)
    if found is None:
        job.counters["seen_in_earlier_snapshots"] = 0
        return None, None, sigs
    found = job.cut(found)
    if newer_wins:
        # The newer capture wins: snapshot names sort by date (CC-MAIN-YYYY-WW). A document that a
        # newer snapshot already holds loses (seen_in:<newest>); otherwise every older match is listed.
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        newer = found.where(F.col("snapshot") > F.lit(state.snapshot))
        w = Window.partitionBy("doc_id").orderBy(F.col("snapshot").desc(), F.col("jaccard").desc(), "old_id")
        newest = job.cut(newer.withColumn("_rn", F.row_number().over(w)).where("_rn = 1").drop("_rn"))
        older = found.where(F.col("snapshot") < F.lit(state.snapshot)).join(newest.select("doc_id"), "doc_id", "left_anti")
        removals = job.cut(state.removals(older))
        job.counters["seen_in_earlier_snapshots"] = found.select("doc_id").distinct().count()
        return job.cut(state.seen_rejects(newest)), removals, sigs
    job.counters["seen_in_earlier_snapshots"] = found.count()
    return job.cut(state.seen_rejects(found)), None, sigs


def record_kept(job, state: DedupState, sigs, kept_documents) -> dict[str, int]:
    """After the job's outputs are written: this snapshot's kept documents become part of the state."""
    counts = state.record(job.spark, job.keys, sigs, kept_documents.select("doc_id"))
    job.counters["state_entries"] = counts
    return counts
