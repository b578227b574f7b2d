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
instead of being skipped with stale results.

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
from typing import Any, ClassVar

import fsspec
from fsspec.core import url_to_fs

from curation.config import PipelineConfig
from curation.errors import StageError  # noqa: F401  (defined once in curation/errors.py)

log = logging.getLogger(__name__)

MARKER = "_STAGE_COMPLETE"
STATS = "stats.json"
REJECTS_DIR = "rejects"


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

    def output_path(self, name: str) -> str:
        return f"{self.stage_dir.rstrip('/')}/{name}"

    @property
    def rejects_path(self) -> str:
        return self.output_path(REJECTS_DIR)


class Stage(ABC):
    """One step of the pipeline. Subclasses set ``name``/``outputs`` and implement ``run``."""

    name: ClassVar[str]
    outputs: ClassVar[tuple[str, ...]]
    # Config sections whose values decide this stage's result (part of its fingerprint).
    config_sections: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def run(self, ctx: StageContext) -> StageStats:
        """Do the work, write every output and ``rejects/`` under ``ctx.stage_dir``, return stats."""


def _fs_join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


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


def read_stats(stage_dir: str) -> StageStats:
    fs, path = url_to_fs(stage_dir)
    with fs.open(_fs_join(path, STATS), "r") as fh:
        return StageStats.from_json(fh.read())


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
        for key, path in sorted(inputs.items()):
            # An input inside another stage's directory carries that stage's run id.
            marker = read_marker(path.rsplit("/", 1)[0]) if "/" in path else None
            parts["inputs"][key] = marker.get("run_id") if marker else path
        blob = json.dumps(parts, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def run(self, stage: Stage, inputs: dict[str, str] | None = None) -> StageStats:
        inputs = inputs or {}
        sdir = self.stage_dir(stage.name)
        _, spath = url_to_fs(sdir)
        fingerprint = self.fingerprint(stage, inputs)
        marker = read_marker(sdir)
        forced = stage.name in self.force or "*" in self.force
        if marker and not forced:
            if marker.get("fingerprint") == fingerprint:
                log.info("stage %s: complete (marker %s), skipping", stage.name, marker.get("run_id"))
                return read_stats(sdir)
            log.info("stage %s: inputs or config changed since it finished, running again", stage.name)
        if self.fs.exists(spath):
            why = "forced" if (marker and forced) else ("stale" if marker else "partial output without a completion marker")
            log.info("stage %s: removing %s (%s)", stage.name, sdir, why)
            self.fs.rm(spath, recursive=True)
        self.fs.makedirs(spath, exist_ok=True)

        run_id = f"{stage.name}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        ctx = StageContext(stage_dir=sdir, inputs=inputs, config=self.config, run_id=run_id)
        log.info("stage %s: starting (run %s) -> %s", stage.name, run_id, sdir)
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
            "stage": stage.name,
            "run_id": run_id,
            "fingerprint": fingerprint,
            "finished_at": datetime.now(timezone.utc).isoformat(),
            "inputs": inputs,
            "rows_out": stats.rows_out,
        }
        with fsspec.open(_fs_join(sdir, MARKER), "w") as fh:
            json.dump(marker_body, fh, indent=2)
        log.info(
            "stage %s: done in %.1fs: %d in, %d out, %d rejected %s",
            stage.name, stats.seconds, stats.rows_in, stats.rows_out, stats.rejected_total, dict(stats.rejected),
        )
        return stats
