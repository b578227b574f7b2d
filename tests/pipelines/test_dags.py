"""pipelines/dags/: the Airflow DAGs, checked with real Apache Airflow from its own venv.

Airflow's pins clash with the project's, so `make test` installs it in `.venv-airflow`
(pipelines/dags/constraints-airflow.txt) and these tests drive it in subprocesses with a
temporary AIRFLOW_HOME on SQLite: the DAG files import (DagBag), the tasks and their
dependencies follow the stage registry, the watch DAG triggers the curate DAG for the newest
uncurated snapshot of a local mirror, and `airflow dags test` curates the embedded sample.
"""
from __future__ import annotations

import gzip
import json
import os
import subprocess
from pathlib import Path

import pytest

from curation.registry import stage_order
from curation.spark import java_available

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "pipelines" / "dags"
AIRFLOW_BIN = ROOT / ".venv-airflow" / "bin"
CURATE_DAG, WATCH_DAG = "vlc_curate_snapshot", "vlc_cc_snapshot_watch"


def _require_airflow() -> None:
    if not (AIRFLOW_BIN / "airflow").exists():
        msg = "Airflow venv .venv-airflow not found: `make test` (or `make airflow-venv`) installs it"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


def _run(args, env, timeout=300, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, env=env, cwd=env["AIRFLOW_HOME"], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args[:4]))} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}")
    return proc


def _airflow_python(code: str, env, *args: str) -> dict:
    """Run ``code`` in Airflow's interpreter; it prints one JSON object last."""
    proc = _run([str(AIRFLOW_BIN / "python"), "-c", code, *args], env)
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory):
    _require_airflow()
    home = tmp_path_factory.mktemp("airflow_home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "VLC_", "PYTHONPATH"))}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "VLC_OUTPUT_ROOT": str(home / "runs"),
        "VLC_TASK_RETRIES": "0",  # a failing task fails the test now, not after retry delays
    })
    _run([str(AIRFLOW_BIN / "airflow"), "db", "migrate"], env)
    _run([str(AIRFLOW_BIN / "airflow"), "dags", "reserialize"], env)
    return env


DAGBAG = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(sys.argv[1])
out = {"errors": {k: str(v)[-2000:] for k, v in bag.import_errors.items()}, "dags": {}}
for dag in bag.dags.values():
    env = dag.get_template_env()
    rendered = {}
    for t in dag.tasks:
        cmd = getattr(t, "bash_command", None)
        if cmd:
            rendered[t.task_id] = env.from_string(cmd).render(params=json.loads(sys.argv[2]))
    out["dags"][dag.dag_id] = {
        "schedule": getattr(dag.timetable, "expression", None) or type(dag.timetable).__name__,
        "max_active_runs": dag.max_active_runs,
        "params": sorted(dag.params.keys()),
        "tasks": {t.task_id: {"downstream": sorted(t.downstream_task_ids), "retries": t.retries,
                              "timeout_s": t.execution_timeout.total_seconds() if t.execution_timeout else None,
                              "type": type(t).__name__, "trigger_dag_id": getattr(t, "trigger_dag_id", None)}
                  for t in dag.tasks},
        "rendered": rendered,
    }
print(json.dumps(out))
"""

RUNS = r"""
import json, sys
from airflow.models import DagRun, TaskInstance
from airflow.utils.session import create_session
with create_session() as s:
    runs = [{"run_id": r.run_id, "state": str(r.state), "conf": r.conf} for r in
            s.query(DagRun).filter(DagRun.dag_id == sys.argv[1]).order_by(DagRun.id)]
    tis = [{"run_id": t.run_id, "task_id": t.task_id, "state": str(t.state)} for t in
           s.query(TaskInstance).filter(TaskInstance.dag_id == sys.argv[1])]
print(json.dumps({"runs": runs, "tis": tis}, default=str))
"""

CC_PARAMS = {"snapshot": "CC-MAIN-2024-10", "limit": 2, "output": "", "output_root": "/data/runs",
             "cc_base": "s3://commoncrawl/", "spark_master": "spark://head:7077", "dask_scheduler": "tcp://head:8786",
             "config": "/etc/vlc.yaml", "overrides": ["dedup.num_bands=20", "x.y=a b; rm -rf /"],
             "collinfo": "", "lookback": 1, "dedup_state_dir": "/data/dedup_state"}


def test_dag_files_import_and_follow_the_stage_registry(airflow_env):
    env = {k: v for k, v in airflow_env.items() if k != "VLC_TASK_RETRIES"}  # the deployed defaults
    bag = _airflow_python(DAGBAG, env, str(DAGS), json.dumps(CC_PARAMS))
    assert bag["errors"] == {}
    assert set(bag["dags"]) == {CURATE_DAG, WATCH_DAG}

    curate = bag["dags"][CURATE_DAG]
    stages = list(stage_order())
    assert set(curate["tasks"]) == set(stages) | {"report", "card"}
    chain = stages + ["report", "card"]
    for a, b in zip(chain, chain[1:]):
        assert curate["tasks"][a]["downstream"] == [b], (a, curate["tasks"][a])
    assert curate["tasks"]["card"]["downstream"] == []
    for tid, t in curate["tasks"].items():
        assert t["retries"] >= 1 and t["timeout_s"] and t["type"] == "BashOperator", (tid, t)
    assert {"snapshot", "limit", "output", "output_root", "cc_base", "spark_master", "dask_scheduler", "config",
            "overrides", "dedup_state_dir"} <= set(curate["params"])
    assert curate["schedule"] == "NullTimetable" and curate["max_active_runs"] == 1

    # The commands are the project's CLI with every param passed on, shell-quoted.
    cmds = curate["rendered"]
    curate_bin = str(ROOT / ".venv" / "bin" / "curate")
    run = "/data/runs/CC-MAIN-2024-10"
    common = ("--set snapshot=CC-MAIN-2024-10 --config /etc/vlc.yaml --master spark://head:7077 "
              "--scheduler tcp://head:8786 --set dedup.state_dir=/data/dedup_state "
              "--set dedup.num_bands=20 --set 'x.y=a b; rm -rf /'")
    assert cmds["extract"] == f"{curate_bin} extract --input CC-MAIN-2024-10 --out {run} {common} --limit 2 --cc-base s3://commoncrawl/"
    for name in stages[1:]:
        assert cmds[name] == f"{curate_bin} {name} --input {run} --out {run} {common}"
    assert cmds["report"] == f"{curate_bin} report --input {run} {common}"
    assert cmds["card"] == f"{curate_bin} card --input {run} {common}"

    watch = bag["dags"][WATCH_DAG]
    assert watch["schedule"] == "0 0 * * *"
    t = watch["tasks"]
    assert t["find_newest_uncurated"]["downstream"] == ["has_new_snapshot"]
    assert t["has_new_snapshot"]["downstream"] == ["trigger_curate"]
    assert t["trigger_curate"]["trigger_dag_id"] == CURATE_DAG
    assert "curation.snapshot_watch" in watch["rendered"]["find_newest_uncurated"]


def _mirror(base: Path, snapshots) -> None:
    for sid in snapshots:
        d = base / "crawl-data" / sid
        d.mkdir(parents=True)
        (d / "warc.paths.gz").write_bytes(gzip.compress(f"crawl-data/{sid}/segments/0/warc/x.warc.gz\n".encode()))


def test_watch_dag_triggers_the_newest_uncurated_snapshot_once(airflow_env, tmp_path):
    mirror, runs = tmp_path / "cc", tmp_path / "runs"
    _mirror(mirror, ["CC-MAIN-2024-10", "CC-MAIN-2024-18"])
    (runs / "CC-MAIN-2024-18").mkdir(parents=True)
    (runs / "CC-MAIN-2024-18" / "DATASET_CARD.md").write_text("# curated")
    conf = json.dumps({"cc_base": str(mirror), "output_root": str(runs), "lookback": 2, "limit": 1})
    airflow = str(AIRFLOW_BIN / "airflow")
    for _ in range(2):  # the second run finds the same snapshot: its curate run exists, no duplicate
        _run([airflow, "dags", "test", WATCH_DAG, "-c", conf], airflow_env, timeout=240)
    curate = _airflow_python(RUNS, airflow_env, CURATE_DAG)
    assert [r["run_id"] for r in curate["runs"]] == ["cc__CC-MAIN-2024-10"]
    got = curate["runs"][0]["conf"]
    assert got["snapshot"] == "CC-MAIN-2024-10" and got["output"] == f"{runs}/CC-MAIN-2024-10"
    assert got["cc_base"] == str(mirror) and got["limit"] == 1
    watch = _airflow_python(RUNS, airflow_env, WATCH_DAG)
    assert [r["state"] for r in watch["runs"]] == ["success", "success"]
    trig = sorted(t["state"] for t in watch["tis"] if t["task_id"] == "trigger_curate")
    assert trig == ["skipped", "success"]


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.skipif(not java_available(), reason="Spark needs Java 17")
def test_airflow_dags_test_curates_the_sample(airflow_env, tmp_path):
    import socket

    from curation.config import PipelineConfig

    out = tmp_path / "sample-run"
    overrides = ["sample_pages=30", "spark.shuffle_partitions=2", "spark.show_progress=false", "bootstrap.max_steps=8"]
    if hasattr(PipelineConfig(), "sample_image_port"):  # a free port, not the fixed default other runs may hold
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            overrides.append(f"sample_image_port={s.getsockname()[1]}")
    conf = {"snapshot": "sample", "output": str(out), "spark_master": "local[2]", "overrides": overrides}
    proc = _run([str(AIRFLOW_BIN / "airflow"), "dags", "test", CURATE_DAG, "-c", json.dumps(conf)],
                airflow_env, timeout=900, check=False)
    states = _airflow_python(RUNS, airflow_env, CURATE_DAG)
    run = [r for r in states["runs"] if r["conf"].get("output") == str(out)]
    tis = {t["task_id"]: t["state"] for t in states["tis"] if run and t["run_id"] == run[-1]["run_id"]}
    assert proc.returncode == 0 and run and run[-1]["state"] == "success", (tis, proc.stdout[-8000:], proc.stderr[-3000:])
    assert set(tis) == set(stage_order()) | {"report", "card"} and set(tis.values()) == {"success"}
    for name in stage_order():
        assert (out / name / "_STAGE_COMPLETE").exists(), name
    assert (out / "report.html").exists() and json.loads((out / "report.json").read_text())["funnel"]
    card = (out / "DATASET_CARD.md").read_text()
    assert "snapshot: `sample`" in card and "| extract | complete |" in card
