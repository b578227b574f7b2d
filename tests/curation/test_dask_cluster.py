"""Dask machinery shared by score and capfilt: shards, atomic outputs, resume, killed workers."""
from __future__ import annotations

import json
import os
import signal
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.config import DaskConfig
from curation.dask_cluster import (
    SETUP_COUNTS,
    SetupPlugin,
    ShardOutput,
    clear_setup_cache,
    dask_client,
    local_cluster_shape,
    plan_shards,
    read_done,
    read_shard,
    run_shards,
    setup_once,
    work_dir_for,
    worker_device,
)


def write_dataset(root: Path, n_files: int = 2, rows: int = 25, row_group_size: int = 5) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for f in range(n_files):
        t = pa.table({"id": [f"f{f}-r{i}" for i in range(rows)], "x": np.arange(rows, dtype=np.int64) + 1000 * f})
        pq.write_table(t, root / f"part-{f:05d}.parquet", row_group_size=row_group_size)
    (root / "_SUCCESS").write_text("")
    pq.write_table(pa.table({"id": ["hidden"]}), root / "_hidden.parquet")
    return root


def copy_rows(shard, payload, out):
    """A shard task: copy the shard's rows (plus the payload) to out/rows/<shard>.parquet."""
    t = read_shard(shard)
    if payload is not None:
        t = t.append_column("tag", pa.array([payload] * t.num_rows, pa.string()))
    out.write_table("rows", t)
    out.write_array("arr", t.column("x").to_numpy())
    return {"rows": t.num_rows}


def die_once_midway(flag_dir: str, victim: str, shard, payload, out):
    """Like copy_rows, but the first attempt at ``victim`` writes half its output and kills its process."""
    t = read_shard(shard)
    flag = Path(flag_dir) / f"{shard.id}.attempted"
    if shard.id == victim and not flag.exists():
        flag.write_text(str(os.getpid()))
        # Half a file under its temporary name, as a write in progress would leave it.
        tmp = Path(out.path("rows", ".parquet")).parent
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / f".tmp-{shard.id}.parquet-dead").write_bytes(b"PAR1 half")
        os.kill(os.getpid(), signal.SIGKILL)
    out.write_table("rows", t)
    return {"rows": t.num_rows, "pid": os.getpid()}


def fail_on(victim: str, shard, payload, out):
    if shard.id == victim:
        raise ValueError("boom")
    return copy_rows(shard, payload, out)


def all_rows(work: Path) -> list[str]:
    return pq.read_table(work / "rows").column("id").to_pylist()


# ------------------------------------------------------------------------- shards


def test_plan_shards_row_groups_offsets_and_stable_ids(tmp_path):
    ds = write_dataset(tmp_path / "ds")
    shards = plan_shards(str(ds), max_rows=10, prefix="p-")
    assert [s.rows for s in shards] == [10, 10, 5, 10, 10, 5]
    assert [s.offset for s in shards] == [0, 10, 20, 25, 35, 45]
    assert [s.id for s in shards][:3] == ["p-part-00000-00000", "p-part-00000-00002", "p-part-00000-00004"]
    assert plan_shards(str(ds), max_rows=10, prefix="p-") == shards  # stable
    ids = [i for s in shards for i in read_shard(s).column("id").to_pylist()]
    assert ids == [f"f{f}-r{i}" for f in range(2) for i in range(25)]  # every row once, hidden file skipped
    # A row group bigger than max_rows is a shard of its own.
    assert [s.rows for s in plan_shards(str(ds), max_rows=3)] == [5] * 10
    assert plan_shards(str(tmp_path / "missing"), 10) == []


def test_read_shard_casts_and_fills_missing_columns(tmp_path):
    ds = write_dataset(tmp_path / "ds", n_files=1)
    shard = plan_shards(str(ds), 100)[0]
    schema = pa.schema([("id", pa.string()), ("x", pa.int32()), ("missing", pa.float32())])
    t = read_shard(shard, ["x", "missing"], schema=schema)
    assert t.schema == pa.schema([("x", pa.int32()), ("missing", pa.float32())])
    assert t.column("missing").null_count == t.num_rows == 25


def test_shard_output_is_atomic_and_deterministic(tmp_path):
    out = ShardOutput(str(tmp_path), "s1")
    out.write_table("t", pa.table({"a": [1, 2]}))
    out.write_table("t", pa.table({"a": [3]}))  # a recomputed shard overwrites, never appends
    out.write_array("e", np.ones((2, 3), np.float16))
    assert pq.read_table(tmp_path / "t").column("a").to_pylist() == [3]
    assert np.load(tmp_path / "e" / "s1.npy").dtype == np.float16
    assert not [p for p in tmp_path.rglob(".tmp-*")]


# ------------------------------------------------------------------------- runner


def test_run_shards_inline_resumes_and_skips_finished(tmp_path):
    ds = write_dataset(tmp_path / "ds")
    shards = plan_shards(str(ds), 10)
    work = tmp_path / "work"
    first = run_shards(None, copy_rows, shards[:2], str(work), progress=False)
    assert [v["rows"] for v in first.values()] == [10, 10]
    before = {p: p.stat().st_mtime_ns for p in (work / "rows").iterdir()}
    res = run_shards(None, copy_rows, shards, str(work), payloads={shards[3].id: "tagged"}, progress=False)
    assert sum(v["rows"] for v in res.values()) == 50
    assert {p: p.stat().st_mtime_ns for p in (work / "rows").iterdir() if p in before} == before  # not redone
    assert sorted(all_rows(work)) == sorted(f"f{f}-r{i}" for f in range(2) for i in range(25))
    assert read_done(str(work), shards[3].id)["rows"] == 10
    assert pq.read_table(work / "rows" / f"{shards[3].id}.parquet").column("tag").to_pylist() == ["tagged"] * 10


def test_run_shards_on_threaded_cluster_reports_failures(tmp_path):
    ds = write_dataset(tmp_path / "ds")
    shards = plan_shards(str(ds), 10)
    with dask_client(DaskConfig(n_workers=2, processes=False)) as client:
        with pytest.raises(RuntimeError, match=f"1 shard\\(s\\) failed, first {shards[2].id}: boom"):
            run_shards(client, partial(fail_on, shards[2].id), shards, str(tmp_path / "w"), progress=False)
        # The others finished and are kept; the rerun only does the failed one.
        assert read_done(str(tmp_path / "w"), shards[2].id) is None
        assert sum(read_done(str(tmp_path / "w"), s.id) is not None for s in shards) == 5
        res = run_shards(client, copy_rows, shards, str(tmp_path / "w"), progress=False)
    assert sum(v["rows"] for v in res.values()) == 50
    assert len(all_rows(tmp_path / "w")) == 50


class _Fut:
    def __init__(self, status):
        self.status = status


def test_lost_result_recovers_from_marker_or_resubmits(tmp_path):
    """A gather that fails after a worker died: the marker wins; a lost key is resubmitted, twice at most."""
    from curation.dask_cluster import _recover

    ds = write_dataset(tmp_path / "ds")
    shard = plan_shards(str(ds), 10)[0]
    work = str(tmp_path / "work")
    exc = RuntimeError("Event is bound to a different event loop")
    tries: dict[str, int] = {}
    assert _recover(_Fut("lost"), exc, shard.id, work, tries, "t") is True
    assert _recover(_Fut("cancelled"), exc, shard.id, work, tries, "t") is True
    assert _recover(_Fut("lost"), exc, shard.id, work, tries, "t") is False  # gave up after two
    assert _recover(_Fut("error"), exc, shard.id, work, {}, "t") is False  # the task itself raised
    run_shards(None, copy_rows, [shard], work, progress=False)  # now the shard's marker is on disk
    assert _recover(_Fut("error"), exc, shard.id, work, {}, "t")["rows"] == 10


@pytest.mark.slow
def test_killed_worker_process_loses_and_duplicates_nothing(tmp_path):
    """A LocalCluster of processes; one worker dies (SIGKILL) halfway through writing a shard."""
    ds = write_dataset(tmp_path / "ds", n_files=2, rows=40)
    shards = plan_shards(str(ds), 10)
    victim = shards[3].id
    flags = tmp_path / "flags"
    flags.mkdir()
    work = tmp_path / "work"
    with dask_client(DaskConfig(n_workers=2, processes=True, memory_limit="1GiB")) as client:
        pids_before = set(client.run(os.getpid).values())
        res = run_shards(client, partial(die_once_midway, str(flags), victim), shards, str(work), progress=False)
        pids_after = set(client.run(os.getpid).values())
    killed = int((flags / f"{victim}.attempted").read_text())
    assert killed in pids_before and killed not in pids_after  # the worker really died (and was replaced)
    assert res[victim]["pid"] != killed
    rows = all_rows(work)
    assert sorted(rows) == sorted(f"f{f}-r{i}" for f in range(2) for i in range(40))  # no loss, no duplicate
    assert not list(work.rglob(".tmp-*"))  # the half-written file was cleaned up, never read


# ------------------------------------------------------------------------- setup and cluster


def _count_build(tag):
    return {"built": tag}


def test_setup_once_builds_once_across_threads():
    clear_setup_cache()
    key = ("test-model", 1)
    results = []
    threads = [threading.Thread(target=lambda: results.append(setup_once(key, partial(_count_build, "x"))))
               for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert SETUP_COUNTS[key] == 1 and all(r is results[0] for r in results)
    assert setup_once(("other",), partial(_count_build, "y")) == {"built": "y"}


def _cached_count(key):
    from curation.dask_cluster import SETUP_COUNTS

    return SETUP_COUNTS.get(key, 0)


def test_setup_plugin_warms_each_worker_and_scheduler_address_is_used():
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        with dask_client(DaskConfig(scheduler=cluster.scheduler_address)) as client:
            assert client.scheduler.address == cluster.scheduler_address
            key = ("plugin-model", 2)
            client.register_plugin(SetupPlugin(key, partial(_count_build, "p")))
            assert list(client.run(_cached_count, key).values()) == [1]


def test_local_cluster_shape_and_device():
    shape = local_cluster_shape(DaskConfig())
    assert shape["n_workers"] >= 1 and shape["processes"] is True
    assert local_cluster_shape(DaskConfig(n_workers=3))["n_workers"] == 3
    if shape["kind"] == "cpu":
        assert worker_device("auto") == "cpu"
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            worker_device("cuda")
    assert worker_device("cpu") == "cpu"


def test_work_dir_depends_on_fingerprint(tmp_path):
    a = work_dir_for(str(tmp_path), "score", {"model": "x", "inputs": {"pairs": "run-1"}})
    assert a == work_dir_for(str(tmp_path), "score", {"inputs": {"pairs": "run-1"}, "model": "x"})
    assert a != work_dir_for(str(tmp_path), "score", {"model": "x", "inputs": {"pairs": "run-2"}})
    assert a.startswith(f"{tmp_path}/_work/score-")
    json.dumps(a)
