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
                json.dump({"partitions": self.partitions, "tables": list(TABLES)}, fh)

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

    def _drop_snapshot(self) -> None:
        for table in TABLES:
            fs, base = url_to_fs(self._path(table))
            for d in fs.glob(f"{base}/p=*/snapshot={self.snapshot}"):
                fs.rm(d, recursive=True)

    def _write_manifest(self, counts: dict[str, int]) -> None:
        runs = self.manifests()
        prev = runs.get(self.snapshot)
        order = prev["order"] if prev else max((m["order"] for m in runs.values()), default=-1) + 1
        body = {"snapshot": self.snapshot, "order": order, "run_id": self.run_id, "counts": counts,
                "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        fs, base = url_to_fs(self._path(RUNS))
        fs.makedirs(base, exist_ok=True)
        tmp = f"{base}/.{self.snapshot}.json.tmp"
        with fs.open(tmp, "w") as fh:
            json.dump(body, fh, indent=1)
        fs.mv(tmp, f"{base}/{self.snapshot}.json")



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
