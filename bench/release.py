"""Release stage throughput and driver memory: synthetic final pairs -> open_clip tars + HF shards.

Builds ``--pairs`` BOOTSTRAPPED_PAIRS rows (small JPEGs) in a child process, then runs the release
stage (pairs_wds + hf) on Dask in this one and prints JSON: pairs/s and this (driver) process's peak
RSS, which should not grow with ``--pairs`` (the driver holds counts and file names, not rows).

    .venv/bin/python bench/release.py --pairs 20000
    .venv/bin/python bench/release.py --pairs 80000
"""
from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import resource
import tempfile
import time
from pathlib import Path

PER_FILE = 5000


def build(root: str, n: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from curation.schemas import BOOTSTRAPPED_PAIRS

    rng = np.random.default_rng(0)
    imgs = []
    for _ in range(64):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, "JPEG", quality=80)
        imgs.append(buf.getvalue())
    out = Path(root) / "capfilt" / "pairs"
    out.mkdir(parents=True)
    for f in range(0, n, PER_FILE):
        rows = [dict(key=f"d{i}-0", url=f"http://x.test/{i}.jpg", caption=f"caption {i}", caption_source="alt",
                     page_url=f"http://p.test/{i}", doc_id=f"d{i}", image=imgs[i % 64], width=32, height=32,
                     image_key=f"d{i}-0", itm_score=0.9, caption_model="web") for i in range(f, min(n, f + PER_FILE))]
        schema = pa.schema([fl for fl in BOOTSTRAPPED_PAIRS if fl.name in rows[0]])
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), out / f"part-{f // PER_FILE:05d}.parquet",
                       row_group_size=1000)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=20000)
    ap.add_argument("--samples-per-shard", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    from curation.config import PipelineConfig
    from curation.stage import StageContext
    from pipelines.release import ReleaseStage

    with tempfile.TemporaryDirectory() as root:
        child = mp.get_context("spawn").Process(target=build, args=(root, args.pairs))
        child.start()
        child.join()
        cfg = PipelineConfig.load(overrides={
            "out": root, "dask.n_workers": args.workers, "release.samples_per_shard": args.samples_per_shard,
            "release.shard_rows": PER_FILE, "release.formats": ["pairs_wds", "hf"]})
        ctx = StageContext(stage_dir=f"{root}/release", inputs={"pairs": f"{root}/capfilt/pairs"}, config=cfg,
                           run_id="bench")
        start = time.perf_counter()
        stats = ReleaseStage().run(ctx)
        seconds = time.perf_counter() - start
    print(json.dumps({"pairs": args.pairs, "released": stats.rows_out, "tars": stats.counters["pair_shards"],
                      "workers": args.workers, "seconds": round(seconds, 1), "pairs_per_s": round(args.pairs / seconds),
                      "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))


if __name__ == "__main__":
    main()
