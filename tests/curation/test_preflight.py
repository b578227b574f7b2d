"""Preflight: a closed cluster port, a missing or damaged input stage and an unwritable --out are one
line (`curate: error: ...`, exit 2) in seconds, before any stage starts (issue 19 item 7)."""
from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from curation.cli import main
from curation.config import PipelineConfig
from curation.errors import ConfigError, InputError
from curation.preflight import check_dask_scheduler, check_spark_master, check_writable, preflight
from curation.stage import StageRunner
from tests.curation.test_stage import ParquetStage


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


@pytest.fixture
def listening():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def _one_line_error(capsys, argv) -> tuple[str, float]:
    start = time.perf_counter()
    assert main(argv) == 2
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err.strip()
    assert err.startswith("curate: error: ") and "\n" not in err and "Traceback" not in err, err
    return err, seconds


def test_a_closed_spark_master_port_is_one_line_in_seconds(tmp_path, capsys):
    port = _closed_port()
    err, seconds = _one_line_error(capsys, ["run", "--out", str(tmp_path / "o"), "--master", f"spark://127.0.0.1:{port}"])
    assert f"spark.master spark://127.0.0.1:{port}" in err and "--master local[*]" in err
    assert seconds < 10 and not (tmp_path / "o").exists()


def test_a_closed_dask_scheduler_port_is_one_line_in_seconds(tmp_path, capsys):
    port = _closed_port()
    err, seconds = _one_line_error(capsys, ["run", "--out", str(tmp_path / "o"), "--scheduler", f"tcp://127.0.0.1:{port}"])
    assert f"dask.scheduler tcp://127.0.0.1:{port}" in err and "--scheduler unset" in err
    assert seconds < 10


def test_listening_addresses_pass_and_unchecked_kinds_are_left_alone(listening):
    check_spark_master(f"spark://127.0.0.1:{listening}")
    check_spark_master(f"spark://127.0.0.1:{_closed_port()},127.0.0.1:{listening}")  # HA: one is enough
    check_dask_scheduler(f"tcp://127.0.0.1:{listening}")
    check_dask_scheduler(f"127.0.0.1:{listening}")
    for master in ("local[*]", "local[2]", "yarn", "k8s://https://10.0.0.1:6443"):
        check_spark_master(master)
    check_dask_scheduler("inproc://whatever")
    with pytest.raises(ConfigError, match="spark.master"):
        check_spark_master("spark://127.0.0.1:notaport")


def test_engines_are_checked_only_for_commands_that_use_them(tmp_path):
    dead = f"tcp://127.0.0.1:{_closed_port()}"
    cfg = PipelineConfig.load(overrides={"snapshot": "x", "out": str(tmp_path), "dask.scheduler": dead,
                                         "spark.master": f"spark://127.0.0.1:{_closed_port()}"})
    preflight(cfg, "status")  # neither
    with pytest.raises(ConfigError, match="dask.scheduler"):
        preflight(cfg, "score")  # Dask only: the dead Spark master is not its problem
    with pytest.raises(ConfigError, match="spark.master"):
        preflight(cfg, "extract")


def test_an_unwritable_out_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    err, _ = _one_line_error(capsys, ["run", "--out", str(blocker / "run")])
    assert f"out {blocker / 'run'}: cannot write there" in err and "pass --out" in err
    check_writable(str(tmp_path / "new" / "run"))  # created, probe removed
    assert (tmp_path / "new" / "run").is_dir() and not list((tmp_path / "new" / "run").iterdir())


def test_a_missing_input_run_dir_or_stage_is_one_line_before_any_work(tmp_path, capsys):
    err, seconds = _one_line_error(capsys, ["images", "--input", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    assert f"--input {tmp_path / 'nowhere'} does not exist" in err and "dedup/" in err
    (tmp_path / "run").mkdir()
    err, _ = _one_line_error(capsys, ["images", "--input", str(tmp_path / "run"), "--out", str(tmp_path / "o")])
    assert "the dedup stage has not run there" in err and f"curate run --out {tmp_path / 'run'}" in err
    assert seconds < 10 and not (tmp_path / "o").exists()


def test_a_deleted_part_file_of_a_finished_input_stage_is_named(tmp_path, capsys):
    run = tmp_path / "run"
    StageRunner(str(run), PipelineConfig()).run(ParquetStage("dedup"))
    part = run / "dedup" / "documents" / "part-00001.parquet"
    part.unlink()
    # Given the stage directory instead of the run directory: the same run root.
    err, seconds = _one_line_error(capsys, ["images", "--input", str(run / "dedup"), "--out", str(run)])
    assert f"{part}: missing" in err and "--force dedup" in err
    assert seconds < 10 and not (run / "images").exists()


def test_a_stage_this_configuration_skips_is_not_checked(tmp_path):
    # Downloaded models: bootstrap does not apply, so its missing input is not an error.
    preflight(PipelineConfig.load(overrides={"snapshot": "x", "out": str(tmp_path)}), "bootstrap", str(tmp_path / "x"))
    with pytest.raises(InputError):
        preflight(PipelineConfig.load(overrides={"out": str(tmp_path)}), "bootstrap", str(tmp_path / "x"))
    assert Path(tmp_path).exists()
