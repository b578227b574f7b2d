"""Benchmark: the images stage's fetch path against img2dataset alone, same URLs, same run.

A loopback HTTP server (in this process) serves JPEG payloads: the real COCO images of
``realdata/coco_mini`` re-encoded at a few scales (or synthetic pictures when the real
data is absent), each under several URLs. Both contenders fetch the same URL list with
the same processes, threads and shard size, alternating, ``--rounds`` times each:

* ``img2dataset``: ``img2dataset.download`` with ``resize_mode="no"``,
  ``skip_reencode=True`` (keep the original bytes; img2dataset still decodes each
  image with OpenCV to check it), sha256, Parquet output: the library on its own;
* ``stage``: :func:`pipelines.images.fetch_and_filter`: the same img2dataset machinery
  with the checked opener, header checks before decoding, a full PIL decode, pHash,
  sha256, then exact and near duplicates in the driver.

* ``stage_robots``: the same with ``safety.honour_robots_txt`` (:class:`curation.robots.RobotsCache`,
  a fresh cache each round: every host's ``/robots.txt`` is requested, 16 threads, before the fetch).
  The URLs are spread over ``--hosts`` loopback servers (one origin each, as many image hosts as a
  crawl slice has); each answers ``/robots.txt`` after ``--robots-delay`` seconds (a network round
  trip a loopback server does not have) with rules that allow every image path.

Prints one JSON object: images/s (URLs fetched, decoded and filtered per second of wall
time, median of the rounds) for each, and their ratio (target >= 0.9); also the rate inside
the worker processes from img2dataset's per-shard stats (no process start-up, no driver
work), the like-for-like cost of the per-image work. ``img2dataset.download`` also runs its
logger process, which the stage does not start. The stage has no GPU path; ``--device`` is
accepted for uniformity and recorded.

Usage: python bench/images.py [--urls 1500] [--rounds 3] [--processes 2] [--threads 16] [--hosts 1]
       [--robots-delay 0.1] [--contenders img2dataset,stage,stage_robots]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def payloads(realdata: Path, scales=(1.0, 0.75, 0.5)) -> tuple[list[bytes], str]:
    from PIL import Image

    files = sorted((realdata / "coco_mini" / "images").glob("*.jpg"))
    out = []
    if files:
        for f in files:
            im = Image.open(f).convert("RGB")
            for s in scales:
                w, h = int(im.width * s), int(im.height * s)
                buf = io.BytesIO()
                im.resize((w, h), Image.Resampling.BILINEAR).save(buf, "JPEG", quality=90)
                out.append(buf.getvalue())
        return out, f"coco_mini ({len(files)} real photos x {len(scales)} scales)"
    from tests.support.image_payloads import jpeg

    return [jpeg(640, 480, seed=s) for s in range(240)], "synthetic 640x480"


def shard_rate(folder: Path) -> tuple[int, float]:
    """(images, seconds) summed over img2dataset's per-shard stats: the work inside the workers,
    without process start-up."""
    n, secs = 0, 0.0
    for f in folder.rglob("*_stats.json"):
        st = json.loads(f.read_text())
        n += st["count"]
        secs += st["duration"]
    return n, secs


def run_img2dataset(url_parquet: str, out: str, args) -> float:
    import img2dataset

    start = time.perf_counter()
    img2dataset.download(
        url_list=url_parquet, input_format="parquet", url_col="url", output_folder=out, output_format="parquet",
        processes_count=args.processes, thread_count=args.threads, number_sample_per_shard=args.shard,
        resize_mode="no", skip_reencode=True, encode_format="jpg", extract_exif=False, compute_hash="sha256",
        timeout=10, incremental_mode="incremental", enable_wandb=False,  # "overwrite" deletes its own _tmp
    )
    return time.perf_counter() - start


def run_stage(urls: list[str], out: str, allow: tuple[str, ...], args, robots: bool = False) -> tuple[float, dict]:
    from curation.config import ImagesConfig
    from curation.robots import RobotsCache
    from filters.config import ImageFilterConfig
    from pipelines.images import fetch_and_filter, make_policy

    class TimedRobots(RobotsCache):
        """The stage's robots.txt cache, timing its own two steps (the fetch per host, the verdict per URL)."""

        seconds = 0.0

        def prefetch(self, urls):
            t0 = time.perf_counter()
            try:
                return super().prefetch(urls)
            finally:
                self.seconds += time.perf_counter() - t0

        def verdict(self, url):
            t0 = time.perf_counter()
            try:
                return super().verdict(url)
            finally:
                self.seconds += time.perf_counter() - t0

    images_cfg = ImagesConfig(processes=args.processes, threads_per_process=args.threads, urls_per_shard=args.shard,
                              timeout=10.0, distributor="multiprocessing")
    filter_cfg = ImageFilterConfig()
    start = time.perf_counter()
    policy = make_policy(images_cfg, filter_cfg, allow)
    cache = TimedRobots(policy, images_cfg.user_agent_token or "img2dataset", images_cfg.timeout) if robots else None
    decisions = fetch_and_filter(urls, out, policy, filter_cfg, images_cfg, robots=cache)
    elapsed = time.perf_counter() - start
    return elapsed, {"kept": decisions.kept.num_rows, "rejected": dict(decisions.reasons()),
                     **({"robots_txt_fetched": len(cache.rules), "robots_seconds": round(cache.seconds, 3)}
                        if cache is not None else {})}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--realdata", default=os.environ.get("REALDATA_DIR", str(ROOT / ".." / "shared" / "realdata")))
    ap.add_argument("--urls", type=int, default=1500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--shard", type=int, default=250, help="URLs per shard")
    ap.add_argument("--device", default="cpu", help="recorded only: the images stage does not use a GPU")
    ap.add_argument("--hosts", type=int, default=1, help="loopback servers (origins) the URLs are spread over")
    ap.add_argument("--robots-delay", type=float, default=0.1, help="seconds each /robots.txt answer waits")
    ap.add_argument("--warmup", type=int, default=1, help="1: one untimed stage run on 50 URLs first")
    ap.add_argument("--contenders", default="img2dataset,stage", help="add stage_robots for the robots.txt overhead")
    args = ap.parse_args()

    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.support.image_payloads import Route, ScriptedServer

    # img2dataset and its worker processes print progress on stdout: send fd 1 to stderr while they
    # run, so stdout carries only the JSON object.
    sys.stdout.flush()
    saved_stdout = os.dup(1)
    os.dup2(2, 1)
    bodies, source = payloads(Path(args.realdata))
    work = Path(tempfile.mkdtemp(prefix="bench-images-"))
    contenders = [c for c in args.contenders.split(",") if c]
    times: dict[str, list[float]] = {c: [] for c in contenders}
    worker: dict[str, list[float]] = {c: [] for c in contenders}
    outcome: dict[str, dict] = {}
    robots_s: list[float] = []  # wall seconds inside the robots.txt step, per stage_robots round
    robots_txt = Route(b"User-agent: *\nDisallow: /private/\n", delay=args.robots_delay, content_type="text/plain")
    servers = [ScriptedServer({"/robots.txt": robots_txt}) for _ in range(max(1, args.hosts))]
    try:
        with contextlib.ExitStack() as stack:
            for server in servers:
                stack.enter_context(server)
            urls = []
            for i in range(args.urls):
                path = f"/img/{i:06d}.jpg"
                server = servers[i % len(servers)]
                server.routes[path] = Route(bodies[i % len(bodies)])
                urls.append(server.url(path))
            urls.sort()
            allow = tuple(s.allow for s in servers)
            url_parquet = str(work / "urls.parquet")
            pq.write_table(pa.table({"url": urls}), url_parquet)
            if args.warmup and any(c != "img2dataset" for c in contenders):  # imports, first pool start: untimed
                run_stage(urls[: min(len(urls), 50)], str(work / "warmup"), allow, args)
                shutil.rmtree(work / "warmup", ignore_errors=True)
            for r in range(args.rounds):
                for name in (contenders if r % 2 == 0 else contenders[::-1]):
                    out = str(work / f"{name}-{r}")
                    if name == "img2dataset":
                        times[name].append(run_img2dataset(url_parquet, out, args))
                    else:
                        elapsed, outcome[name] = run_stage(urls, out, allow, args, robots=name == "stage_robots")
                        times[name].append(elapsed)
                        if name == "stage_robots":
                            robots_s.append(outcome[name]["robots_seconds"])
                    n, secs = shard_rate(Path(out))
                    worker[name].append(n / secs if secs else 0.0)
                    shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        sys.stdout.flush()
        os.dup2(saved_stdout, 1)
        os.close(saved_stdout)

    med = {k: statistics.median(v) for k, v in times.items()}
    rate = {k: round(args.urls / v, 1) for k, v in med.items()}
    result: dict = {}
    if "img2dataset" in rate and "stage" in rate:
        result = {
            "img2dataset_images_per_s": rate["img2dataset"],
            "stage_images_per_s": rate["stage"],
            "ratio_stage_vs_img2dataset": round(rate["stage"] / rate["img2dataset"], 3),
            # per worker process, from img2dataset's per-shard stats (no start-up, no driver work)
            "img2dataset_worker_images_per_s": round(statistics.median(worker["img2dataset"]), 1),
            "stage_worker_images_per_s": round(statistics.median(worker["stage"]), 1),
            "target_ratio": 0.9,
        }
    if "stage" in rate and "stage_robots" in rate:  # safety.honour_robots_txt on vs off, same run
        result["robots_txt"] = {
            "stage_images_per_s_off": rate["stage"], "stage_images_per_s_on": rate["stage_robots"],
            "overhead_fraction": round(med["stage_robots"] / med["stage"] - 1, 3),
            "overhead_per_round_s": [round(a - b, 2) for a, b in zip(times["stage_robots"], times["stage"])],
            # the step itself, timed inside the run: what the difference above measures under load noise
            "robots_step_s": robots_s,
            "robots_step_fraction_of_stage": round(statistics.median(robots_s) / med["stage_robots"], 4),
            "hosts": len(servers), "robots_delay_s": args.robots_delay,
        }
    print(json.dumps({
        "bench": "images",
        "urls": args.urls,
        "distinct_payloads": len(bodies),
        "payloads": source,
        "processes": args.processes,
        "threads_per_process": args.threads,
        "urls_per_shard": args.shard,
        "rounds": args.rounds,
        "hosts": len(servers),
        **result,
        "seconds": {k: [round(x, 2) for x in v] for k, v in times.items()},
        "stage_outcome": outcome,
        "device": args.device,
        "gpu": "not measured (the images stage has no GPU path)",
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }, indent=1))


if __name__ == "__main__":
    main()
