"""Cluster runs: `curate run` on a Spark standalone master + worker and a Dask scheduler + two
workers (all started here on loopback) gives the same outputs as the embedded run; Make
variables reach the CLI and override the YAML key by key."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curation.registry import stage_order
from curation.spark import java_available
from tests.support.net import free_port, wait_port
from tests.support.rows import norm_value

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PAGES = 60


# --------------------------------------------------------------------------- Make variables
def _make_n(*args: str) -> str:
    if not shutil.which("make"):
        pytest.skip("make not installed")
    env = {k: v for k, v in os.environ.items() if k not in ("SNAPSHOT", "OUT", "CONFIG", "MASTER", "SCHEDULER", "SET",
                                                            "LIMIT", "CC_BASE", "FORCE", "MAKEFLAGS", "MFLAGS")}
    proc = subprocess.run(["make", "-n", "-C", str(ROOT), *args], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _curate_line(out: str) -> list[str]:
    line = next(ln for ln in out.splitlines() if "curate run" in ln)
    return line.split()[line.split().index("run") + 1:]


def test_make_variables_reach_the_cli_and_override_the_config_key_by_key():
    assert _curate_line(_make_n("curate")) == ["--snapshot", "sample", "--out", "out/sample"]
    # With CONFIG, the YAML decides everything the command line does not give.
    assert _curate_line(_make_n("curate", "CONFIG=cluster.yaml")) == ["--config", "cluster.yaml"]
    args = _curate_line(_make_n("curate", "CONFIG=cluster.yaml", "MASTER=spark://h:7077", "SCHEDULER=tcp://h:8786",
                                "SNAPSHOT=CC-MAIN-2024-10", "LIMIT=2", "SET=dedup.num_bands=20 report.thumbnail_px=96"))
    assert args == ["--snapshot", "CC-MAIN-2024-10", "--out", "out/CC-MAIN-2024-10", "--limit", "2",
                    "--master", "spark://h:7077", "--scheduler", "tcp://h:8786", "--config", "cluster.yaml",
                    "--set", "dedup.num_bands=20", "--set", "report.thumbnail_px=96"]
    report = next(ln for ln in _make_n("report", "OUT=/data/run").splitlines() if "curate report" in ln)
    assert "--input /data/run" in report


# --------------------------------------------------------------------------- the cluster run
def _wait_dask_workers(address: str, n: int, timeout: float = 180) -> None:
    from distributed import Client

    with Client(address, timeout=60) as client:
        client.wait_for_workers(n, timeout=timeout)


def _close(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 2e-4
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    return a == b


def _outputs(run: Path) -> dict[str, list]:
    """Every Parquet dataset of every complete stage: its rows, normalised and sorted."""
    found = {}
    for stage in stage_order():
        sdir = run / stage
        assert (sdir / "_STAGE_COMPLETE").exists(), f"{stage} did not complete in {run}"
        for sub in sorted(p for p in sdir.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
            files = sorted(f for f in sub.rglob("*.parquet") if not any(part.startswith(("_", ".")) for part in f.relative_to(sub).parts))
            if not files:
                continue
            rows = [norm_value(r) for f in files for r in pq.read_table(f).to_pylist()]
            found[f"{stage}/{sub.name}"] = sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=str))
    return found


def _sample_port_override(port: int) -> list[str]:
    """The sample's image server port, where the config has one: a free port, not a fixed one other runs use."""
    from curation.config import PipelineConfig

    return ["--set", f"sample_image_port={port}"] if hasattr(PipelineConfig(), "sample_image_port") else []


def _curate(out: Path, env, *extra: str) -> None:
    cmd = [str(BIN / "curate"), "run", "--out", str(out), "--set", f"sample_pages={PAGES}",
           "--set", "spark.shuffle_partitions=4", "--set", "spark.show_progress=false", "--set", "bootstrap.max_steps=8", *extra]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.skipif(not java_available(), reason="Spark needs Java 17")
def test_curate_run_on_spark_standalone_and_dask_cluster_matches_embedded(tmp_path):
    import pyspark

    env = dict(os.environ, SPARK_LOG_LEVEL="ERROR", PYSPARK_PYTHON=sys.executable, PYTHONPATH=str(ROOT))
    embedded = tmp_path / "embedded"
    image_port = _sample_port_override(free_port())  # the same in both runs: it is in the image URLs
    _curate(embedded, env, "--master", "local[2]", *image_port)

    spark_home = Path(pyspark.__file__).parent
    spark_class = spark_home / "bin" / "spark-class"
    sport, sui, wport, wui, dport = (free_port() for _ in range(5))
    cenv = dict(env, SPARK_HOME=str(spark_home), SPARK_LOCAL_IP="127.0.0.1", SPARK_WORKER_DIR=str(tmp_path / "sw"))
    procs: list[subprocess.Popen] = []
    logs = tmp_path / "logs"
    logs.mkdir()

    def start(name, args, e):
        p = subprocess.Popen(args, env=e, cwd=ROOT, stdout=(logs / f"{name}.log").open("w"), stderr=subprocess.STDOUT)
        procs.append(p)
        return p

    try:
        m = start("spark-master", [str(spark_class), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                                   "--port", str(sport), "--webui-port", str(sui)], cenv)
        wait_port(sport, m)
        w = start("spark-worker", [str(spark_class), "org.apache.spark.deploy.worker.Worker",
                                   f"spark://127.0.0.1:{sport}", "--host", "127.0.0.1", "--port", str(wport),
                                   "--webui-port", str(wui), "--cores", "2", "--memory", "3g"], cenv)
        wait_port(wport, w)
        s = start("dask-scheduler", [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(dport),
                                     "--dashboard-address", ":0", "--no-show"], env)
        wait_port(dport, s)
        address = f"tcp://127.0.0.1:{dport}"
        for i in range(2):
            start(f"dask-worker-{i}", [str(BIN / "dask"), "worker", address, "--host", "127.0.0.1", "--nworkers", "1",
                                       "--nthreads", "1", "--memory-limit", "4GiB", "--name", f"w{i}",
                                       "--dashboard-address", ":0"], env)
        _wait_dask_workers(address, 2)
        cluster = tmp_path / "cluster"
        _curate(cluster, env, "--master", f"spark://127.0.0.1:{sport}", "--scheduler", address, *image_port,
                "--set", "spark.conf={spark.executor.memory: 2g, spark.cores.max: 2}")
    except Exception:
        for f in sorted(logs.iterdir()):
            print(f"--- {f.name}\n{f.read_text()[-3000:]}")
        raise
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()

    want, got = _outputs(embedded), _outputs(cluster)
    assert set(got) == set(want) and want
    for name in want:
        assert len(got[name]) == len(want[name]), name
        assert all(_close(a, b) for a, b in zip(got[name], want[name])), f"{name} differs between embedded and cluster"
    for stage in stage_order():
        a = json.loads((embedded / stage / "stats.json").read_text())
        b = json.loads((cluster / stage / "stats.json").read_text())
        assert (a["rows_in"], a["rows_out"], a["rejected"]) == (b["rows_in"], b["rows_out"], b["rejected"]), stage
    assert (cluster / "DATASET_CARD.md").exists() and (embedded / "DATASET_CARD.md").exists()
