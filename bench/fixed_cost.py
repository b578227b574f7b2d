"""Benchmark: the fixed cost of ``curate extract`` (issue 13), on one WARC of 10 real records.

What a stage costs before it does any work decides how small a unit of work can be and how
long a tiny run takes; on 2 cores ``curate extract`` of 10 records took ~57 s. This prints one
JSON object:

- ``extract``: wall seconds of ``curate extract --input <10-record WARC> --out <tmp>`` as a
  subprocess (what a user waits for: interpreter, imports, JVM, session, tasks, writes);
- ``extract_breakdown``: the same path cut into its parts, measured in one fresh Python process
  in order: ``imports`` (curation + pyspark), ``jvm_and_session`` (``get_spark``: JVM start and
  the SparkSession), ``first_python_task`` (a one-element job: starts a Python worker),
  ``model_loads`` (the text filter pipeline: fastText LID, stopwords, flagged words; what every
  task paid before the per-worker cache), ``stage_first`` (the extract stage in the warm
  session) and ``stage_again`` (the stage once more, forced, in the same session and worker:
  what a second stage or a second ``curate run`` stage pays when the session is shared);
- ``extract_breakdown_cpu``: CPU seconds of the whole process tree (driver, JVM, Python daemon
  and workers) per part: on a machine shared with other work the wall times swing with the load
  (``load_average_1m`` is printed beside them), the CPU seconds much less.

The 10-record WARC is cut from ``realdata/warc/dolma_wget_sample-0000.warc.gz``: the first 10
response records' gzip members, copied byte for byte. ``fixed_cost_of_extract`` is importable
(``bench/scale.py`` may report it beside its own numbers).

The driver JVM starts with the class-data archive when one is built (``python -m curation.spark
--build-cds``, once per machine; ``cds_archive`` in the JSON says which); ``CURATE_SPARK_CDS=off``
measures without it.

Usage: python bench/fixed_cost.py [--realdata DIR] [--master local[2]] [--records 10]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE_WARC = "warc/dolma_wget_sample-0000.warc.gz"

# Run in a fresh interpreter so nothing is warm; prints {part: seconds} as JSON on its last line.
_BREAKDOWN = r"""
import json, sys, time
import psutil
me = psutil.Process()
def cpu():  # CPU seconds of this process and every live descendant (JVM, Python daemon, workers)
    total = sum(me.cpu_times()[:2])
    for p in me.children(recursive=True):
        try:
            total += sum(p.cpu_times()[:2])
        except psutil.Error:
            pass
    return total
t = time.perf_counter(); c = cpu(); parts = {}; cpu_parts = {}
def lap(name):
    global t, c
    now, cnow = time.perf_counter(), cpu()
    parts[name] = round(now - t, 2); cpu_parts[name] = round(cnow - c, 2); t, c = now, cnow
import curation.cli, pyspark, pyarrow
from curation.config import PipelineConfig
from curation.snapshot import RunSource, resolve_inputs
from curation.stage import StageRunner
from pipelines.spark_extract import ExtractStage
lap("imports")
from curation.spark import get_spark
warc, out, master = sys.argv[1:4]
cfg = PipelineConfig.load(overrides={"out": out, "spark.master": master, "spark.show_progress": False})
spark = get_spark(cfg.spark)
lap("jvm_and_session")
spark.sparkContext.parallelize([1], 1).map(lambda x: x + 1).collect()
lap("first_python_task")
from filters.text_pipeline import TextFilterPipeline
TextFilterPipeline(cfg.paragraph_filters, cfg.document_filters, identify_rejected=True).lid.predict("warm up")
lap("model_loads")
source = RunSource(tuple(resolve_inputs(warc)), "bench")
StageRunner(out, cfg).run(ExtractStage(), source=source)
lap("stage_first")
StageRunner(out, cfg, force={"extract"}).run(ExtractStage(), source=source)
lap("stage_again")
print(json.dumps({"wall": parts, "cpu": cpu_parts}))
"""


def make_warc(realdata: Path, dest: Path, records: int = 10) -> Path:
    """A ``.warc.gz`` of the first ``records`` response records of the real WARC (their gzip members)."""
    from curation.warc_reader import ResponseRecord, iter_warc

    src = realdata / SOURCE_WARC
    recs = [r for r in iter_warc(str(src)) if isinstance(r, ResponseRecord) and r.length][:records]
    data = src.read_bytes()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with dest.open("wb") as fh:
        for r in recs:
            fh.write(data[r.offset:r.offset + r.length])
    return dest


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), PYSPARK_PYTHON=sys.executable, SPARK_LOG_LEVEL="ERROR")


def fixed_cost_of_extract(warc: Path, workdir: Path, master: str = "local[2]") -> tuple[float, float]:
    """``(wall, cpu)`` seconds of ``curate extract`` on ``warc`` in a fresh subprocess (run dir under
    ``workdir``); ``cpu``: the process tree's CPU seconds (curate, JVM, Python workers), sampled."""
    import psutil

    out = workdir / f"run-{time.time_ns()}"
    cmd = [sys.executable, "-m", "curation", "extract", "--input", str(warc), "--out", str(out), "--master", master,
           "--set", "spark.show_progress=false"]
    log = workdir / f"{out.name}.log"
    start = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=fh, stderr=subprocess.STDOUT)
        seen: dict[int, float] = {}
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                for p in [root, *root.children(recursive=True)]:
                    seen[p.pid] = sum(p.cpu_times()[:2])
            except psutil.Error:
                pass
            time.sleep(0.2)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"curate extract failed ({proc.returncode}):\n{log.read_text()[-4000:]}")
    return round(seconds, 2), round(sum(seen.values()), 2)


def breakdown(warc: Path, workdir: Path, master: str = "local[2]") -> dict[str, dict[str, float]]:
    """``{"wall": {part: s}, "cpu": {part: CPU s of the whole process tree}}`` (parts: module docstring)."""
    out = workdir / f"parts-{time.time_ns()}"
    proc = subprocess.run([sys.executable, "-c", _BREAKDOWN, str(warc), str(out), master], cwd=ROOT, env=_env(),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"breakdown failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--realdata", default=os.environ.get("REALDATA_DIR", str(ROOT / ".." / "shared" / "realdata")))
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--records", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=1, help="wall time: best of N fresh runs")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fixed-cost-") as tmp:
        tmp_path = Path(tmp)
        warc = make_warc(Path(args.realdata), tmp_path / "warc" / "ten.warc.gz", args.records)
        runs = [fixed_cost_of_extract(warc, tmp_path, args.master) for _ in range(args.rounds)]
        walls = [w for w, _ in runs]
        parts = breakdown(warc, tmp_path, args.master)
    print(json.dumps({"extract": min(walls), "extract_runs": walls, "extract_cpu": min(c for _, c in runs),
                      "extract_breakdown": parts["wall"],
                      "extract_breakdown_cpu": parts["cpu"], "records": args.records, "master": args.master,
                      "cpus": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 1),
                      "cds_archive": _cds_in_use()}))


def _cds_in_use() -> str | None:
    """The driver JVM's class-data archive when one is built (``python -m curation.spark --build-cds``)."""
    from curation.spark import cds_archive

    archive = cds_archive()
    return str(archive) if archive is not None and archive.is_file() else None


if __name__ == "__main__":
    main()
