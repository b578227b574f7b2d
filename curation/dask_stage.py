"""One base for the sharded Dask stages (capfilt today; score next): :class:`DaskStage`.

Every Dask stage did the same five things around its own phases: plan its shards, open the
client (:func:`curation.dask_cluster.dask_client`), load its model on one worker before
scheduling any shard (so a missing checkpoint fails once, with the model's hint, not once per
shard), run its phases with :func:`curation.dask_cluster.run_shards` under a work directory
keyed by everything that decides the result (:func:`curation.dask_cluster.work_dir_for`), then
fill empty outputs and delete the work directory after a conserved success. Here those live
once; a stage writes only what is its own, the way NeMo Curator's ``ProcessingStage`` gives a
stage ``setup()`` and ``resources`` and leaves the scheduling to the executor:

- :meth:`DaskStage.plan` (client-free: inputs, models resolved, shards) and
  :meth:`DaskStage.work_key` (what decides the per-shard work);
- :meth:`DaskStage.worker_spec`: the picklable settings a worker needs;
- :meth:`DaskStage.setup`: runs on a worker, returns its models; the base runs it once on one
  worker as the preflight, and tasks get them through :func:`worker_models` (built once per
  worker process by ``setup_once``); ``setup_every_worker`` also loads them on every worker up
  front (a :class:`SetupPlugin`, rerun on a worker its nanny restarted);
- :attr:`DaskStage.resources` (:class:`Resources`: CPUs, GPUs, memory per task) become Dask
  worker resources on the model phases' tasks, so on a cluster whose workers declare
  ``--resources "GPU=1 MEMORY=16e9"`` a GPU stage's shards go only to GPU workers;
- :meth:`DaskStage.phases` gets a :class:`DaskRun` (client, work dir, spec, preflight info and
  ``run.map(phase, fn, shards)``) and returns the stats.
"""
from __future__ import annotations

import contextlib
import logging
from abc import abstractmethod
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import pyarrow as pa
from fsspec.core import url_to_fs

from curation import dask_cluster as cluster
from curation.errors import CurateError, ModelLoadError, StageError
from curation.schemas import REJECTS
from curation.stage import REJECTS_DIR, Stage, StageContext, StageStats

log = logging.getLogger(__name__)

GIB = 2 ** 30


@dataclass(frozen=True)
class Resources:
    """What one task of a stage's model phases needs (NeMo Curator's ``Resources``): CPU cores,
    GPUs (a fraction shares one) and memory in GiB. 0 = not asked for."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_gb: float = 0.0

    def __post_init__(self) -> None:
        if min(self.cpus, self.gpus, self.memory_gb) < 0:
            raise ValueError(f"resources must be >= 0, got {self}")

    def dask(self) -> dict[str, float]:
        """As Dask worker resources (the names a worker declares with ``--resources``)."""
        named = {"CPU": self.cpus, "GPU": self.gpus, "MEMORY": self.memory_gb * GIB}
        return {k: float(v) for k, v in named.items() if v > 0}


def task_resources(client: Any, need: Resources, stage: str) -> dict[str, float] | None:
    """The Dask resources to put on a stage's tasks, checked against the workers.

    Only names some worker declares are asked for: a constraint no worker declares would leave
    every task waiting forever (a ``LocalCluster`` declares none), so it is logged as not
    enforced instead. When the workers declare a name but none has enough of everything the
    stage asks for, the stage fails now, naming the shortfall, rather than hanging. Memory asked
    for beyond every worker's ``memory_limit`` is a warning (Dask would spill, then kill).
    """
    if client is None:
        return None
    info = client.scheduler_info(n_workers=-1)["workers"] if cluster._takes_n_workers(client) \
        else client.scheduler_info()["workers"]  # noqa: SLF001 - the same version probe as dask_cluster
    wanted = need.dask()
    declared: set[str] = set()
    for w in info.values():
        declared.update((w.get("resources") or {}).keys())
    asked = {k: v for k, v in wanted.items() if k in declared}
    ignored = sorted(set(wanted) - declared)
    if ignored:
        log.info("%s: resources %s not enforced: no worker declares them (start workers with --resources)",
                 stage, {k: wanted[k] for k in ignored})
    if asked and not any(all((w.get("resources") or {}).get(k, 0) >= v for k, v in asked.items())
                         for w in info.values()):
        have = {a: w.get("resources") for a, w in info.items()}
        raise StageError(f"{stage}: each task needs {asked} but no worker has that much (workers declare {have}); "
                         f"add such workers or lower the stage's resources")
    limits = [w.get("memory_limit") or 0 for w in info.values()]
    if need.memory_gb and limits and all(0 < m < need.memory_gb * GIB for m in limits):
        log.warning("%s: a task needs about %.1f GiB but every worker's memory limit is below it (%s GiB)",
                    stage, need.memory_gb, sorted({round(m / GIB, 1) for m in limits}))
    return asked or None


@dataclass
class DaskRun:
    """One run of a sharded Dask stage, as its phases see it."""

    stage: str
    ctx: StageContext
    client: Any
    work_dir: str
    spec: Any
    info: dict
    resources: dict[str, float] | None = None

    def map(self, phase: str, fn, shards: Sequence[Any], out_dir: str | None = None,
            payloads: dict[str, Any] | None = None, uses_model: bool = True) -> dict[str, dict]:
        """``fn(shard, payload, out)`` on every unfinished shard (:func:`curation.dask_cluster.run_shards`),
        outputs under ``out_dir`` (default the work dir); the stage's resources go on the tasks of
        phases that run its model (``uses_model``), not on reshuffles and writes."""
        return cluster.run_shards(self.client, fn, shards, out_dir or self.work_dir, payloads,
                                  desc=f"{self.stage}:{phase}", resources=self.resources if uses_model else None)


def worker_models(stage: "DaskStage", spec: Any) -> Any:
    """The stage's models on this worker, built once per process (``setup_once``)."""
    return cluster.setup_once(("dask-stage", stage.name, spec), partial(stage.setup, spec))


def _preflight_on_worker(stage: "DaskStage", spec: Any) -> dict:
    return stage.preflight_info(spec, worker_models(stage, spec))


class DaskStage(Stage):
    """A stage whose work is Dask tasks over shards; subclasses implement the abstract methods."""

    # Per task of a model phase; a subclass may depend on its config through resources_for().
    resources: ClassVar[Resources] = Resources()
    # Datasets written under the stage dir (name -> schema); ``rejects`` is added. Each gets an
    # empty file when no shard wrote one.
    output_schemas: ClassVar[dict[str, pa.Schema]] = {}
    # Also load the models on every worker when the stage starts (a SetupPlugin, rerun on a
    # restarted worker). Off by default: with it, tests/pipelines/test_dask_capfilt.py's
    # killed-worker test (2 process workers, one SIGKILLed) stalled after the preflight (not yet
    # explained); tasks load lazily, once per worker, through worker_models()/setup_once anyway.
    setup_every_worker: ClassVar[bool] = False

    # ------------------------------------------------------------------ what a stage writes

    @abstractmethod
    def plan(self, ctx: StageContext) -> Any:
        """Everything decided before the client opens: inputs checked, models resolved, shards planned."""

    @abstractmethod
    def work_key(self, ctx: StageContext, plan: Any) -> dict[str, Any]:
        """What decides the per-shard work (config, models, ``ctx.input_run_ids``): the work dir's key."""

    @abstractmethod
    def worker_spec(self, ctx: StageContext, plan: Any, client: Any) -> Hashable:
        """The picklable, hashable settings a worker needs (models, thresholds, device, threads)."""

    @abstractmethod
    def setup(self, spec: Any) -> Any:
        """Runs on a worker: load the models ``spec`` names and return them (cached per worker by the base)."""

    def preflight_info(self, spec: Any, models: Any) -> dict:
        """What the preflight reports to the client about the loaded models (counters)."""
        return {}

    @abstractmethod
    def phases(self, run: DaskRun, plan: Any) -> StageStats:
        """The stage's phases (``run.map(...)`` each) and its stats."""

    def resources_for(self, ctx: StageContext) -> Resources:
        return self.resources

    def keep_work(self, ctx: StageContext) -> bool:
        """Whether to keep the work dir after success (the stage's ``keep_work`` setting)."""
        return bool(getattr(getattr(ctx.config, self.name, None), "keep_work", False))

    # ------------------------------------------------------------------ the run, once for all

    def run(self, ctx: StageContext) -> StageStats:
        plan = self.plan(ctx)
        work_dir = cluster.work_dir_for(ctx.run_root, self.name, self.work_key(ctx, plan))
        log.info("%s: work dir %s", self.name, work_dir)
        with cluster.dask_client(ctx.config.dask) as client:
            resources = task_resources(client, self.resources_for(ctx), self.name)
            spec = self.worker_spec(ctx, plan, client)
            info = self.preflight(client, spec, resources)
            with self._setup_workers(client, spec):
                stats = self.phases(DaskRun(self.name, ctx, client, work_dir, spec, info, resources), plan)
        ctx.write_empty_outputs({**self.output_schemas, REJECTS_DIR: REJECTS})
        self.clean_work(work_dir, stats, self.keep_work(ctx))
        return stats

    def preflight(self, client: Any, spec: Any, resources: dict[str, float] | None = None) -> dict:
        """Load the models on one worker before any shard is scheduled: a missing checkpoint or an
        offline hub id fails here, once, with the loader's message (a :class:`CurateError` as
        raised; anything else as a :class:`ModelLoadError` naming the stage)."""
        try:
            if client is None:
                return _preflight_on_worker(self, spec)
            return client.submit(_preflight_on_worker, self, spec, pure=False, resources=resources).result()
        except CurateError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported as one line, the cause kept
            raise ModelLoadError(f"{self.name}: loading its models on a worker failed: {type(exc).__name__}: {exc}") from exc

    @contextlib.contextmanager
    def _setup_workers(self, client: Any, spec: Any) -> Iterator[None]:
        """The models on every worker (and on any worker started while the stage runs), removed from
        the cluster afterwards so a shared scheduler's later workers do not load them."""
        if client is None or not self.setup_every_worker:
            yield
            return
        plugin = cluster.SetupPlugin(("dask-stage", self.name, spec), partial(worker_models, self, spec))
        try:
            client.register_plugin(plugin)
        except Exception as exc:  # noqa: BLE001 - tasks still load lazily (setup_once)
            log.warning("%s: could not set up every worker up front (%s); each loads on its first task", self.name, exc)
            plugin = None
        try:
            yield
        finally:
            if plugin is not None:
                with contextlib.suppress(Exception):
                    client.unregister_worker_plugin(plugin.name)

    @staticmethod
    def clean_work(work_dir: str, stats: StageStats, keep: bool) -> bool:
        """Delete the work dir after a conserved success (kept when asked, or when rows went missing:
        the runner then fails the stage and a rerun resumes from it). Returns whether it was deleted."""
        if keep or not stats.conserved():
            return False
        fs, p = url_to_fs(work_dir)
        if fs.exists(p):
            fs.rm(p, recursive=True)
            return True
        return False
