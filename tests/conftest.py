"""Shared fixtures: the real data, and one Spark session for the whole run.

Helpers that tests import live in ``tests/support/`` (this file only holds fixtures).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.realdata import realdata_path


@pytest.fixture(scope="session")
def realdata() -> Path:
    return realdata_path()


@pytest.fixture(scope="session")
def spark():
    """One local Spark session (2 cores) for every test; later getOrCreate calls reuse it."""
    from curation.config import SparkConfig
    from curation.spark import get_spark

    return get_spark(SparkConfig(master="local[2]", shuffle_partitions=4, show_progress=False, driver_memory="2g"))
