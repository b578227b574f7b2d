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


# Class-data sharing (CDS) for the driver JVM: an archive of the classes Spark loads at start
# (~170 MB, built once per machine by ``python -m curation.spark --build-cds``) halves the CPU of
# starting a session (measured 13-14 -> 7 CPU s on 2 cores, docs/benchmarks.md) and, unlike a
# C1-only JIT (-XX:TieredStopAtLevel=1: also ~6 s, but Spark SQL then ran 4x slower), costs no
# throughput. Used when present; a stale one (another JVM or Spark) is refused by the JVM itself.
CDS_ENV = "CURATE_SPARK_CDS"  # the archive's directory, or "off"


def cds_archive() -> Path | None:
    """Where this machine's archive for this JVM and Spark lives (None: ``CURATE_SPARK_CDS=off``)."""
    value = os.environ.get(CDS_ENV, "")
    if value.lower() in ("off", "0", "false", "no"):
        return None
    import hashlib

    import pyspark

    base = Path(value) if value else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vl-curation"
    java = os.path.realpath(shutil.which("java") or os.path.join(os.environ.get("JAVA_HOME", ""), "bin", "java"))
    key = hashlib.sha1(f"{java}|{pyspark.__version__}|{Path(pyspark.__file__).parent}".encode()).hexdigest()[:12]
    return base / f"spark-cds-{key}.jsa"


def _driver_java_options(cfg: SparkConfig) -> str | None:
    """``spark.driver.extraJavaOptions``: the CDS archive when built, then the user's own options."""
    own = cfg.conf.get("spark.driver.extraJavaOptions")
    archive = cds_archive()
    if archive is None or not archive.is_file():
        return own
    return " ".join(x for x in (f"-XX:SharedArchiveFile={archive} -Xshare:auto -Xlog:cds=off", own) if x)


def build_cds_archive() -> Path | None:
    """Start and stop a session in a child process whose JVM dumps the classes it loaded, then move
    the archive into place (a temporary name until that JVM exited: never half an archive)."""
    import subprocess

    archive = cds_archive()
    if archive is None:
        return None
    archive.parent.mkdir(parents=True, exist_ok=True)
    tmp = archive.with_name(f"{archive.name}.{os.getpid()}.tmp")
    script = (
        "import sys\n"
        "from pyspark.sql import SparkSession\n"
        "spark = (SparkSession.builder.master('local[2]').config('spark.ui.enabled', 'false')\n"
        f"         .config('spark.driver.extraJavaOptions', '-XX:ArchiveClassesAtExit={tmp} -Xlog:cds=off')\n"
        "         .getOrCreate())\n"
        "spark.range(1000).selectExpr('id % 7 as k').groupBy('k').count().collect()\n"
        "spark.sparkContext.parallelize([1, 2], 2).map(lambda x: x + 1).collect()\n"
        "spark.createDataFrame([(1, 'a')], 'x int, y string').write.mode('overwrite').parquet(sys.argv[1])\n"
        "proc = spark.sparkContext._gateway.proc\n"
        "spark.stop()\n"
        "proc.stdin.close()\n"  # the gateway JVM exits on EOF and writes the archive as it exits
        "proc.wait()\n"
    )
    env = dict(os.environ, PYSPARK_PYTHON=os.environ.get("PYSPARK_PYTHON", sys.executable), SPARK_LOCAL_IP="127.0.0.1")
    with tempfile.TemporaryDirectory(prefix="cds-") as scratch:
        subprocess.run([sys.executable, "-c", script, f"{scratch}/probe"], check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not tmp.is_file() or tmp.stat().st_size == 0:
        raise RuntimeError(f"the JVM wrote no class-data archive at {tmp}")
    os.replace(tmp, archive)
    return archive


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
    java_options = _driver_java_options(cfg)
    if java_options:
        builder = builder.config("spark.driver.extraJavaOptions", java_options)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("SPARK_LOG_LEVEL", "WARN"))
    if not cfg.master.startswith("local"):
        spark.sparkContext.addPyFile(_zip_project())
        log.info("shipped project packages to executors on %s", cfg.master)
    if cfg.checkpoint_dir:
        spark.sparkContext.setCheckpointDir(cfg.checkpoint_dir)
    _SESSIONS[cfg.master] = spark
    return spark


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Spark helpers")
    ap.add_argument("--build-cds", action="store_true", help="build the driver JVM's class-data archive (once per machine)")
    if ap.parse_args().build_cds:
        print(build_cds_archive() or f"{CDS_ENV}=off: nothing built")
