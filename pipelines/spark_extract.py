"""Spark job: WARC files -> interleaved documents, pair candidates and rejects.

One Spark task per WARC file (``files_per_task`` by config); each task streams its files with
FastWARC, runs :class:`curation.extract.RecordProcessor` and writes its own outputs, as the Dask
stages do per shard (:func:`curation.dask_cluster.run_task`): ``documents/``, ``pairs/`` and
``rejects/<task id>.parquet`` under ``<run>/_work/extract-<hash>/`` (each file written to a
temporary name and renamed), then its done-marker ``_done/<task id>.json`` holding its row counts
and per-file read stats. The work directory lives outside the stage directory (which the runner
deletes when it has no completion marker) and is keyed by everything that decides a task's rows,
so a killed extract keeps its finished files: the rerun lists the markers on the driver and
schedules only the other tasks ("extract: N of M WARC files already finished, resuming"). The
stage's outputs are the union of the tasks' files (hard links on a local disk, copies on an object
store), the stats the sum of the markers' counts: the driver handles names and counts, never rows.
The processor (text filters, fastText LID) is built once per Python worker, not per task.

The unit of work (``rows_in``) is every item :func:`curation.warc_reader.iter_warc`
yields: each response record, also one a neighbour's lying ``Content-Length``
swallowed, each unreadable region at its own offset, a 0-byte file. Each becomes
exactly one document or one reject, whatever it raises (``record_error``), so
one bad record never ends the task and takes the other files with it.
"""
from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass
from functools import partial
from typing import Any, Iterator

import pyarrow as pa
from fsspec.core import url_to_fs

from curation.errors import StageError
from curation.schemas import DOCUMENTS, PAIRS, REJECTS
from curation.stage import REJECTS_DIR, Stage, StageContext, StageStats
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
    processor=None,
) -> Iterator[pa.RecordBatch]:
    """For each (path, name) row, read the WARC file and emit combined rows (``processor``: a
    :class:`curation.extract.RecordProcessor` built once per worker; built here when None)."""
    from curation.warc_reader import FileReadStats, ReadProblem, iter_warc

    if processor is None:
        processor = build_processor(extract_cfg, paragraph_cfg, document_cfg, snapshot, safety_cfg, takedown)
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


def build_processor(extract_cfg, paragraph_cfg, document_cfg, snapshot: str, safety_cfg=None, takedown=None):
    """The record processor of a task: text filters, fastText LID, blocklists, PII scrubber."""
    from curation.extract import RecordProcessor
    from filters.text_pipeline import TextFilterPipeline

    # identify_rejected: rejected pages carry their language in the rejects table too.
    pipeline = TextFilterPipeline(paragraph_cfg, document_cfg, identify_rejected=True)
    return RecordProcessor(extract_cfg, pipeline, snapshot, safety_cfg, takedown)


@dataclass(frozen=True)
class ExtractSpec:
    """What every extract task needs (pickled once into the Spark closure); ``work_dir`` names the
    per-worker processor cache too, since it is keyed by everything that decides a task's rows."""

    work_dir: str
    extract_cfg: Any
    paragraph_cfg: Any
    document_cfg: Any
    snapshot: str
    safety_cfg: Any = None
    takedown: Any = None

    def processor(self):
        """Built once per Python worker (Spark reuses workers: ``spark.python.worker.reuse``), not per task."""
        from curation.dask_cluster import setup_once

        return setup_once(("extract-processor", self.work_dir), partial(
            build_processor, self.extract_cfg, self.paragraph_cfg, self.document_cfg, self.snapshot,
            self.safety_cfg, self.takedown))


def task_plan(warcs: list[tuple[str, str]], files_per_task: int) -> list[tuple[str, list[tuple[str, str]]]]:
    """``[(task id, [(path, name), ...]), ...]``: ``files_per_task`` WARC files per task, in input order.

    Ids are stable across reruns of the same input list (the work directory is keyed by it): the
    group's position, then its first file's base name, so sorted output files keep input order.
    """
    tasks = []
    for i in range(0, len(warcs), files_per_task):
        group = warcs[i:i + files_per_task]
        stem = group[0][1].rstrip("/").rsplit("/", 1)[-1]
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:80]
        tasks.append((f"{i // files_per_task:05d}-{stem}", group))
    return tasks


def extract_task(spec: ExtractSpec, task: tuple[str, list[tuple[str, str]]]) -> dict:
    """One Spark task: its WARC files -> ``<work>/{documents,pairs,rejects}/<task id>.parquet``, then its
    done-marker ``<work>/_done/<task id>.json`` (row counts, per-file read stats, counters).

    A task whose marker exists returns it (a retried or speculative attempt redoes nothing); a task
    killed before its marker leaves at most temporary files, and its rerun rewrites the same names.
    """
    from curation.dask_cluster import run_task

    task_id, files = task
    return run_task(spec.work_dir, task_id, partial(_write_task, spec, files),
                    {"task": task_id, "warc_names": [name for _, name in files]})


def _write_task(spec: ExtractSpec, files: list[tuple[str, str]], out) -> dict:
    import pyarrow.compute as pc

    batch = pa.record_batch({"path": [p for p, _ in files], "name": [n for _, n in files]})
    parts: dict[str, list[pa.RecordBatch]] = {KIND_DOC: [], KIND_PAIR: [], KIND_REJECT: []}
    file_stats: list[dict] = []
    for combined in process_files(iter([batch]), spec.extract_cfg, spec.paragraph_cfg, spec.document_cfg,
                                  spec.snapshot, processor=spec.processor()):
        kinds = combined.column("kind")
        for kind in parts:
            parts[kind].append(combined.filter(pc.equal(kinds, kind)))
        stats = combined.filter(pc.equal(kinds, KIND_STATS)).column("stats_json").to_pylist()
        file_stats += [json.loads(s) for s in stats]
    tables = {kind: pa.Table.from_batches(b, schema=COMBINED) if b else COMBINED.empty_table()
              for kind, b in parts.items()}
    docs = tables[KIND_DOC]
    docs = pa.table([docs.column(n) for n in DOCUMENTS.names], schema=DOCUMENTS)
    pairs = tables[KIND_PAIR]
    pairs = pa.table([pairs.column(PAIR_COLS[n]) for n in PAIRS.names], schema=PAIRS)
    rej = tables[KIND_REJECT]
    n_rej = rej.num_rows
    rejects = pa.table([rej.column("row_id"), pa.array(["records"] * n_rej, pa.string()),
                        pa.array([ExtractStage.name] * n_rej, pa.string()), rej.column("reason"),
                        rej.column("detail"), pa.nulls(n_rej, pa.string())], schema=REJECTS)
    for name, table in (("documents", docs), ("pairs", pairs), (REJECTS_DIR, rejects)):
        if table.num_rows:  # no empty files: readers (HF datasets) refuse a file without a row group
            out.write_table(name, table)
    return {
        "documents": docs.num_rows,
        "pairs": pairs.num_rows,
        "rejected": dict(Counter(rejects.column("reason").to_pylist())),
        "file_stats": file_stats,
    }


OUTPUT_DIRS = ("documents", "pairs", REJECTS_DIR)


def finished_tasks(work_dir: str, task_ids: list[str]) -> dict[str, dict]:
    """``{task id: done-marker}`` of the tasks that finished with all their output files still there.

    One listing per directory (not one request per task: a snapshot has ~90,000 WARC files); a
    marker whose files went missing is removed and its task redone.
    """
    from curation.dask_cluster import DONE_DIR, read_done

    fs, root = url_to_fs(work_dir)

    def names(sub: str, suffix: str) -> set[str]:
        d = f"{root.rstrip('/')}/{sub}"
        if not fs.exists(d):
            return set()
        return {p.rsplit("/", 1)[-1].removesuffix(suffix) for p in fs.ls(d, detail=False) if p.endswith(suffix)}

    marked = names(DONE_DIR, ".json")
    present = {sub: names(sub, ".parquet") for sub in OUTPUT_DIRS}
    found = {}
    for tid in task_ids:
        if tid not in marked:
            continue
        done = read_done(work_dir, tid)
        if not all(tid in present[sub] for sub in task_outputs(done)):
            log.warning("extract: task %s has a done-marker but lost an output file; redoing it", tid)
            fs.rm(f"{root.rstrip('/')}/{DONE_DIR}/{tid}.json")
            continue
        found[tid] = done
    return found


def task_outputs(done: dict) -> list[str]:
    """The outputs a finished task wrote a file for (none for an empty one)."""
    return [f.rsplit("/", 2)[-2] for f in done.get("_files", [])]


def _publish(work_dir: str, ctx: StageContext, done: dict[str, dict]) -> None:
    """The stage's outputs are the union of the tasks' files: hard links on a local disk (the work
    copy stays whole until the stage is marked), copies elsewhere; ``<output>/<task id>.parquet``.
    An output no task had a row for is an empty dataset of its schema (``ctx.write_empty_outputs``)."""
    from curation.dask_cluster import ShardOutput

    stage_dir = ctx.stage_dir
    written: set[str] = set()
    for tid, summary in done.items():
        src = ShardOutput(work_dir, tid)
        dst = ShardOutput(stage_dir, tid)
        for name in task_outputs(summary):
            written.add(name)
            s, d = url_to_fs(src.path(name, ".parquet"))[1], url_to_fs(dst.path(name, ".parquet"))[1]
            dst.fs.makedirs(d.rsplit("/", 1)[0], exist_ok=True)
            if _is_local(src.fs):
                if os.path.exists(d):
                    os.remove(d)
                try:
                    os.link(s, d)
                    continue
                except OSError:  # another device: copy
                    pass
            src.fs.copy(s, d)
    ctx.write_empty_outputs({name: schema for name, schema in zip(OUTPUT_DIRS, (DOCUMENTS, PAIRS, REJECTS))
                             if name not in written})


def _is_local(fs) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    return bool({"file", "local"} & set(protocols))


class ExtractStage(Stage):
    """``curate extract``: WARC files -> ``documents/``, ``pairs/``, ``rejects/``.

    Resumable per task: each task's files and done-marker live in ``<run>/_work/extract-<hash>/``
    (outside the stage directory, which the runner deletes when it has no completion marker); a
    rerun schedules only the tasks without a marker. See the module docstring.
    """

    name = "extract"
    outputs = ("documents", "pairs")
    config_sections = ("extract", "paragraph_filters", "document_filters", "safety.blocked_domains_file",
                       "safety.pii_emails", "safety.pii_phones", "safety.pii_ips")

    def plan(self, ctx: StageContext) -> tuple[ExtractSpec, list[tuple[str, list[tuple[str, str]]]]]:
        """The tasks' shared spec (its work directory included) and the task list, for ``ctx``'s WARC files."""
        from curation.dask_cluster import work_dir_for

        if ctx.source is None:
            raise StageError("extract reads WARC files: run it through curation.pipeline (curate run / curate extract)")
        cfg = ctx.config
        snapshot = ctx.source.snapshot
        out_root = ctx.run_root
        takedown = takedown_filter(out_root)  # curate takedown's lists
        per_task = max(1, cfg.extract.files_per_task)
        # Everything that decides a task's rows: the stage's config, the WARC list, the snapshot and
        # the takedown list. A change gets a new work directory; nothing stale is reused.
        work_key = {
            "config": {s: cfg.section(s) for s in self.config_sections},
            "inputs": ctx.inputs, "snapshot": snapshot, "files_per_task": per_task,
            "takedown": _takedown_key(takedown),
        }
        spec = ExtractSpec(work_dir_for(out_root, self.name, work_key), cfg.extract, cfg.paragraph_filters,
                           cfg.document_filters, snapshot, cfg.safety, takedown)
        return spec, task_plan([(w.path, w.name) for w in ctx.source.warcs], per_task)

    def run(self, ctx: StageContext) -> StageStats:
        from curation.spark import get_spark

        spec, tasks = self.plan(ctx)
        cfg, work_dir, n_warcs = ctx.config, spec.work_dir, len(ctx.source.warcs)
        results = finished_tasks(work_dir, [tid for tid, _ in tasks])
        todo = [t for t in tasks if t[0] not in results]
        if results:
            n_done = sum(len(files) for tid, files in tasks if tid in results)
            log.info("extract: %d of %d WARC files already finished, resuming (%d of %d tasks to run; work dir %s)",
                     n_done, n_warcs, len(todo), len(tasks), work_dir)
        log.info("extract: %d WARC file(s), %d Spark task(s) to run on %s, work dir %s", n_warcs, len(todo),
                 cfg.spark.master, work_dir)
        if todo:
            sc = get_spark(cfg.spark).sparkContext
            sc.setJobDescription(f"extract: {len(todo)} task(s)")
            for summary in sc.parallelize(todo, len(todo)).map(partial(extract_task, spec)).collect():
                results[summary["task"]] = summary
        order = [tid for tid, _ in tasks]
        _publish(work_dir, ctx, {t: results[t] for t in order})
        stats = self._stats([results[t] for t in order], n_warcs)
        stats.counters["warc_files_resumed"] = n_warcs - sum(len(files) for _, files in todo)
        if stats.conserved():  # the stage's files are links or copies: the work copy is no longer needed
            wfs, wp = url_to_fs(work_dir)
            if wfs.exists(wp):
                wfs.rm(wp, recursive=True)
        return stats

    def _stats(self, summaries: list[dict], n_warcs: int) -> StageStats:
        counters: Counter = Counter()
        by_type: Counter = Counter()
        rejected: Counter = Counter()
        resyncs = overruns = records = n_docs = n_pairs = 0
        for summary in summaries:
            n_docs += summary["documents"]
            n_pairs += summary["pairs"]
            rejected.update(summary["rejected"])
            for fs in summary["file_stats"]:
                counters.update(fs["counters"])
                by_type.update(fs["records_by_type"])
                resyncs += fs["resyncs"]
                overruns += fs.get("overruns", 0)
                records += fs["records"]
        return StageStats(
            stage=self.name,
            rows_in=records,
            rows_out=n_docs,
            rejected=dict(sorted(rejected.items())),
            outputs={"documents": n_docs, "pairs": n_pairs},
            counters={
                "warc_files": n_warcs,
                "warc_records_by_type": dict(sorted(by_type.items())),
                "gzip_resyncs": resyncs,
                "warc_length_overruns": overruns,
                **dict(sorted(counters.items())),
            },
        )


def _takedown_key(takedown) -> str | None:
    """A stable digest of the run's takedown list (None without one)."""
    if takedown is None:
        return None
    import hashlib

    parts = sorted((k, sorted(map(str, v)) if isinstance(v, (set, frozenset, list, tuple)) else repr(v))
                   for k, v in vars(takedown).items())
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]
