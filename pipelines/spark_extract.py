"""Spark job: WARC files -> interleaved documents, pair candidates and rejects.

One Spark task per WARC file (``files_per_task`` by config); each task streams
its file with FastWARC and runs :class:`curation.extract.RecordProcessor`. The
task emits Arrow record batches of one combined schema (``kind`` says which
output a row belongs to), which Spark persists once and splits into the three
datasets, so every page is parsed exactly once. Per-file counters travel as
``kind == "stats"`` rows and are summed on the driver: no accumulators, and a
retried task cannot double-count.

The unit of work (``rows_in``) is every item :func:`curation.warc_reader.iter_warc`
yields: each response record, also one a neighbour's lying ``Content-Length``
swallowed, each unreadable region at its own offset, a 0-byte file. Each becomes
exactly one document or one reject, whatever it raises (``record_error``), so
one bad record never ends the task and takes the other files with it.
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Iterator

import pyarrow as pa

from curation.schemas import DOCUMENTS, PAIRS, spark_ddl
from curation.errors import StageError
from curation.stage import Stage, StageContext, StageStats
from filters.blocklists import takedown_filter

log = logging.getLogger(__name__)

KIND_DOC, KIND_PAIR, KIND_REJECT, KIND_STATS = "doc", "pair", "reject", "stats"
PAIR_COLS = {f.name: f"pair_{f.name}" for f in PAIRS}
COMBINED = pa.schema(
    [pa.field("kind", pa.string())]
    + list(DOCUMENTS)
    + [pa.field(PAIR_COLS[f.name], f.type) for f in PAIRS]
    + [
        pa.field("row_id", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("detail", pa.string()),
        pa.field("stats_json", pa.string()),
    ]
)
_BATCH_ROWS = 256


def _empty_row() -> dict:
    return {name: None for name in COMBINED.names}


def process_files(
    batches: Iterator[pa.RecordBatch],
    extract_cfg,
    paragraph_cfg,
    document_cfg,
    snapshot: str,
    safety_cfg=None,
    takedown=None,
) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` body: for each (path, name) row, read the WARC file and emit combined rows."""
    from curation.extract import RecordProcessor
    from curation.warc_reader import FileReadStats, ReadProblem, iter_warc
    from filters.text_pipeline import TextFilterPipeline

    # identify_rejected: rejected pages carry their language in the rejects table too.
    pipeline = TextFilterPipeline(paragraph_cfg, document_cfg, identify_rejected=True)
    processor = RecordProcessor(extract_cfg, pipeline, snapshot, safety_cfg, takedown)
    groups: list[tuple[str, list[dict]]] = []  # (row id, the rows of one record)
    n_rows = 0

    def flush():
        nonlocal n_rows
        rows = [row for _, group in groups for row in group]
        try:
            table = pa.Table.from_pylist(rows, schema=COMBINED)
        except Exception:  # noqa: BLE001  one record's unwritable value must not end the task
            table = pa.Table.from_pylist([row for group in groups for row in _arrow_safe(*group)], schema=COMBINED)
        groups.clear()
        n_rows = 0
        return table.to_batches()

    for batch in batches:
        for path, name in zip(batch.column("path").to_pylist(), batch.column("name").to_pylist()):
            file_stats = FileReadStats()
            counters: Counter = Counter()
            n_records = 0
            last_offset = -1
            records = iter_warc(path, name, extract_cfg.max_payload_bytes, extract_cfg.max_resyncs_per_file, file_stats)
            while True:
                try:
                    rec = next(records)
                except StopIteration:
                    break
                except Exception as exc:  # noqa: BLE001  iter_warc reports bad data itself; this is the backstop
                    log.exception("%s: reading stopped after offset %d", name, last_offset)
                    rec = ReadProblem(name, last_offset + 1, "warc_read_error",
                                      f"reading stopped: {type(exc).__name__}: {exc}")
                    records = iter(())
                n_records += 1
                last_offset = rec.offset
                result = processor.process(rec)
                counters.update(result.counters)
                group = _result_rows(result)
                groups.append((result.row_id, group))
                n_rows += len(group)
                if n_rows >= _BATCH_ROWS:
                    yield from flush()
            stats_row = _empty_row()
            stats_row["kind"] = KIND_STATS
            stats_row["stats_json"] = json.dumps(
                {
                    "file": name,
                    "records": n_records,
                    "records_by_type": dict(file_stats.records_by_type),
                    "resyncs": file_stats.resyncs,
                    "overruns": file_stats.overruns,
                    "counters": dict(counters),
                }
            )
            groups.append((f"{name}@stats", [stats_row]))
            n_rows += 1
    if groups:
        yield from flush()


def _result_rows(result) -> list[dict]:
    """The combined rows of one record: its document and pairs, or its reject."""
    if result.document is None:
        row = _empty_row()
        row.update(kind=KIND_REJECT, row_id=result.row_id, reason=result.reason, detail=result.detail)
        return [row]
    row = _empty_row()
    row.update(result.document)
    row["kind"] = KIND_DOC
    rows = [row]
    for pair in result.pairs:
        prow = _empty_row()
        prow["kind"] = KIND_PAIR
        for key, value in pair.items():
            prow[PAIR_COLS[key]] = value
        rows.append(prow)
    return rows


def _arrow_safe(row_id: str, rows: list[dict]) -> list[dict]:
    """``rows`` when Arrow can hold them, else one ``record_error`` reject for the record (e.g. a lone
    surrogate in a text, which no UTF-8 writer encodes)."""
    try:
        pa.Table.from_pylist(rows, schema=COMBINED)
        return rows
    except Exception as exc:  # noqa: BLE001
        log.warning("record %s: its rows cannot be written: %s: %s", row_id, type(exc).__name__, exc)
        row = _empty_row()
        row.update(kind=KIND_REJECT, row_id=row_id, reason="record_error",
                   detail=f"unwritable row: {type(exc).__name__}: {exc}"[:500])
        return [row]


class ExtractStage(Stage):
    """``curate extract``: WARC files -> ``documents/``, ``pairs/``, ``rejects/``."""

    name = "extract"
    outputs = ("documents", "pairs")
    config_sections = ("extract", "paragraph_filters", "document_filters", "safety.blocked_domains_file",
                       "safety.pii_emails", "safety.pii_phones", "safety.pii_ips")

    def run(self, ctx: StageContext) -> StageStats:
        from functools import partial

        from pyspark import StorageLevel
        from pyspark.sql import functions as F

        from curation.spark import get_spark

        if ctx.source is None:
            raise StageError("extract reads WARC files: run it through curation.pipeline (curate run / curate extract)")
        warcs, snapshot = list(ctx.source.warcs), ctx.source.snapshot
        cfg = ctx.config
        spark = get_spark(cfg.spark)
        per_task = max(1, cfg.extract.files_per_task)
        n_tasks = max(1, (len(warcs) + per_task - 1) // per_task)
        log.info("extract: %d WARC file(s) in %d Spark task(s) on %s", len(warcs), n_tasks, cfg.spark.master)
        files = spark.sparkContext.parallelize([(w.path, w.name) for w in warcs], n_tasks).toDF("path string, name string")
        body = partial(
            process_files,
            extract_cfg=cfg.extract,
            paragraph_cfg=cfg.paragraph_filters,
            document_cfg=cfg.document_filters,
            snapshot=snapshot,
            safety_cfg=cfg.safety,
            takedown=takedown_filter(ctx.stage_dir.rstrip("/").rsplit("/", 1)[0]),  # curate takedown's lists
        )
        combined = files.mapInArrow(body, spark_ddl(COMBINED)).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            docs = combined.where(F.col("kind") == KIND_DOC).select(*DOCUMENTS.names)
            pairs = combined.where(F.col("kind") == KIND_PAIR).select(
                *[F.col(PAIR_COLS[n]).alias(n) for n in PAIRS.names]
            )
            rejects = combined.where(F.col("kind") == KIND_REJECT).select(
                "row_id",
                F.lit("records").alias("table"),
                F.lit(self.name).alias("stage"),
                "reason",
                "detail",
                F.lit(None).cast("string").alias("duplicate_of"),
            )
            docs.write.mode("overwrite").parquet(ctx.output_path("documents"))
            pairs.write.mode("overwrite").parquet(ctx.output_path("pairs"))
            rejects.write.mode("overwrite").parquet(ctx.rejects_path)
            reject_counts = {r["reason"]: r["n"] for r in rejects.groupBy("reason").agg(F.count("*").alias("n")).collect()}
            n_docs = docs.count()
            n_pairs = pairs.count()
            file_stats = [json.loads(r["stats_json"]) for r in combined.where(F.col("kind") == KIND_STATS).collect()]
        finally:
            combined.unpersist()

        counters: Counter = Counter()
        by_type: Counter = Counter()
        resyncs = overruns = 0
        records = 0
        for fs in file_stats:
            counters.update(fs["counters"])
            by_type.update(fs["records_by_type"])
            resyncs += fs["resyncs"]
            overruns += fs.get("overruns", 0)
            records += fs["records"]
        return StageStats(
            stage=self.name,
            rows_in=records,
            rows_out=n_docs,
            rejected=dict(sorted(reject_counts.items())),
            outputs={"documents": n_docs, "pairs": n_pairs},
            counters={
                "warc_files": len(warcs),
                "warc_records_by_type": dict(sorted(by_type.items())),
                "gzip_resyncs": resyncs,
                "warc_length_overruns": overruns,
                **dict(sorted(counters.items())),
            },
        )
