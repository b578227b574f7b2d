"""Dedup's step checkpoints: each expensive step's result as Parquet, reused by a rerun.

The stage runner deletes a stage directory that has no completion marker, and before this module a
killed dedup redid everything from the MinHash signatures on. Now each step (document keys and
MinHash bands, each step's rejects, LSH candidates, connected components, the rewritten documents,
the resolved rejects, the pair decisions) writes the frames it returns under
``<run>/_work/dedup-<key>/<step>/<frame>/`` and then its done-marker ``<step>/_DONE.json`` (the
frames' Spark schemas and the counters the step added). A rerun reads a step whose marker exists
instead of computing it (``dedup: step keys resumed``), so a kill after step k costs steps k+1..
only. The steps are deterministic functions of their inputs, so a resumed run writes the same rows.

``key`` hashes everything that decides a step's rows: the whole dedup config, the input stages' run
ids (a redone extract gets a new id, so nothing computed from the old one is reused), for an input
without a stage marker its files' names, sizes and times, and with ``dedup.state_dir`` the earlier
snapshots' manifests the state lookup reads. A changed key is a new directory.

A written step is read back from its files, which also cuts the step's lineage; the steps' inner
cuts (``spark.checkpoint_dir`` / ``localCheckpoint``, e.g. every connected-components round) are
unchanged. The stage deletes its work directory once its counts conserve, as extract does.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from fsspec.core import url_to_fs

log = logging.getLogger(__name__)

DONE = "_DONE.json"


def step_key(config: dict[str, Any], input_run_ids: dict[str, str], inputs: dict[str, str],
             state: dict[str, Any] | None = None) -> dict[str, Any]:
    """What decides every step's rows (hashed into the work directory's name by ``work_dir_for``).

    An input with no upstream stage marker has its path as its "run id" (``input_run_ids``); then its
    files' names, sizes and modification times stand in for one, so new files at the same path are
    not mistaken for the old ones."""
    files: dict[str, list] = {}
    for name, rid in input_run_ids.items():
        path = inputs.get(name)
        if path is None or rid != path:
            continue
        fs, p = url_to_fs(path)
        if fs.exists(p):
            info = fs.find(p, detail=True)
            files[name] = sorted((k.rsplit("/", 1)[-1] if "/" in k else k, v.get("size"),
                                  str(v.get("mtime") or v.get("LastModified") or v.get("updated") or ""))
                                 for k, v in info.items())
    return {"config": config, "inputs": input_run_ids, "input_files": files, "state": state}


@dataclass
class StepStore:
    """One dedup run's step checkpoints under ``root`` (None: no checkpoints, everything computed).

    ``resumed`` / ``computed`` list the steps in the order they were read or run (the stage logs them
    and puts them in its counters)."""

    spark: Any
    root: str | None
    resumed: list[str] = field(default_factory=list)
    computed: list[str] = field(default_factory=list)

    def _paths(self, step: str) -> tuple[Any, str]:
        fs, root = url_to_fs(self.root)
        return fs, f"{root.rstrip('/')}/{step}"

    def done(self, step: str) -> dict[str, Any] | None:
        """The step's done-marker, or None when it has not finished."""
        if self.root is None:
            return None
        fs, d = self._paths(step)
        if not fs.exists(f"{d}/{DONE}"):
            return None
        with fs.open(f"{d}/{DONE}", "r") as fh:
            return json.load(fh)

    def _read(self, step: str, frames: dict[str, Any]) -> dict[str, Any]:
        from pyspark.sql.types import StructType

        return {name: None if schema is None else
                self.spark.read.schema(StructType.fromJson(schema)).parquet(f"{self.root.rstrip('/')}/{step}/{name}")
                for name, schema in frames.items()}

    def run(self, step: str, compute: Callable[[], dict[str, Any]], counters: dict[str, Any]) -> dict[str, Any]:
        """``compute()``'s frames (name -> DataFrame or None), from the step's files when it finished
        before; the counters it set are restored from the marker then. Computed: each frame is written,
        then the marker, and the frames are returned as read back from the files."""
        marker = self.done(step)
        if marker is not None:
            counters.update(marker["counters"])
            self.resumed.append(step)
            log.info("dedup: step %s resumed from %s/%s", step, self.root, step)
            return self._read(step, marker["frames"])
        before = dict(counters)
        frames = compute()
        self.computed.append(step)
        if self.root is None:
            return frames
        t0 = time.time()
        fs, d = self._paths(step)
        if fs.exists(d):  # a killed attempt's partial files
            fs.rm(d, recursive=True)
        schemas: dict[str, Any] = {}
        for name, df in frames.items():
            schemas[name] = None if df is None else json.loads(df.schema.json())
            if df is not None:
                df.write.mode("overwrite").parquet(f"{self.root.rstrip('/')}/{step}/{name}")
        added = {k: v for k, v in counters.items() if k not in before or before[k] != v}
        fs.makedirs(d, exist_ok=True)  # a step whose frames are all None has only its marker
        tmp = f"{d}/.{DONE}.tmp"
        with fs.open(tmp, "w") as fh:
            json.dump({"step": step, "frames": schemas, "counters": added}, fh, sort_keys=True, default=str)
        fs.mv(tmp, f"{d}/{DONE}")
        log.debug("dedup: step %s checkpointed in %.1f s", step, time.time() - t0)
        return self._read(step, schemas)

    def remove(self) -> None:
        """Delete the work directory (after the stage's outputs are written and its counts conserve)."""
        if self.root is None:
            return
        fs, root = url_to_fs(self.root)
        if fs.exists(root):
            fs.rm(root, recursive=True)
