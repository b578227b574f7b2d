"""The Dask machinery every model stage shares (score, capfilt): one client, models set up once
per worker, and a per-shard task runner whose outputs are atomic and resumable.

- :func:`dask_client` gives the one :class:`distributed.Client`: a ``LocalCluster`` by default
  (one worker per GPU when CUDA is present, else CPU workers, processes by default) or the
  existing cluster at ``DaskConfig.scheduler``. Never a home-made scheduler.
- :func:`setup_once` is the worker-side "load the model once" cache, keyed by a hashable model
  spec; it works the same in a Dask worker process, a threaded worker or plain Python.
  :class:`SetupPlugin` warms it when a worker starts (and when a killed worker is restarted).
- :func:`run_shards` runs ``fn(shard, payload, out)`` once per :class:`Shard`. ``out``
  (:class:`ShardOutput`) writes every file to a temporary name and renames it into place, and
  the runner writes the shard's done-marker (its summary JSON) last. A finished shard is
  skipped on rerun; a shard whose worker died is recomputed by Dask (the scheduler reschedules
  it) and rewrites the same deterministic file names, so nothing is lost or duplicated and a
  half-written file is never read. Progress is a tqdm bar over completed shards.
- :func:`plan_shards` / :func:`read_shard` split a Parquet dataset into row-group-aligned shards
  with stable ids and global row offsets.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import uuid
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from curation.config import DaskConfig

log = logging.getLogger(__name__)
T = TypeVar("T")

DONE_DIR = "_done"


# --------------------------------------------------------------------------- the client


def gpu_count() -> int:
    """CUDA devices visible to this process (0 without torch or CUDA)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - models extra not installed
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def local_cluster_shape(cfg: DaskConfig) -> dict[str, Any]:
    """``LocalCluster`` arguments for this machine: one worker per GPU, else one per 8 cores.

    On CPU each worker's torch uses ``cores / workers`` threads (see :func:`torch_threads`), so
    a few large workers beat many small ones (fewer model copies, same arithmetic).
    """
    gpus = gpu_count()
    cores = os.cpu_count() or 1
    n = cfg.n_workers or (gpus if gpus else max(1, cores // 8))
    return {
        "n_workers": n,
        "threads_per_worker": cfg.threads_per_worker,
        "processes": cfg.processes,
        "memory_limit": cfg.memory_limit,
        "kind": "gpu" if gpus else "cpu",
    }


@contextlib.contextmanager
def dask_client(cfg: DaskConfig) -> Iterator[Any]:
    """The Dask client of a stage: ``cfg.scheduler`` when set, else a ``LocalCluster`` closed on exit."""
    from distributed import Client, LocalCluster

    if cfg.scheduler:
        from curation.preflight import check_dask_scheduler

        check_dask_scheduler(cfg.scheduler)  # a closed port: one-line ConfigError in 3 s, not a 30 s timeout
        log.info("dask: connecting to %s", cfg.scheduler)
        client = Client(cfg.scheduler)
        try:
            yield client
        finally:
            client.close()
        return
    shape = local_cluster_shape(cfg)
    kind = shape.pop("kind")
    log.info("dask: LocalCluster of %d %s worker(s), %s", shape["n_workers"], kind,
             "processes" if shape["processes"] else "threads")
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger("distributed").setLevel(logging.WARNING)  # the scheduler runs in this process
    cluster = LocalCluster(silence_logs=logging.WARNING, **shape)
    client = Client(cluster)
    log.info("dask: dashboard at %s", client.dashboard_link)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def worker_index() -> int:
    """This worker's position (LocalCluster names workers 0..n-1); 0 outside a worker."""
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):
        return 0
    try:
        return int(name)
    except (TypeError, ValueError):
        return int(hashlib.sha1(str(name).encode()).hexdigest(), 16) % 1024


def worker_device(requested: str = "auto") -> str:
    """The torch device this worker should use.

    ``auto``: ``cuda:<i>`` when CUDA is present (``i`` = worker index modulo the visible GPUs,
    so a LocalCluster with one worker per GPU spreads over them; under dask-cuda each worker sees
    one GPU and gets ``cuda:0``), else ``cpu``. ``cuda`` is spread the same way; ``cuda:N`` and
    ``cpu`` are taken as given.
    """
    if requested in ("auto", "cuda"):
        gpus = gpu_count()
        if gpus:
            return f"cuda:{worker_index() % gpus}"
        if requested == "cuda":
            raise RuntimeError("device 'cuda' requested but CUDA is not available on this worker")
        return "cpu"
    return requested


def cpu_threads_per_worker(client: Any) -> int:
    """Torch intra-op threads for each CPU worker: a host's cores divided among its workers.

    Dask's nanny starts workers with ``OMP_NUM_THREADS=1``, so without this torch would use one
    core per worker. ``client=None`` (inline) or a threaded LocalCluster: all cores of this host.
    """
    if client is None:
        return os.cpu_count() or 1
    info = client.scheduler_info(n_workers=-1)["workers"] if _takes_n_workers(client) else client.scheduler_info()["workers"]
    if not info:
        return os.cpu_count() or 1
    per_host: dict[str, int] = {}
    for w in info.values():
        per_host[w["host"]] = per_host.get(w["host"], 0) + 1
    cores = client.run(os.cpu_count)
    same_process = all(a.startswith("inproc://") for a in info)
    threads = [
        max(1, (cores.get(addr) or 1) // (1 if same_process else per_host[w["host"]])) for addr, w in info.items()
    ]
    return min(threads)


def _takes_n_workers(client: Any) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


# --------------------------------------------------------------------------- setup once per worker

_CACHE: dict[Hashable, Any] = {}
_CACHE_LOCK = threading.Lock()
_KEY_LOCKS: dict[Hashable, threading.Lock] = {}
SETUP_COUNTS: dict[Hashable, int] = {}


def setup_once(key: Hashable, factory: Callable[[], T]) -> T:
    """The process-wide object for ``key``, built by ``factory()`` the first time (thread-safe).

    ``key`` is the model spec (name, weights, device, ...): a worker that serves two specs keeps
    both; a threaded worker's tasks share one instance. ``SETUP_COUNTS`` records each build.
    """
    try:
        return _CACHE[key]
    except KeyError:
        pass
    with _CACHE_LOCK:
        lock = _KEY_LOCKS.setdefault(key, threading.Lock())
    with lock:
        if key not in _CACHE:
            _CACHE[key] = factory()
            SETUP_COUNTS[key] = SETUP_COUNTS.get(key, 0) + 1
        return _CACHE[key]


def clear_setup_cache() -> None:
    """Forget every cached object (tests)."""
    with _CACHE_LOCK:
        _CACHE.clear()
        SETUP_COUNTS.clear()


try:
    from distributed.diagnostics.plugin import WorkerPlugin as _WorkerPluginBase
except ImportError:  # pragma: no cover - dask not installed
    _WorkerPluginBase = object


class SetupPlugin(_WorkerPluginBase):
    """Build ``setup_once(key, factory)`` when a worker starts: ``client.register_plugin(SetupPlugin(...))``.

    A worker restarted by its nanny after a crash runs it again, so the first task after the
    restart does not pay the model load. ``factory`` must be picklable (a module-level function
    or a ``functools.partial`` of one).
    """

    def __init__(self, key: Hashable, factory: Callable[[], Any], name: str | None = None):
        self.key = key
        self.factory = factory
        self.name = name or f"setup-{hashlib.sha1(repr(key).encode()).hexdigest()[:12]}"

    def setup(self, worker=None) -> None:
        setup_once(self.key, self.factory)


# --------------------------------------------------------------------------- shards


@dataclass(frozen=True)
class Shard:
    """Rows ``[offset, offset + rows)`` of a dataset: row groups ``row_groups`` of file ``path``."""

    id: str
    path: str
    row_groups: tuple[int, ...]
    rows: int
    offset: int


def list_parquet_files(path: str) -> list[str]:
    """Parquet files of a dataset directory (or the file itself), sorted; ``_``/``.`` names skipped."""
    fs, p = url_to_fs(path)
    if not fs.exists(p):
        return []
    if fs.isfile(p):
        return [path]
    files = [f for f in fs.find(p) if f.endswith(".parquet")]
    files = [f for f in files if not any(part.startswith(("_", ".")) for part in f[len(p):].split("/") if part)]
    protocol = path.split("://", 1)[0] + "://" if "://" in path else ""
    return sorted(protocol + f if protocol and not f.startswith(protocol) else f for f in files)


def plan_shards(path: str, max_rows: int, prefix: str = "") -> list[Shard]:
    """Split a Parquet dataset into shards of whole row groups, at most ``max_rows`` rows each
    (a bigger row group is a shard of its own). Ids are stable across runs: ``<file stem>-<first
    row group>``, made unique when two files share a stem; offsets number rows across the dataset.
    """
    shards: list[Shard] = []
    offset = 0
    seen: set[str] = set()
    for file in list_parquet_files(path):
        fs, p = url_to_fs(file)
        with fs.open(p, "rb") as fh:
            meta = pq.ParquetFile(fh).metadata
        stem = file.rsplit("/", 1)[-1].removesuffix(".parquet")
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)
        if stem in seen:
            stem = f"{stem}_{hashlib.sha1(file.encode()).hexdigest()[:8]}"
        seen.add(stem)
        group: list[int] = []
        rows = 0
        for rg in range(meta.num_row_groups):
            n = meta.row_group(rg).num_rows
            if group and rows + n > max_rows:
                shards.append(Shard(f"{prefix}{stem}-{group[0]:05d}", file, tuple(group), rows, offset))
                offset += rows
                group, rows = [], 0
            group.append(rg)
            rows += n
        if group or meta.num_row_groups == 0:
            shards.append(Shard(f"{prefix}{stem}-{group[0] if group else 0:05d}", file, tuple(group), rows, offset))
            offset += rows
    return shards


def read_shard(shard: Shard, columns: Sequence[str] | None = None, schema: pa.Schema | None = None) -> pa.Table:
    """The shard's rows (``columns`` only, when given), cast to ``schema``'s types when given."""
    fs, p = url_to_fs(shard.path)
    with fs.open(p, "rb") as fh:
        pf = pq.ParquetFile(fh)
        cols = list(columns) if columns is not None else None
        if cols is not None:
            present = set(pf.schema_arrow.names)
            cols = [c for c in cols if c in present]
        table = pf.read_row_groups(list(shard.row_groups), columns=cols) if shard.row_groups else \
            pf.schema_arrow.empty_table().select(cols) if cols is not None else pf.schema_arrow.empty_table()
    if schema is not None:
        wanted = [schema.field(n) for n in (columns or schema.names)]
        arrays = [table.column(f.name).cast(f.type) if f.name in table.column_names
                  else pa.nulls(table.num_rows, f.type) for f in wanted]
        table = pa.Table.from_arrays(arrays, schema=pa.schema(wanted))
    return table


class ShardOutput:
    """Where one shard's task writes: ``<root>/<name>/<shard id><suffix>``, each file atomically.

    Every file goes to a unique temporary name in the same directory and is renamed into place,
    so a reader (or a rerun) never sees half a file; the names are deterministic, so a recomputed
    shard overwrites its own earlier files instead of adding rows.
    """

    def __init__(self, root: str, shard_id: str):
        self.root = root.rstrip("/")
        self.shard_id = shard_id
        self.fs, self._root_path = url_to_fs(self.root)
        self.written: list[str] = []

    def path(self, name: str, suffix: str) -> str:
        return f"{self.root}/{name}/{self.shard_id}{suffix}"

    @contextlib.contextmanager
    def _atomic(self, name: str, suffix: str) -> Iterator[Any]:
        final = self.path(name, suffix)
        _, final_path = url_to_fs(final)
        directory = final_path.rsplit("/", 1)[0]
        self.fs.makedirs(directory, exist_ok=True)
        tmp = f"{directory}/.tmp-{self.shard_id}{suffix}-{uuid.uuid4().hex[:8]}"
        try:
            with self.fs.open(tmp, "wb") as fh:
                yield fh
            self.fs.mv(tmp, final_path)
        finally:
            if self.fs.exists(tmp):
                self.fs.rm(tmp)
        self.written.append(final)

    def write_table(self, name: str, table: pa.Table) -> str:
        with self._atomic(name, ".parquet") as fh:
            pq.write_table(table, fh)
        return self.path(name, ".parquet")

    def write_grouped(self, name: str, table: pa.Table, groups, schema: pa.Schema):
        """``table`` (rows already sorted by ``groups``, an int array) as one row group per group,
        so a later task reads only its groups' rows; returns (groups present, rows per group)."""
        import numpy as np

        present, starts, counts = np.unique(np.asarray(groups), return_index=True, return_counts=True)
        with self._atomic(name, ".parquet") as fh:
            with pq.ParquetWriter(fh, schema) as w:
                for st, c in zip(starts.tolist(), counts.tolist()):
                    w.write_table(table.slice(st, c))
                if not present.size:
                    w.write_table(schema.empty_table())
        return present, counts

    def write_array(self, name: str, array, suffix: str = ".npy") -> str:
        import numpy as np

        with self._atomic(name, suffix) as fh:
            np.save(fh, array, allow_pickle=False)
        return self.path(name, suffix)

    def write_json(self, name: str, obj: Any) -> str:
        with self._atomic(name, ".json") as fh:
            fh.write(json.dumps(obj, sort_keys=True, default=str).encode())
        return self.path(name, ".json")


def _done_path(work_dir: str, shard_id: str) -> str:
    return f"{work_dir.rstrip('/')}/{DONE_DIR}/{shard_id}.json"


def read_done(work_dir: str, shard_id: str) -> dict | None:
    """A finished shard's summary, or None when it has not finished."""
    fs, p = url_to_fs(_done_path(work_dir, shard_id))
    if not fs.exists(p):
        return None
    with fs.open(p, "r") as fh:
        return json.load(fh)


def run_task(work_dir: str, task_id: str, fn: Callable[[ShardOutput], dict], meta: dict | None = None) -> dict:
    """One resumable unit of work, whoever runs it (a Dask task, a Spark task, this process): its
    done-marker when it finished before, else ``fn(out)`` writing through ``out``, then the marker
    (``fn``'s summary, ``meta``, the files written) last, so a marker always means whole outputs."""
    done = read_done(work_dir, task_id)
    if done is not None:
        return done
    out = ShardOutput(work_dir, task_id)
    summary = dict(fn(out) or {})
    summary.update(meta or {})
    summary["_files"] = list(out.written)
    ShardOutput(work_dir, task_id).write_json(DONE_DIR, summary)
    return summary


def _run_one(fn: Callable[[Shard, Any, ShardOutput], dict], shard: Shard, payload: Any, work_dir: str) -> dict:
    """The task a worker runs: skip when done, else compute, write the outputs, then the marker."""
    return run_task(work_dir, shard.id, lambda out: fn(shard, payload, out), {"_shard": asdict(shard)})


def run_shards(
    client: Any,
    fn: Callable[[Shard, Any, ShardOutput], dict],
    shards: Sequence[Shard],
    work_dir: str,
    payloads: dict[str, Any] | None = None,
    desc: str = "shards",
    progress: bool = True,
    resources: dict[str, float] | None = None,
) -> dict[str, dict]:
    """Run ``fn(shard, payload, out)`` for every shard not finished yet; return ``{shard id: summary}``.

    ``fn`` must be picklable (module level) and write only through ``out``; it returns a small
    JSON-able summary (row counts, ...), stored as the shard's done-marker under
    ``<work_dir>/_done/``. ``client=None`` runs the shards here, one after another (debugging,
    tiny inputs). A worker that dies mid-shard leaves no marker: Dask reschedules the task on
    another worker (up to ``distributed.scheduler.allowed-failures`` deaths); an exception in
    ``fn`` fails the run with that exception after the other shards finish.
    """
    from tqdm.auto import tqdm

    payloads = payloads or {}
    ids = [s.id for s in shards]
    if len(set(ids)) != len(ids):
        raise ValueError("shard ids must be unique")
    results: dict[str, dict] = {}
    todo: list[Shard] = []
    for s in shards:
        done = read_done(work_dir, s.id)
        if done is not None:
            results[s.id] = dict(done, _resumed=True)
        else:
            todo.append(s)
    if results:
        log.info("%s: %d of %d shards already finished, skipping them", desc, len(results), len(shards))
    bar = tqdm(total=len(shards), initial=len(results), desc=desc, unit="shard", disable=not progress, leave=False)
    errors: list[tuple[str, BaseException]] = []
    try:
        if client is None:
            for s in todo:
                results[s.id] = _run_one(fn, s, payloads.get(s.id), work_dir)
                bar.update(1)
        elif todo:
            from distributed import as_completed

            token = uuid.uuid4().hex[:8]
            futures = {
                client.submit(_run_one, fn, s, payloads.get(s.id), work_dir, key=f"{desc}-{s.id}-{token}",
                              pure=False, resources=resources): s.id
                for s in todo
            }
            resubmits: dict[str, int] = {}
            pending = as_completed(futures)
            for fut in pending:
                sid = futures[fut]
                try:
                    results[sid] = fut.result()
                except Exception as exc:  # noqa: BLE001 - reported after the others finish
                    retry = _recover(fut, exc, sid, work_dir, resubmits, desc)
                    if isinstance(retry, dict):
                        results[sid] = retry
                    elif retry:
                        shard = next(s for s in todo if s.id == sid)
                        new = client.submit(_run_one, fn, shard, payloads.get(sid), work_dir,
                                            key=f"{desc}-{sid}-{token}-r{resubmits[sid]}", pure=False,
                                            resources=resources)
                        futures[new] = sid
                        pending.add(new)
                        continue
                    else:
                        errors.append((sid, exc))
                        log.error("%s: shard %s failed: %s", desc, sid, exc)
                bar.update(1)
    finally:
        bar.close()
    _remove_stale_tmp(work_dir)
    if errors:
        sid, exc = errors[0]
        raise RuntimeError(f"{desc}: {len(errors)} shard(s) failed, first {sid}: {exc}") from exc
    log.info("%s: %d shards done (%d computed now)", desc, len(shards), len(todo))
    return {s.id: results[s.id] for s in shards}


_MAX_RESUBMITS = 2


def _recover(fut: Any, exc: BaseException, sid: str, work_dir: str, resubmits: dict[str, int],
             desc: str) -> dict | bool:
    """What to do when a shard's future raised: its done-marker, ``True`` to resubmit, ``False`` to fail.

    The done-marker, not the future, is the record of a finished shard: when a worker dies
    after a task finished, distributed may fail the client's gather (seen: "Couldn't gather
    keys", then an asyncio event "bound to a different event loop") although the shard's outputs
    and marker are on disk. A marker means done. Without one, a future whose task itself raised
    (status ``error``) is a real failure; anything else (lost key, cancelled, communication) is
    the cluster's and the shard is resubmitted, at most ``_MAX_RESUBMITS`` times.
    """
    done = read_done(work_dir, sid)
    if done is not None:
        log.warning("%s: shard %s finished but its result was lost (%s); using its done-marker", desc, sid, exc)
        return done
    if getattr(fut, "status", "error") == "error" or resubmits.get(sid, 0) >= _MAX_RESUBMITS:
        return False
    resubmits[sid] = resubmits.get(sid, 0) + 1
    log.warning("%s: shard %s lost by the cluster (%s); resubmitting (%d)", desc, sid, exc, resubmits[sid])
    return True


def _remove_stale_tmp(root: str) -> None:
    """Delete temporary files a killed task left behind (run once no task of this run is live)."""
    fs, p = url_to_fs(root)
    if not fs.exists(p):
        return
    stale = [f for f in fs.find(p) if f.rsplit("/", 1)[-1].startswith(".tmp-")]
    for f in stale:
        fs.rm(f)
    if stale:
        log.info("removed %d temporary file(s) left by killed tasks under %s", len(stale), root)


def work_dir_for(out_root: str, stage: str, fingerprint: dict[str, Any]) -> str:
    """``<out_root>/_work/<stage>-<hash>``: per-shard intermediates that survive a crashed stage.

    The stage runner deletes a stage directory without a completion marker, so work that must
    survive a crash (and be skipped on rerun) lives here, keyed by everything that decides it
    (config and the run ids of the inputs): a changed threshold or redone upstream gets a new dir.
    """
    blob = json.dumps(fingerprint, sort_keys=True, default=str).encode()
    return f"{out_root.rstrip('/')}/_work/{stage}-{hashlib.sha256(blob).hexdigest()[:16]}"
