"""Benchmark: the images stage's driver memory as the kept images grow (issue 13's measurement, repeated).

For each size N: N distinct 640x480 JPEGs (~270 KB each: a random 8x6 colour field upsampled, so
every pHash is its own, plus noise for the size; all pass the filters and none is a duplicate) are
written once under ``--workdir`` and served by ``python -m http.server`` in a separate process (so
the bytes the server holds are not counted). Inputs: one pair per image, one document per 10
images. The whole stage (``StageRunner`` + ``ImageStage``: fetch with img2dataset, then the Spark
steps) runs in a fresh Python process per size, with ``spark.master=local[2]``.

Measured in that process: the Python driver's peak RSS (``ru_maxrss``, exact) and, sampled every
0.1 s with psutil, the peak RSS of the Spark JVM it starts (its child ``java`` process: in local mode
the JVM is the executor too, bounded by ``spark.driver.memory``) and of img2dataset's fetch workers.
Also the bytes on disk of each output folder, divided by the kept images' own bytes.

Prints one JSON object: per size, ``images``, ``kept``, ``seconds``, ``driver_peak_rss_mb``,
``jvm_peak_rss_mb``, ``fetch_workers_peak_rss_mb``, ``disk_bytes_per_kept_image_bytes`` (per output
and in all); and ``driver_rss_ratio`` (largest size over smallest; target <= 1.5).

Usage: python bench/images_scale.py [--sizes 40,6150] [--workdir /tmp/bench-images-scale]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

WIDTH, HEIGHT = 640, 480


def _make(args: tuple[Path, int]) -> int:
    import numpy as np
    from PIL import Image

    path, i = args
    if path.exists():
        return path.stat().st_size
    rng = np.random.default_rng(i)
    low = rng.integers(0, 256, (6, 8, 3)).astype(np.uint8)
    base = np.asarray(Image.fromarray(low).resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC), dtype=np.int16)
    noise = rng.integers(-60, 61, (HEIGHT, WIDTH, 3), dtype=np.int16)
    buf = io.BytesIO()
    Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=95)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.rename(path)
    return len(buf.getvalue())


def make_images(folder: Path, n: int) -> int:
    """``folder/NNNNNN.jpg`` for i < n (kept between runs); their total bytes."""
    from multiprocessing import Pool

    folder.mkdir(parents=True, exist_ok=True)
    with Pool(max(1, min(4, os.cpu_count() or 1))) as pool:
        return sum(pool.map(_make, [(folder / f"{i:06d}.jpg", i) for i in range(n)], chunksize=64))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


class Sampler(threading.Thread):
    """Peak RSS of this process's descendants, by kind (the Spark JVM, everything else)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = {"jvm": 0, "workers": 0}
        self._halt = threading.Event()

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._halt.wait(0.1):
            jvm = workers = 0
            for child in me.children(recursive=True):
                try:
                    rss = child.memory_info().rss
                    if "java" in child.name():
                        jvm += rss
                    else:
                        workers += rss
                except psutil.Error:
                    continue
            self.peak["jvm"] = max(self.peak["jvm"], jvm)
            self.peak["workers"] = max(self.peak["workers"], workers)

    def stop(self) -> dict[str, int]:
        self._halt.set()
        self.join()
        return self.peak


def run_one(n: int, workdir: Path) -> dict:
    """One size, in this (fresh) process: the stage over N served images."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curation.config import PipelineConfig
    from curation.schemas import DOCUMENTS, PAIRS
    from curation.stage import StageRunner
    from pipelines.images import ImageStage

    images = workdir / "images"
    image_bytes = sum((images / f"{i:06d}.jpg").stat().st_size for i in range(n))
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                               "--directory", str(images)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = workdir / f"run-{n}"
    subprocess.run(["rm", "-rf", str(run)], check=True)
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        urls = [f"http://127.0.0.1:{port}/{i:06d}.jpg" for i in range(n)]
        docs = []
        for d in range(0, n, 10):
            texts, imgs, meta = [], [], []
            for u in urls[d:d + 10]:
                texts += [f"paragraph before {u}", None]
                imgs += [None, u]
                meta += [None, {"src": u, "alt_text": "a picture"}]
            docs.append({"doc_id": f"d{d:06d}", "url": f"https://site.example/{d}", "texts": texts, "images": imgs,
                         "metadata": json.dumps(meta), "general_metadata": "{}", "lang": "en", "lang_score": 0.99})
        pairs = [{"key": f"p{i:06d}", "url": u, "caption": f"a picture number {i}", "caption_source": "alt",
                  "page_url": f"https://site.example/{i - i % 10}", "doc_id": f"d{i - i % 10:06d}"}
                 for i, u in enumerate(urls)]
        inputs = {}
        for name, rows, schema in (("documents", docs, DOCUMENTS), ("pairs", pairs, PAIRS)):
            (run / "dedup" / name).mkdir(parents=True)
            pq.write_table(pa.Table.from_pylist(rows, schema=schema), run / "dedup" / name / "part-0.parquet")
            inputs[name] = str(run / "dedup" / name)
        del docs, pairs, urls
        cfg = PipelineConfig.load(None, {"out": str(run), "snapshot": "local", "spark.master": "local[2]",
                                         "spark.show_progress": False, "images.processes": 2,
                                         "images.threads_per_process": 16, "images.timeout": 30.0,
                                         "images.allow_addresses": [f"127.0.0.1:{port}"]})
        sampler = Sampler()
        sampler.start()
        t0 = time.perf_counter()
        stats = StageRunner(str(run), cfg).run(ImageStage(), inputs)
        seconds = time.perf_counter() - t0
        peak = sampler.stop()
    finally:
        server.terminate()
        server.wait()
    disk = {k: _du(run / "images" / k) for k in ("images", "pairs", "documents", "webdataset")}
    out = {
        "images": n, "kept": stats.rows_out, "rejected": stats.rejected, "seconds": round(seconds, 1),
        "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "jvm_peak_rss_mb": round(peak["jvm"] / 2**20), "fetch_workers_peak_rss_mb": round(peak["workers"] / 2**20),
        "kept_image_mb": round(image_bytes / 2**20, 1),
        "disk_bytes_per_kept_image_bytes": {k: round(v / image_bytes, 2) for k, v in disk.items()}
        | {"all": round(sum(disk.values()) / image_bytes, 2)},
    }
    subprocess.run(["rm", "-rf", str(run)], check=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="40,6150")
    ap.add_argument("--workdir", default="/tmp/bench-images-scale")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child: one size
    args = ap.parse_args()
    workdir = Path(args.workdir)
    if args.one:
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(2, 1)  # img2dataset and Spark print on stdout: only the JSON goes there
        try:
            res = run_one(args.one, workdir)
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
        print(json.dumps(res))
        return
    sizes = [int(s) for s in args.sizes.split(",") if s]
    make_images(workdir / "images", max(sizes))
    results = {}
    for n in sizes:
        proc = subprocess.run([sys.executable, __file__, "--one", str(n), "--workdir", str(workdir)],
                              stdout=subprocess.PIPE, text=True, check=True)
        results[str(n)] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(json.dumps({n: results[str(n)]}), file=sys.stderr)
    lo, hi = results[str(min(sizes))], results[str(max(sizes))]
    print(json.dumps({"sizes": results, "driver_rss_ratio": round(hi["driver_peak_rss_mb"] / lo["driver_peak_rss_mb"], 2),
                      "jvm_rss_ratio": round(hi["jvm_peak_rss_mb"] / max(1, lo["jvm_peak_rss_mb"]), 2),
                      "image": f"{WIDTH}x{HEIGHT} JPEG q95, ~270 KB", "spark_master": "local[2]"}, indent=1))


if __name__ == "__main__":
    main()
