"""One place that builds the SparkSession every Spark stage uses.

Embedded ``local[*]`` by default; ``spark://host:port`` (standalone), ``yarn`` or
``k8s://`` by configuration. On a non-local master the project's packages are
zipped and shipped with ``addPyFile`` so executors import the same code the
driver runs, with nothing installed on the workers beyond the dependencies.

One session per process: ``curate run`` starts the JVM once and every Spark stage after the
first (extract, dedup, images' fetch, the report) gets the same session back without a new
builder, master check or project zip (a stage's runtime SQL settings are applied to it). Python
workers are reused across tasks and stages (``spark.python.worker.reuse``), so what a task
caches at module level (:func:`curation.dask_cluster.setup_once`: the extract record processor)
is built once per worker for the whole run.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

from curation.config import SparkConfig

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("curation", "filters", "models", "pipelines")


def java_available() -> bool:
    return bool(os.environ.get("JAVA_HOME")) or shutil.which("java") is not None


def _zip_project() -> str:
    """Zip the project packages (and sql/) so executors can import them."""
    fd, path = tempfile.mkstemp(prefix="vl-curation-", suffix=".zip")
    os.close(fd)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for pkg in PACKAGES:
            for file in (PROJECT_ROOT / pkg).rglob("*"):
                if file.is_file() and "__pycache__" not in file.parts:
                    zf.write(file, file.relative_to(PROJECT_ROOT))
    return path


# The session this process started, by master: reused by every later stage of the run.
_SESSIONS: dict[str, object] = {}


def _running(master: str):
    """The session this process started for ``master``, when it is still running."""
    spark = _SESSIONS.get(master)
    if spark is None:
        return None
    if getattr(spark.sparkContext, "_jsc", None) is None:  # stopped (spark.stop())
        _SESSIONS.pop(master, None)
        return None
    return spark


def get_spark(cfg: SparkConfig):
    """Return a SparkSession configured from ``cfg`` (reuses one already running with the same master)."""
    spark = _running(cfg.master)
    if spark is not None:
        # Runtime SQL settings are per stage; the JVM, the master and the shipped code are the run's.
        spark.conf.set("spark.sql.shuffle.partitions", str(cfg.shuffle_partitions))
        for key, value in cfg.conf.items():
            if key.startswith("spark.sql."):
                spark.conf.set(key, value)
        if cfg.checkpoint_dir:
            spark.sparkContext.setCheckpointDir(cfg.checkpoint_dir)
        return spark
    if not java_available():
        raise RuntimeError(
            "Spark needs Java 17: install it (Debian/Ubuntu: `apt-get install openjdk-17-jre-headless`, "
            "macOS: `brew install openjdk@17`) or set JAVA_HOME"
        )
    from pyspark.sql import SparkSession

    from curation.preflight import check_spark_master

    check_spark_master(cfg.master)  # a closed spark:// port: one-line ConfigError in 3 s, not a Py4J trace
    # Executors must run the interpreter that has this project's dependencies.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if cfg.master.startswith("local"):
        # An embedded run never needs to listen beyond loopback.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = (
        SparkSession.builder.master(cfg.master)
        .appName(cfg.app_name)
        .config("spark.driver.memory", cfg.driver_memory)
        .config("spark.sql.shuffle.partitions", str(cfg.shuffle_partitions))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.showConsoleProgress", "true" if cfg.show_progress else "false")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        # Parquet files are written by pyarrow-compatible writers; keep names stable.
        .config("spark.sql.sources.partitionOverwriteMode", "dynamic")
        .config("spark.python.worker.reuse", "true")
    )
    for key, value in cfg.conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("SPARK_LOG_LEVEL", "WARN"))
    if not cfg.master.startswith("local"):
        spark.sparkContext.addPyFile(_zip_project())
        log.info("shipped project packages to executors on %s", cfg.master)
    if cfg.checkpoint_dir:
        spark.sparkContext.setCheckpointDir(cfg.checkpoint_dir)
    _SESSIONS[cfg.master] = spark
    return spark
