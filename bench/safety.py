"""Benchmark: the safety layer's cost beside the score stage's own image encoding (images/s).

Three timings on the same real COCO images, in one process, alternating per trial:

- ``score``: ``ClipScorer.encode_images`` on the encoded JPEG bytes (decode + preprocess in loader
  threads + the image tower), the score stage's phase 1 hot path (ViT-B-32, random weights: weights
  do not change speed);
- ``heads``: LAION's NSFW and aesthetic heads for that CLIP on the embeddings it produced
  (``SafetyHeads.score``: what the stage adds per pairs shard);
- ``faces``: ``models.faces.detect_faces`` on the same bytes (its own grey decode + the cascade, in
  threads: what phase 1 adds when ``safety.faces`` is on), with the default ``FaceSettings``;
- ``faces_before``: the same with the settings used before they were tuned on the labelled split
  (400 px, scaleFactor 1.1, minNeighbors 3, minSize 16), for the before/after in one run.

Reported: images/s (wall clock) and CPU seconds per image (``process_time``, all threads; on a
machine shared with other work this is the figure that does not depend on the load), and each
safety step's cost as a fraction of the score encode. Target (issue 15): the safety scores
< 10% of the score stage on CPU (the heads; and the faces, which the issue's list of overheads names).

Usage: python bench/safety.py [--model ViT-B-32] [--images 64] [--trials 3] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--realdata", default=os.environ.get("REALDATA_DIR", str(ROOT / ".." / "shared" / "realdata")))
    ap.add_argument("--model", default="ViT-B-32", choices=["ViT-B-32", "ViT-L-14"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--loader-threads", type=int, default=2)
    ap.add_argument("--face-threads", type=int, default=2)
    ap.add_argument("--trials", type=int, default=3)
    args = ap.parse_args()

    import logging

    logging.disable(logging.WARNING)
    import numpy as np

    from models.clip import load_clip
    from models.faces import FaceSettings, detect_faces
    from models.safety_heads import SafetyHeads, resolve_heads
    from models.scoring import ClipScorer

    realdata = Path(args.realdata)
    files = sorted((realdata / "coco_mini" / "images").glob("*.jpg"))
    blobs = [files[i % len(files)].read_bytes() for i in range(args.images)]
    scorer = ClipScorer(load_clip(args.model, None, args.device), args.batch_size, args.loader_threads)
    heads = SafetyHeads.load(resolve_heads(args.model, "openai", str(realdata / "clip_heads")))
    settings = FaceSettings(threads=args.face_threads)
    before = FaceSettings(max_side=400, scale_factor=1.1, min_neighbors=3, min_size=16, threads=args.face_threads)
    scorer.encode_images(blobs[: args.batch_size])  # warm-up
    detect_faces(blobs[:4], settings)

    rows = {"score": [], "heads": [], "faces": [], "faces_before": []}
    for _ in range(args.trials):
        res, w, c = _timed(lambda: scorer.encode_images(blobs))
        rows["score"].append((w, c))
        _, w, c = _timed(lambda: heads.score(res.embeddings, res.ok))
        rows["heads"].append((w, c))
        dets, w, c = _timed(lambda: detect_faces(blobs, settings))
        rows["faces"].append((w, c))
        dets_before, w, c = _timed(lambda: detect_faces(blobs, before))
        rows["faces_before"].append((w, c))
    n = len(blobs)

    def summary(name):
        wall = statistics.median(w for w, _ in rows[name])
        cpu = statistics.median(c for _, c in rows[name])
        return {"images_per_s": round(n / wall, 1), "cpu_s_per_image": round(cpu / n, 6)}

    out = {k: summary(k) for k in rows}
    for k in ("heads", "faces", "faces_before"):
        out[k]["fraction_of_score_wall"] = round(statistics.median(
            a[0] / b[0] for a, b in zip(rows[k], rows["score"])), 4)
        out[k]["fraction_of_score_cpu"] = round(statistics.median(
            a[1] / b[1] for a, b in zip(rows[k], rows["score"])), 4)
    print(json.dumps({
        "bench": "safety", "model": args.model, "device": args.device, "images": n, "trials": args.trials,
        "batch_size": args.batch_size, "loader_threads": args.loader_threads, "face_threads": args.face_threads,
        **out,
        "heads_target_met": out["heads"]["fraction_of_score_cpu"] < 0.10,
        "faces_target_met": out["faces"]["fraction_of_score_cpu"] < 0.10,
        "face_settings": asdict(settings),
        "images_with_faces": int(sum(1 for d in dets if d)),
        "images_with_faces_before": int(sum(1 for d in dets_before if d)),
        "machine": {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2), "python": platform.python_version()},
        "embedding_dim": int(np.asarray(res.embeddings).shape[1]),
    }, indent=1))


if __name__ == "__main__":
    main()
