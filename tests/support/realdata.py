"""Where the real data lives (``REALDATA_DIR``, default ``../shared/realdata``) and how a test asks for it.

A test that needs a file calls :func:`realdata_path`: it skips with the reason where the data is
absent, and fails instead under CI (``REQUIRE_REALDATA=1``, set by ``.ci/run``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REALDATA = Path(os.environ.get("REALDATA_DIR", ROOT / ".." / "shared" / "realdata")).resolve()
MMC4_FILE = ("mmc4", "mmc4_core_ff_shard151_first20.jsonl")


def realdata_path(*parts: str) -> Path:
    """A file under the real-data folder; skips the test (fails under CI) when it is absent."""
    path = REALDATA.joinpath(*parts)
    if not path.exists():
        msg = f"real data not found at {path}: set REALDATA_DIR to the shared/realdata folder"
        if os.environ.get("REQUIRE_REALDATA"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def load_mmc4_docs() -> list[dict]:
    """The 20 real MMC4 documents (skip or fail like every real-data test when absent)."""
    with realdata_path(*MMC4_FILE).open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
