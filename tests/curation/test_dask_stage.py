"""curation/dask_stage.py: the base of the sharded Dask stages, on a toy stage with a counted
"model": preflight once (a loader's error as it is, or a ModelLoadError naming the stage), the
model set up once per worker, rows conserved, empty outputs filled, the work dir removed after
success (kept on request), declared resources checked against the workers and put on the tasks.
Also StageContext.run_root and write_empty_outputs (curation/stage.py)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation import dask_cluster as cluster
from curation.config import PipelineConfig
from curation.dask_stage import DaskRun, DaskStage, Resources, task_resources, worker_models
from curation.errors import ConfigError, ModelLoadError, StageError
from curation.rejects import concat_rejects, rejects_table
from curation.schemas import REJECTS
from curation.stage import StageContext, StageRunner, StageStats

ITEMS = pa.schema([pa.field("key", pa.int64())])


@dataclass(frozen=True)
class ToySpec:
    divisor: int
    fail: str | None = None  # "generic": a RuntimeError, "curate": a ConfigError


def _load(spec: ToySpec) -> dict:
    if spec.fail == "generic":
        raise RuntimeError("weights not found at /nowhere")
    if spec.fail == "curate":
        raise ConfigError("toy.model: no such model 'nope'; pass its path")
    return {"divisor": spec.divisor}


def _toy_shard(stage: "ToyStage", spec: ToySpec, shard, _payload, out) -> dict:
    model = worker_models(stage, spec)  # loaded once per worker, whatever the shard count
    t = cluster.read_shard(shard, ["key"], schema=ITEMS)
    keys = t.column("key").to_pylist()
    keep = [k for k in keys if k % model["divisor"]]
    gone = [k for k in keys if not k % model["divisor"]]
    out.write_table("kept", pa.table({"key": pa.array(keep, pa.int64())}))
    out.write_table("gone", concat_rejects([rejects_table([str(k) for k in gone], "items", "toy",
                                                             "divisible", [f"{k} % {model['divisor']} == 0" for k in gone])]))
    return {"rows": len(keys), "out": len(keep)}


def _toy_write(work_dir: str, shard, _payload, out) -> dict:
    """The second phase: the work dir's per-shard results into the stage's outputs (no model)."""
    kept = pq.read_table(f"{work_dir}/kept/{shard.id}.parquet")
    if kept.num_rows:
        out.write_table("items", kept)
    out.write_table("rejects", pq.read_table(f"{work_dir}/gone/{shard.id}.parquet"))
    return {"out": kept.num_rows}


class ToyStage(DaskStage):
    name = "toy"
    outputs = ("items",)
    output_schemas = {"items": ITEMS}
    resources = Resources(cpus=1.0)

    def __init__(self, spec: ToySpec, keep: bool = False, need: Resources | None = None):
        self.spec, self.keep, self.need = spec, keep, need

    def resources_for(self, ctx):
        return self.need or self.resources

    def keep_work(self, ctx) -> bool:
        return self.keep

    def plan(self, ctx: StageContext):
        return cluster.plan_shards(ctx.inputs["items"], 10, prefix="items-")

    def work_key(self, ctx, plan) -> dict:
        return {"spec": repr(self.spec), "inputs": ctx.input_run_ids}

    def worker_spec(self, ctx, plan, client) -> ToySpec:
        return self.spec

    def setup(self, spec: ToySpec):
        return _load(spec)

    def preflight_info(self, spec, models) -> dict:
        return {"divisor_loaded": models["divisor"]}

    def phases(self, run: DaskRun, plan) -> StageStats:
        run.map("filter", partial(_toy_shard, self, run.spec), plan)
        done = run.map("write", partial(_toy_write, run.work_dir), plan, run.ctx.stage_dir, uses_model=False)
        rows_in = sum(s.rows for s in plan)
        out = sum(d["out"] for d in done.values())
        return StageStats(stage=self.name, rows_in=rows_in, rows_out=out, rejected={"divisible": rows_in - out},
                          counters={**run.info, "work_dir": run.work_dir, "resources": run.resources})


def _input(tmp_path: Path, n: int = 35) -> str:
    src = tmp_path / "in" / "items"
    src.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"key": pa.array(range(n), pa.int64())}), src / "part-0.parquet", row_group_size=10)
    return str(src)


def _run(tmp_path: Path, stage: ToyStage, **dask) -> StageStats:
    cfg = PipelineConfig.load(overrides={"dask.processes": False, "dask.n_workers": 1, **dask})
    return StageRunner(str(tmp_path / "run"), cfg).run(stage, {"items": _input(tmp_path)})


@pytest.fixture(autouse=True)
def _fresh_cache():
    cluster.clear_setup_cache()
    yield
    cluster.clear_setup_cache()


def test_a_toy_stage_conserves_rows_loads_once_and_cleans_its_work_dir(tmp_path):
    stats = _run(tmp_path, ToyStage(ToySpec(divisor=3)))
    assert stats.conserved() and stats.rows_in == 35 and stats.rows_out == 23 and stats.rejected == {"divisible": 12}
    assert stats.counters["divisor_loaded"] == 3
    # the preflight and 4 shards on the one worker: one build
    assert cluster.SETUP_COUNTS[("dask-stage", "toy", ToySpec(3))] == 1
    run = tmp_path / "run"
    assert pq.read_table(run / "toy" / "items").num_rows == 23
    rej = pq.read_table(run / "toy" / "rejects")
    assert rej.schema.equals(REJECTS) and rej.num_rows == 12 and set(rej.column("stage").to_pylist()) == {"toy"}
    assert (run / "toy" / "_STAGE_COMPLETE").exists()
    assert not list(run.glob("_work/toy-*"))  # removed after a conserved success


def test_keep_work_keeps_the_work_dir_and_empty_outputs_are_valid_files(tmp_path):
    stats = _run(tmp_path, ToyStage(ToySpec(divisor=1), keep=True))  # everything rejected: no items file written
    assert stats.rows_out == 0 and stats.conserved()
    items = tmp_path / "run" / "toy" / "items"
    assert [p.name for p in items.iterdir()] == ["empty.parquet"]
    assert pq.read_table(items).schema.equals(ITEMS)
    assert list((tmp_path / "run").glob("_work/toy-*"))


def test_preflight_fails_once_with_the_loader_message(tmp_path):
    with pytest.raises(ModelLoadError, match=r"toy: loading its models on a worker failed: RuntimeError: weights not found"):
        _run(tmp_path, ToyStage(ToySpec(divisor=3, fail="generic")))
    with pytest.raises(ConfigError, match="pass its path"):  # a CurateError is reported as the loader raised it
        _run(tmp_path, ToyStage(ToySpec(divisor=3, fail="curate")))
    run = tmp_path / "run"
    assert not list(run.glob("_work/toy-*/_done/*")) and not (run / "toy" / "_STAGE_COMPLETE").exists()


class _FakeClient:
    def __init__(self, workers: dict):
        self.workers = workers

    def scheduler_info(self, n_workers: int = 5):
        return {"workers": self.workers}


def test_resources_become_dask_resources_checked_against_the_workers():
    assert Resources(cpus=2, gpus=0.5, memory_gb=1).dask() == {"CPU": 2.0, "GPU": 0.5, "MEMORY": float(2 ** 30)}
    assert Resources(cpus=0).dask() == {}
    with pytest.raises(ValueError):
        Resources(gpus=-1)
    undeclared = _FakeClient({"w1": {"resources": {}, "memory_limit": 0}})
    assert task_resources(undeclared, Resources(gpus=1), "s") is None  # not enforced: would wait forever
    gpu = _FakeClient({"w1": {"resources": {"GPU": 1}}, "w2": {"resources": {}}})
    assert task_resources(gpu, Resources(cpus=1, gpus=1), "s") == {"GPU": 1.0}  # CPU undeclared: left out
    with pytest.raises(StageError, match=r"needs \{'GPU': 2.0\} but no worker has that much"):
        task_resources(gpu, Resources(gpus=2), "s")
    assert task_resources(None, Resources(gpus=1), "s") is None


def test_declared_resources_go_on_the_tasks_of_a_cluster_that_declares_them(tmp_path):
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, processes=False, dashboard_address=None, resources={"GPU": 1}) as lc:
        stats = _run(tmp_path, ToyStage(ToySpec(divisor=3), need=Resources(cpus=1, gpus=1)),
                     **{"dask.scheduler": lc.scheduler_address})
        assert stats.counters["resources"] == {"GPU": 1.0} and stats.rows_out == 23
        with pytest.raises(StageError, match="no worker has that much"):
            _run(tmp_path / "again", ToyStage(ToySpec(divisor=3), need=Resources(gpus=2)),
                 **{"dask.scheduler": lc.scheduler_address})


def test_stage_context_run_root_and_empty_outputs(tmp_path):
    cfg = PipelineConfig.load(overrides={})
    ctx = StageContext(stage_dir=f"{tmp_path}/run/capfilt/", inputs={}, config=cfg, run_id="r")
    assert ctx.run_root == f"{tmp_path}/run"
    assert StageContext(stage_dir="capfilt", inputs={}, config=cfg, run_id="r").run_root == "."
    (tmp_path / "run" / "capfilt" / "pairs").mkdir(parents=True)
    pq.write_table(ITEMS.empty_table(), tmp_path / "run" / "capfilt" / "pairs" / "p-0.parquet")
    filled = ctx.write_empty_outputs({"pairs": ITEMS, "rejects": REJECTS})
    assert filled == ["rejects"]  # a dataset with a file is left alone
    assert pq.read_table(tmp_path / "run" / "capfilt" / "rejects").schema.equals(REJECTS)
