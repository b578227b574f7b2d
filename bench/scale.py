"""Benchmark: how the whole pipeline's memory and time grow with the run (issue 13, item 5).

For each scale (``--scales 1 4 16``, 1x = ``--base-pages`` pages, default 2,000, about 5,600
image URLs) this builds a corpus with ``bench/scale_corpus.py`` (real pages multiplied, planted
near-duplicate pages and repeated/duplicate images, real COCO photos), serves its images with the
sample's :class:`curation.sample.server.ImageServer` on a free loopback port, and runs the real
CLI, ``curate run --input <corpus>/warc --out <run>``, as a subprocess with the sample's offline
configuration (:data:`curation.config.SAMPLE_DEFAULTS`: the run trains its own tiny CLIP and BLIP
in ``bootstrap``; the bootstrap's clean set is coco_mini) plus ``document_filters.languages=[]``
(most real pages are not English; the English-only default would reject them at extract and leave
the image stages little to do) and the loopback image server allow-listed.

While it runs, every ~0.2 s psutil reads the RSS of the ``curate`` process (the Spark driver and
the Dask client and scheduler: one process) and of each descendant, classified by command line:
``jvm`` (java: the Spark JVM), ``worker`` (everything else: PySpark daemons and workers, Dask
worker processes, img2dataset's processes). The stage running at each sample is the first stage
(in run order) whose directory has no completion marker yet, so peaks are also given per stage.

The fixed cost per stage is the per-stage seconds of a tiny run (``--fixed-pages``, default 10
pages, same configuration); with ``--extract-fixed-cost``, ``bench/fixed_cost.py``'s own
measurement of ``curate extract`` on 10 real records is added. ``growth`` compares the largest
scale with the smallest: peak RSS ratios, and per stage ``(t_big - fixed) / (t_small - fixed)``
divided by the ratio of pages (1.0 = linear above the fixed cost; the issue asks <= 1.3).

Prints one JSON object on stdout (progress on stderr).

Usage: python bench/scale.py [--scales 1 4 16] [--base-pages 2000] [--work DIR] [--keep]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.scale_corpus import DEFAULT_REALDATA, CorpusConfig, build_corpus  # noqa: E402

STATS = "stats.json"
MARKER = "_STAGE_COMPLETE"


def log(msg: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def classify(cmdline: list[str], name: str) -> str:
    """``jvm`` for java, else ``worker`` (PySpark daemon/worker, Dask worker, img2dataset process)."""
    head = os.path.basename(cmdline[0]) if cmdline else name
    if head == "java" or name == "java":
        return "jvm"
    return "worker"


def worker_kind(cmdline: list[str]) -> str:
    """Finer label for the report: which kind of worker a process is."""
    text = " ".join(cmdline)
    if "pyspark.daemon" in text or "pyspark/daemon" in text or "pyspark.worker" in text:
        return "pyspark"
    if "multiprocessing" in text or "spawn_main" in text or "forkserver" in text:
        return "mp_or_dask"
    return "other"


@dataclass
class Sampler:
    """Polls a process tree's RSS every ``interval`` s; attributes each sample to the running stage."""

    pid: int
    run_dir: Path
    stages: tuple[str, ...]
    interval: float = 0.2
    peaks: dict[str, float] = field(default_factory=lambda: {"driver": 0.0, "worker": 0.0, "jvm": 0.0,
                                                               "workers_total": 0.0})
    by_stage: dict[str, dict[str, float]] = field(default_factory=dict)
    kinds_seen: dict[str, int] = field(default_factory=dict)
    samples: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> "Sampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def current_stage(self) -> str:
        for s in self.stages:
            if not (self.run_dir / s / MARKER).exists():
                return s
        return "after"

    def _loop(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        seen: set[int] = set()
        while not self._stop.is_set():
            try:
                driver = root.memory_info().rss / 2**20
                children = root.children(recursive=True)
            except psutil.NoSuchProcess:
                break
            cur = {"driver": driver, "worker": 0.0, "jvm": 0.0, "workers_total": 0.0}
            for c in children:
                try:
                    rss = c.memory_info().rss / 2**20
                    cmd = c.cmdline()
                    kind = classify(cmd, c.name())
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
                if c.pid not in seen:
                    seen.add(c.pid)
                    label = "jvm" if kind == "jvm" else worker_kind(cmd)
                    self.kinds_seen[label] = self.kinds_seen.get(label, 0) + 1
                cur[kind] = max(cur[kind], rss)
                if kind == "worker":
                    cur["workers_total"] += rss
            stage = self.current_stage()
            st = self.by_stage.setdefault(stage, {k: 0.0 for k in cur})
            for k, v in cur.items():
                self.peaks[k] = max(self.peaks[k], v)
                st[k] = max(st[k], v)
            self.samples += 1
            self._stop.wait(self.interval)


def run_overrides(port: int, realdata: Path, extra: list[str]) -> list[str]:
    """``--set`` arguments: the sample's offline models, every language, the loopback images allowed."""
    from curation.config import SAMPLE_DEFAULTS

    sets = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in SAMPLE_DEFAULTS.items()]
    sets += [
        f"bootstrap.clean_data={realdata / 'coco_mini'}",
        "document_filters.languages=[]",
        f"images.allow_addresses=['127.0.0.1:{port}']",
        "spark.show_progress=false",
    ]
    return sets + list(extra)


def stage_table(run_dir: Path, stages: tuple[str, ...]) -> dict[str, dict]:
    out = {}
    for s in stages:
        p = run_dir / s / STATS
        if not p.is_file():
            continue
        st = json.loads(p.read_text())
        rejected = sum(st.get("rejected", {}).values())
        tables_ok = all(t.get("rows_in", 0) == t.get("rows_out", 0) + sum(t.get("rejected", {}).values())
                        for t in st.get("tables", {}).values())
        out[s] = {"seconds": st.get("seconds"), "rows_in": st.get("rows_in"), "rows_out": st.get("rows_out"),
                  "rejected": rejected, "conserved": st.get("rows_in") == st.get("rows_out", 0) + rejected and tables_ok,
                  "outputs": st.get("outputs", {})}
    return out


def run_scale(label: str, pages: int, work: Path, args: argparse.Namespace) -> dict:
    """Build the corpus, serve it, run ``curate run`` under the sampler; the scale's JSON block."""
    from curation.registry import stage_order
    from curation.sample.server import ImageServer

    port = free_port()
    cdir, rdir = work / f"{label}-corpus", work / f"{label}-run"
    t0 = time.perf_counter()
    corpus = build_corpus(cdir, CorpusConfig(pages=pages, seed=args.seed, port=port, realdata=str(args.realdata)))
    corpus_s = time.perf_counter() - t0
    log(f"{label}: corpus {corpus.pages} pages, {corpus.image_urls} image URLs in {corpus_s:.0f}s; running curate")
    if rdir.exists():
        shutil.rmtree(rdir)
    stages = stage_order()
    curate = [str(Path(sys.executable).with_name("curate"))]
    if not Path(curate[0]).exists():
        curate = [sys.executable, "-m", "curation"]
    cmd = curate + ["run", "--input", str(cdir / "warc"), "--out", str(rdir)]
    if args.master:
        cmd += ["--master", args.master]
    for s in run_overrides(port, Path(args.realdata), args.set):
        cmd += ["--set", s]
    logf = work / f"{label}-curate.log"
    with ImageServer(cdir / "images", host="127.0.0.1", port=port), open(logf, "w") as lf:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT, cwd=ROOT)
        sampler = Sampler(proc.pid, rdir, stages, interval=args.interval).start()
        rc = proc.wait()
        wall = time.perf_counter() - t0
        sampler.stop()
    table = stage_table(rdir, stages)
    block = {
        "pages": corpus.pages, "images": corpus.image_urls,
        "corpus": {"distinct_urls": corpus.distinct_urls, "near_duplicate_pages": corpus.near_duplicate_pages,
                   "image_occurrences": corpus.image_occurrences,
                   "repeated_image_occurrences": corpus.repeated_image_occurrences,
                   "exact_duplicate_images": corpus.exact_duplicate_images,
                   "near_duplicate_images": corpus.near_duplicate_images, "image_mb": round(corpus.image_bytes / 2**20, 1),
                   "warc_files": len(corpus.warc_files), "build_seconds": round(corpus_s, 1)},
        "returncode": rc, "wall_seconds": round(wall, 1),
        "driver_peak_rss_mb": round(sampler.peaks["driver"], 1),
        "worker_peak_rss_mb": round(sampler.peaks["worker"], 1),
        "workers_total_peak_rss_mb": round(sampler.peaks["workers_total"], 1),
        "jvm_peak_rss_mb": round(sampler.peaks["jvm"], 1),
        "peak_rss_mb_by_stage": {s: {k: round(v, 1) for k, v in d.items()} for s, d in sampler.by_stage.items()},
        "processes_seen": sampler.kinds_seen, "rss_samples": sampler.samples,
        "seconds": {s: t["seconds"] for s, t in table.items()},
        "rows": {s: {k: t[k] for k in ("rows_in", "rows_out", "rejected", "conserved")} for s, t in table.items()},
        "outputs": {s: t["outputs"] for s, t in table.items()},
        "all_conserved": bool(table) and all(t["conserved"] for t in table.values()),
        "log": str(logf),
    }
    if rc != 0:
        tail = logf.read_text(errors="replace").splitlines()[-15:]
        block["error_tail"] = tail
        log(f"{label}: curate run exited {rc}; log {logf}")
    if not args.keep:
        shutil.rmtree(rdir, ignore_errors=True)
        shutil.rmtree(cdir, ignore_errors=True)
    log(f"{label}: done in {wall:.0f}s, rc={rc}")
    return block


def growth(small: dict, big: dict, fixed: dict[str, float]) -> dict:
    """Largest scale over smallest: peak RSS ratios and per-stage time over linear above the fixed cost."""
    ratio_pages = big["pages"] / small["pages"]
    out = {"from": small["pages"], "to": big["pages"], "pages_ratio": round(ratio_pages, 2)}
    for k in ("driver_peak_rss_mb", "worker_peak_rss_mb", "jvm_peak_rss_mb"):
        if small.get(k):
            out[k.replace("_mb", "_ratio")] = round(big[k] / small[k], 3)
    per_stage = {}
    for s, t_big in big["seconds"].items():
        t_small = small["seconds"].get(s)
        if t_small is None or t_big is None:
            continue
        f = fixed.get(s, 0.0) or 0.0
        above_small, above_big = t_small - f, t_big - f
        per_stage[s] = {"time_ratio": round(t_big / t_small, 3) if t_small else None,
                        "above_fixed_over_linear": round(above_big / above_small / ratio_pages, 3) if above_small > 0 else None}
    out["stage_time"] = per_stage
    return out


def machine() -> dict:
    import psutil

    return {"cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "load_avg_1m_at_start": round(os.getloadavg()[0], 2), "python": sys.version.split()[0]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scales", type=int, nargs="*", default=[1, 4, 16])
    ap.add_argument("--base-pages", type=int, default=2000, help="pages at 1x")
    ap.add_argument("--fixed-pages", type=int, default=10, help="pages of the tiny run that measures fixed cost (0: skip)")
    ap.add_argument("--extract-fixed-cost", action="store_true", help="also run bench/fixed_cost.py's extract measurement")
    ap.add_argument("--work", default=None, help="work directory (default a temporary one under out/)")
    ap.add_argument("--keep", action="store_true", help="keep corpora and run directories")
    ap.add_argument("--realdata", default=os.environ.get("REALDATA_DIR", str(DEFAULT_REALDATA)))
    ap.add_argument("--master", default=None, help="Spark master (default: the config's local[*])")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--interval", type=float, default=0.2)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra curate --set (repeatable)")
    args = ap.parse_args(argv)
    work = Path(args.work or ROOT / "out" / "bench-scale")
    work.mkdir(parents=True, exist_ok=True)
    result: dict = {"bench": "scale", "machine": machine(), "base_pages": args.base_pages,
                    "config": {"overrides": run_overrides(0, Path(args.realdata), args.set)}, "scales": {}}
    t_start = time.perf_counter()
    fixed: dict[str, float] = {}
    if args.fixed_pages:
        tiny = run_scale("fixed", args.fixed_pages, work, args)
        fixed = {s: v for s, v in tiny["seconds"].items() if v is not None}
        result["fixed_cost"] = {"pages": tiny["pages"], "images": tiny["images"], "seconds": fixed,
                                "returncode": tiny["returncode"], "wall_seconds": tiny["wall_seconds"],
                                "driver_peak_rss_mb": tiny["driver_peak_rss_mb"], "rows": tiny["rows"]}
        if tiny["returncode"]:
            result["fixed_cost"]["error_tail"] = tiny.get("error_tail")
    if args.extract_fixed_cost:
        try:
            from bench.fixed_cost import fixed_cost_of_extract, make_warc

            ten = make_warc(Path(args.realdata), work / "fixed-cost" / "warc" / "ten.warc.gz", 10)
            result.setdefault("fixed_cost", {})["extract_10_records"] = fixed_cost_of_extract(
                ten, work / "fixed-cost", master=args.master or "local[2]")
        except Exception as exc:  # report it, do not lose the scale numbers
            result.setdefault("fixed_cost", {})["extract_10_records"] = {"error": repr(exc)}
    for s in args.scales:
        label = f"{s}x"
        result["scales"][label] = run_scale(label, args.base_pages * s, work, args)
        (work / "scale.partial.json").write_text(json.dumps(result, indent=1) + "\n")  # hours at 16x: keep what is done
    done = [b for b in result["scales"].values() if b["returncode"] == 0]
    if len(done) >= 2:
        result["growth"] = growth(done[0], done[-1], fixed)
    result["machine"]["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    result["total_seconds"] = round(time.perf_counter() - t_start, 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
