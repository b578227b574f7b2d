"""Shared fixtures: where the real data lives, and one Spark session for the whole run."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("REALDATA_DIR", ROOT / ".." / "shared" / "realdata")).resolve()


def realdata_path(*parts: str) -> Path:
    """A file under the real-data folder; skips the test (fails under CI) when it is absent."""
    path = REALDATA.joinpath(*parts)
    if not path.exists():
        msg = f"real data not found at {path}: set REALDATA_DIR to the shared/realdata folder"
        if os.environ.get("REQUIRE_REALDATA"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def realdata() -> Path:
    return realdata_path()


@pytest.fixture(scope="session")
def spark():
    """One local Spark session (2 cores) for every test; later getOrCreate calls reuse it."""
    from curation.config import SparkConfig
    from curation.spark import get_spark

    return get_spark(SparkConfig(master="local[2]", shuffle_partitions=4, show_progress=False, driver_memory="2g"))


MMC4_FILE = ("mmc4", "mmc4_core_ff_shard151_first20.jsonl")


def load_mmc4_docs() -> list[dict]:
    """The 20 real MMC4 documents (skip or fail like every real-data test when absent)."""
    import json

    with realdata_path(*MMC4_FILE).open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
