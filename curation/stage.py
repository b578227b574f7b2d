"""The stage contract and its resumable runner.

A stage reads Parquet (or WARC files for ``extract``) and writes, under
``<out>/<stage name>/``:

- one Parquet dataset per declared output (``documents/``, ``pairs/``, ...);
- ``rejects/``: a Parquet dataset with the ``REJECTS`` schema, one row per input
  row the stage did not pass on, with the reason;
- ``stats.json``: rows in, rows out, rejects per reason, seconds, and counters;
- ``_STAGE_COMPLETE``: the completion marker, written last.

The marker is the only thing that says a stage finished: a directory without
it is partial output and is deleted before the stage runs again. The marker
holds a fingerprint of the stage's config and of its inputs' markers, so a
stage whose upstream was redone (or whose thresholds changed) runs again
instead of being skipped with stale results. It also lists every output file
with its size and Parquet row count (:mod:`curation.stage_files`): before a
stage starts, the runner checks that each input stage has a marker and that
the files it lists are all there, whole, so a missing or truncated input fails
in seconds, naming the file, instead of being read as less data.

Check first, delete last: a stage's previous complete output is moved aside
(``<out>/_previous/<stage>``) only after its inputs passed the check, and put
back when the new attempt fails; it is deleted once the new marker is written.

Every stage must conserve rows: ``rows_in == rows_out + sum(rejected)``. The
runner checks it and refuses to mark a stage complete when rows went missing.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, ClassVar

import fsspec
from fsspec.core import url_to_fs

from curation.config import PipelineConfig
from curation.snapshot import RunSource
from curation.errors import InputError, StageError
from curation.stage_files import damaged_files, list_files

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

MARKER = "_STAGE_COMPLETE"
STATS = "stats.json"
REJECTS_DIR = "rejects"
# Version 2 markers list their output files ("files"); a version-1 marker (no list) is still
# read, its outputs are then not checked (with a warning).
MARKER_VERSION = 2
# Where a complete output waits while its stage runs again (restored if the new attempt fails).
PREVIOUS_DIR = "_previous"
# Problems named in one error message (the rest are counted).
MAX_PROBLEMS_SHOWN = 5


@dataclass
class StageStats:
    """What a stage did, written to ``stats.json``.

    ``rows_in``/``rows_out``/``rejected`` count the stage's unit of work (WARC
    response records for extract, documents for dedup, ...); ``outputs``
    counts rows per output dataset; ``counters`` holds anything else worth a
    number (paragraphs removed per reason, images per document, ...).
    """

    stage: str
    rows_in: int = 0
    rows_out: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    outputs: dict[str, int] = field(default_factory=dict)
    counters: dict[str, Any] = field(default_factory=dict)
    # Secondary input tables a stage also filters (e.g. dedup's pairs), each with
    # its own {"rows_in", "rows_out", "rejected": {reason: n}}, conserved the same way.
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def conserved(self) -> bool:
        if self.rows_in != self.rows_out + self.rejected_total:
            return False
        return all(
            t.get("rows_in", 0) == t.get("rows_out", 0) + sum(t.get("rejected", {}).values())
            for t in self.tables.values()
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "StageStats":
        return cls(**json.loads(text))


@dataclass
class StageContext:
    """Where a stage reads and writes, and the run's configuration."""

    stage_dir: str
    inputs: dict[str, str]
    config: PipelineConfig
    run_id: str
    # Raw input of a first stage (extract's WARC files and snapshot); None for a stage that
    # reads only earlier stages' outputs (``inputs``).
    source: "RunSource | None" = None

    def output_path(self, name: str) -> str:
        return f"{self.stage_dir.rstrip('/')}/{name}"

    @property
    def run_root(self) -> str:
        """The run directory holding this stage's directory (``<out>`` of ``<out>/<stage>``): where
        ``_work/`` and the other stages live. Computed here once, not by each stage."""
        stage_dir = self.stage_dir.rstrip("/")
        return stage_dir.rsplit("/", 1)[0] if "/" in stage_dir else "."

    @property
    def input_run_ids(self) -> dict[str, str]:
        return input_run_ids(self.inputs)

    @property
    def rejects_path(self) -> str:
        return self.output_path(REJECTS_DIR)

    def write_empty_outputs(self, schemas: "dict[str, pa.Schema]") -> list[str]:
        """Give every output in ``schemas`` (name -> schema, ``rejects`` included) that has no file yet
        a valid empty Parquet file of its schema; returns the names filled.

        An empty dataset is a directory with one empty file, not a missing directory: readers
        (Spark, ``pq.read_table``, the next stage's ``check_inputs``) then see zero rows with the
        right columns instead of failing on a path that is not there.
        """
        import pyarrow.parquet as pq

        fs, _ = url_to_fs(self.stage_dir)
        filled = []
        for name, schema in schemas.items():
            d = url_to_fs(self.output_path(name))[1]
            if fs.exists(d) and fs.ls(d):
                continue
            fs.makedirs(d, exist_ok=True)
            with fs.open(f"{d}/empty.parquet", "wb") as fh:
                pq.write_table(schema.empty_table(), fh)
            filled.append(name)
        return filled


class Stage(ABC):
    """One step of the pipeline. Subclasses set ``name``/``outputs`` and implement ``run``."""

    name: ClassVar[str]
    outputs: ClassVar[tuple[str, ...]]
    # Config sections whose values decide this stage's result (part of its fingerprint).
    config_sections: ClassVar[tuple[str, ...]] = ()
    # Keys fingerprinted only when not None: an opt-in setting left off keeps earlier fingerprints.
    config_sections_if_set: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def run(self, ctx: StageContext) -> StageStats:
        """Do the work, write every output and ``rejects/`` under ``ctx.stage_dir``, return stats."""


def _fs_join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def _is_local(fs: Any) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    return bool({"file", "local"} & set(protocols))


def is_complete(stage_dir: str) -> bool:
    fs, path = url_to_fs(stage_dir)
    return fs.exists(_fs_join(path, MARKER))


def read_marker(stage_dir: str) -> dict[str, Any] | None:
    fs, path = url_to_fs(stage_dir)
    marker = _fs_join(path, MARKER)
    if not fs.exists(marker):
        return None
    with fs.open(marker, "r") as fh:
        return json.load(fh)


def input_run_ids(inputs: dict[str, str]) -> dict[str, str]:
    """Each input's upstream run id (the marker of the stage directory holding it), or its path when
    it has none. What ties a stage's fingerprint and its work directories to the exact upstream run:
    a redone upstream stage gets a new run id, so nothing computed from the old one is reused."""
    ids = {}
    for key, path in sorted(inputs.items()):
        marker = read_marker(path.rstrip("/").rsplit("/", 1)[0]) if "/" in path else None
        ids[key] = marker.get("run_id") if marker else path
    return ids


def read_stats(stage_dir: str) -> StageStats:
    fs, path = url_to_fs(stage_dir)
    with fs.open(_fs_join(path, STATS), "r") as fh:
        return StageStats.from_json(fh.read())


def check_inputs(inputs: dict[str, str], upstream: dict[str, str] | None = None) -> None:
    """Refuse to start on an input stage that did not finish or whose files are no longer whole.

    ``upstream`` maps input keys to the stage whose output they must be (``{"documents": "dedup"}``):
    those need that stage's marker. Callers that know the stage table pass it (the CLI's preflight,
    from :mod:`curation.registry`, where a stage's ``when`` decides whether its output is needed);
    this module does not import the table. Any other input inside a directory with a marker
    (``<root>/<stage>/<output>``) has its files checked all the same; one without is read as given
    (a directory a test or a user built by hand).

    Raises :class:`InputError` naming the stage directory or the files, and the command that fixes
    it. Reads markers, file sizes and Parquet footers only: seconds, whatever the data size.
    """
    upstream = upstream or {}
    problems: list[str] = []
    damaged: dict[str, str] = {}  # stage -> its run root
    for key, path in sorted(inputs.items()):
        if path.count("/") < 1 or "," in path:
            continue
        stage_dir, output = path.rstrip("/").rsplit("/", 1)
        root = stage_dir.rsplit("/", 1)[0] if "/" in stage_dir else "."
        marker = read_marker(stage_dir)
        if marker is None:
            if key not in upstream:
                continue
            name = upstream[key]
            fs, sp = url_to_fs(stage_dir)
            if not fs.exists(url_to_fs(root)[1]):
                why = f"{root} does not exist"
            elif not fs.exists(sp):
                why = f"the {name} stage has not run there ({stage_dir} not found)"
            else:
                why = f"{stage_dir} has no {MARKER}: the {name} stage did not finish (interrupted or failed)"
            raise InputError(f"input {key} ({path}): {why}; run the {name} stage there first: "
                             f"`curate run --out {root}` (or `curate {name} --input ... --out {root}`)")
        name = marker.get("stage", stage_dir.rsplit("/", 1)[-1])
        listed = marker.get("files")
        if listed is None:
            log.warning("input %s: %s has a marker without a file list (written before marker version %d): "
                        "its files are not checked", key, stage_dir, MARKER_VERSION)
            continue
        if output not in listed:
            continue  # the stage wrote no such output; the reading stage decides what that means
        found = damaged_files(stage_dir, listed[output])
        if found:
            damaged[name] = root
            problems += [f"{stage_dir}/{p}" for p in found]
    if problems:
        shown = "; ".join(problems[:MAX_PROBLEMS_SHOWN])
        more = f" (and {len(problems) - MAX_PROBLEMS_SHOWN} more)" if len(problems) > MAX_PROBLEMS_SHOWN else ""
        redo = " ".join(f"--force {n}" for n in sorted(damaged))
        raise InputError(
            f"input stage {', '.join(sorted(damaged))} changed after it finished: {shown}{more}; "
            f"redo it: `curate run --out {next(iter(damaged.values()))} {redo}`"
        )


class StageRunner:
    """Runs stages under one output root, skipping those already complete.

    ``force`` names stages to redo even when complete (``{"*"}`` redoes all).
    """

    def __init__(self, out_root: str, config: PipelineConfig, force: set[str] | None = None):
        self.out_root = out_root.rstrip("/")
        self.config = config
        self.force = force or set()
        self.fs, self.root_path = url_to_fs(self.out_root)

    def stage_dir(self, name: str) -> str:
        return _fs_join(self.out_root, name)

    def fingerprint(self, stage: Stage, inputs: dict[str, str]) -> str:
        """Hash of the stage's config sections and of the markers of its input stages."""
        parts: dict[str, Any] = {
            "stage": stage.name,
            "config": {s: self.config.section(s) for s in stage.config_sections},
            "inputs": {},
        }
        for s in stage.config_sections_if_set:
            if self.config.section(s) is not None:
                parts["config"][s] = self.config.section(s)
        parts["inputs"] = input_run_ids(inputs)
        blob = json.dumps(parts, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def run(self, stage: Stage, inputs: dict[str, str] | None = None, source: "RunSource | None" = None,
            upstream: dict[str, str] | None = None) -> StageStats:
        """Run ``stage`` unless complete; ``upstream``: input keys that must be a finished stage's output
        (see :func:`check_inputs`)."""
        stage_inputs = dict(inputs or {})  # earlier stages' outputs: checked before the stage starts
        inputs = {**(source.fingerprint_inputs() if source else {}), **stage_inputs}
        sdir = self.stage_dir(stage.name)
        _, spath = url_to_fs(sdir)
        self._recover(stage.name, spath)
        fingerprint = self.fingerprint(stage, inputs)
        marker = read_marker(sdir)
        forced = stage.name in self.force or "*" in self.force
        if marker and not forced:
            if marker.get("fingerprint") == fingerprint:
                log.info("stage %s: complete (marker %s), skipping", stage.name, marker.get("run_id"))
                return read_stats(sdir)
            log.info("stage %s: inputs or config changed since it finished, running again", stage.name)
        # Check first, delete last: nothing of a previous output is touched before the inputs pass.
        check_inputs(stage_inputs, upstream)
        aside = self._clear(stage.name, spath, marker, forced)
        self.fs.makedirs(spath, exist_ok=True)

        run_id = f"{stage.name}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        ctx = StageContext(stage_dir=sdir, inputs=inputs, config=self.config, run_id=run_id, source=source)
        log.info("stage %s: starting (run %s) -> %s", stage.name, run_id, sdir)
        try:
            stats = self._run_and_mark(stage, ctx, fingerprint)
        except BaseException:
            if aside:
                log.warning("stage %s failed: putting its previous complete output back from %s", stage.name, aside)
                if self.fs.exists(spath):
                    self.fs.rm(spath, recursive=True)
                self.fs.mv(aside, spath, recursive=True)
            raise
        if aside:
            self.fs.rm(aside, recursive=True)
        return stats

    def _clear(self, name: str, spath: str, marker: dict[str, Any] | None, forced: bool) -> str | None:
        """Empty the stage directory for a new attempt; returns where a complete output was moved aside.

        A complete output (a marker: stale or forced) on a local filesystem is moved, not deleted, so
        a failing rerun can put it back; on an object store a move is a copy of every byte, so it is
        deleted there (after the input check, which is what fails most reruns). Partial output
        (no marker) is always deleted.
        """
        if not self.fs.exists(spath):
            return None
        why = "forced" if (marker and forced) else ("stale" if marker else "partial output without a completion marker")
        if marker and _is_local(self.fs):
            aside = _fs_join(self.root_path, PREVIOUS_DIR, name)
            if self.fs.exists(aside):
                self.fs.rm(aside, recursive=True)
            self.fs.makedirs(_fs_join(self.root_path, PREVIOUS_DIR), exist_ok=True)
            log.info("stage %s: moving %s aside to %s (%s) until the new attempt finishes", name, spath, aside, why)
            self.fs.mv(spath, aside, recursive=True)
            return aside
        log.info("stage %s: removing %s (%s)", name, spath, why)
        self.fs.rm(spath, recursive=True)
        return None

    def _recover(self, name: str, spath: str) -> None:
        """Undo a rerun killed while the previous output was moved aside (``kill -9``: no ``except`` ran)."""
        aside = _fs_join(self.root_path, PREVIOUS_DIR, name)
        if not self.fs.exists(aside):
            return
        if self.fs.exists(_fs_join(spath, MARKER)):  # the new attempt finished; only the cleanup was cut
            self.fs.rm(aside, recursive=True)
            return
        log.warning("stage %s: a rerun was interrupted; putting its previous complete output back from %s", name, aside)
        if self.fs.exists(spath):
            self.fs.rm(spath, recursive=True)
        self.fs.mv(aside, spath, recursive=True)

    def _run_and_mark(self, stage: Stage, ctx: StageContext, fingerprint: str) -> StageStats:
        sdir = ctx.stage_dir
        start = time.perf_counter()
        stats = stage.run(ctx)
        stats.seconds = round(time.perf_counter() - start, 3)
        stats.stage = stage.name
        if not stats.conserved():
            raise StageError(
                f"stage {stage.name} lost rows: rows_in={stats.rows_in} but rows_out={stats.rows_out} "
                f"+ rejected={stats.rejected_total} (tables: {stats.tables}); not marking it complete"
            )
        with fsspec.open(_fs_join(sdir, STATS), "w") as fh:
            fh.write(stats.to_json())
        marker_body = {
            "version": MARKER_VERSION,
            "stage": stage.name,
            "run_id": ctx.run_id,
            "fingerprint": fingerprint,
            "finished_at": datetime.now(timezone.utc).isoformat(),
            "inputs": ctx.inputs,
            "rows_out": stats.rows_out,
            # Every output file with its size and Parquet row count: what check_inputs verifies.
            "files": list_files(sdir),
        }
        with fsspec.open(_fs_join(sdir, MARKER), "w") as fh:
            json.dump(marker_body, fh, indent=2)
        log.info(
            "stage %s: done in %.1fs: %d in, %d out, %d rejected %s",
            stage.name, stats.seconds, stats.rows_in, stats.rows_out, stats.rejected_total, dict(stats.rejected),
        )
        return stats
