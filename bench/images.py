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

Prints one JSON object: images/s (URLs fetched, decoded and filtered per second of wall
time, median of the rounds) for each, and their ratio (target >= 0.9); also the rate inside
the worker processes from img2dataset's per-shard stats (no process start-up, no driver
work), the like-for-like cost of the per-image work. ``img2dataset.download`` also runs its
logger process, which the stage does not start. The stage has no GPU path; ``--device`` is
accepted for uniformity and recorded.

Usage: python bench/images.py [--urls 1500] [--rounds 3] [--processes 2] [--threads 16]
"""
from __future__ import annotations

import argparse
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


def run_stage(urls: list[str], out: str, allow: str, args) -> tuple[float, dict]:
    from curation.config import ImagesConfig
    from filters.config import ImageFilterConfig
    from pipelines.images import fetch_and_filter, make_policy

    images_cfg = ImagesConfig(processes=args.processes, threads_per_process=args.threads, urls_per_shard=args.shard,
                              timeout=10.0, distributor="multiprocessing")
    filter_cfg = ImageFilterConfig()
    start = time.perf_counter()
    decisions = fetch_and_filter(urls, out, make_policy(images_cfg, filter_cfg, (allow,)), filter_cfg, images_cfg)
    elapsed = time.perf_counter() - start
    return elapsed, {"kept": decisions.kept.num_rows, "rejected": dict(decisions.reasons())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--realdata", default=os.environ.get("REALDATA_DIR", str(ROOT / ".." / "shared" / "realdata")))
    ap.add_argument("--urls", type=int, default=1500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--shard", type=int, default=250, help="URLs per shard")
    ap.add_argument("--device", default="cpu", help="recorded only: the images stage does not use a GPU")
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
    times: dict[str, list[float]] = {"img2dataset": [], "stage": []}
    worker: dict[str, list[float]] = {"img2dataset": [], "stage": []}
    outcome = {}
    try:
        with ScriptedServer() as server:
            urls = []
            for i in range(args.urls):
                path = f"/img/{i:06d}.jpg"
                server.routes[path] = Route(bodies[i % len(bodies)])
                urls.append(server.url(path))
            urls.sort()
            url_parquet = str(work / "urls.parquet")
            pq.write_table(pa.table({"url": urls}), url_parquet)
            for r in range(args.rounds):
                for name in (("img2dataset", "stage") if r % 2 == 0 else ("stage", "img2dataset")):
                    out = str(work / f"{name}-{r}")
                    if name == "img2dataset":
                        times[name].append(run_img2dataset(url_parquet, out, args))
                    else:
                        elapsed, outcome = run_stage(urls, out, server.allow, args)
                        times[name].append(elapsed)
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
    print(json.dumps({
        "bench": "images",
        "urls": args.urls,
        "distinct_payloads": len(bodies),
        "payloads": source,
        "processes": args.processes,
        "threads_per_process": args.threads,
        "urls_per_shard": args.shard,
        "rounds": args.rounds,
        "img2dataset_images_per_s": rate["img2dataset"],
        "stage_images_per_s": rate["stage"],
        "ratio_stage_vs_img2dataset": round(rate["stage"] / rate["img2dataset"], 3),
        # per worker process, from img2dataset's per-shard stats (no start-up, no driver work)
        "img2dataset_worker_images_per_s": round(statistics.median(worker["img2dataset"]), 1),
        "stage_worker_images_per_s": round(statistics.median(worker["stage"]), 1),
        "target_ratio": 0.9,
        "seconds": {k: [round(x, 2) for x in v] for k, v in times.items()},
        "stage_outcome": outcome,
        "device": args.device,
        "gpu": "not measured (the images stage has no GPU path)",
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }, indent=1))


if __name__ == "__main__":
    main()
