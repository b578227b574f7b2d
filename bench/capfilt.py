"""Benchmark: CapFilt's batched caption generation and ITM scoring against one image at a time.

Same captioner and filter, same images, same settings (BLIP's: nucleus top_p 0.9, 30/10 max/min
tokens, repetition penalty 1.1, prompt "a picture of "), same run: ``generate_captions`` with
``--batch-size`` images per ``generate()`` call against one image per call, and ``itm_scores``
over ``--captions-per-image`` captions per picture (the stage scores a picture's web caption and its
synthetic ones), each picture's vision tokens computed once and ``--batch-size`` (image, text)
pairs per text-encoder call, against one (image, text) pair per call. Pictures are decoded as the
stage decodes them (JPEG draft at the models' size). Target: batched >= 3x per-image. Trials alternate
(batched, per-image); each ratio is the median of the per-trial ratios, so a load change on a
shared machine between trials does not skew it; the load average is reported.

Models: ``--captioner``/``--filter`` (a ``curate train`` export, a ``bootstrap/models`` directory
or a Hugging Face id); default a ``tiny`` BLIP built from its config (random weights: speed does
not depend on them; an untrained captioner writes the full 30 tokens, the slow case). Images: the
80 real COCO images of ``shared/realdata/coco_mini`` (else the generated sample's pictures).

Generation goes through the stage's own path (``image_seeds``: each picture's sampling noise
seeded from the picture, so captions do not depend on the batch).

Usage: python bench/capfilt.py [--images 128] [--per-image 16] [--captions-per-image 2] [--batch-size 32]
                              [--device auto|cpu|cuda]
``--device auto`` (default) takes the GPU when one is present.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _images(realdata: str, n: int, draft: int | None = None) -> list:
    """``n`` decoded pictures, decoded as the stage decodes them (JPEG draft at the models' size)."""
    from models.data import decode_image

    files = sorted((Path(realdata) / "coco_mini" / "images").glob("*.jpg"))
    if not files:
        from curation.sample import generate_sample

        tmp = Path(tempfile.mkdtemp(prefix="bench-capfilt-"))
        generate_sample(str(tmp / "s"), n_pages=20)
        files = sorted((tmp / "s" / "images" / "content").glob("*.jpg"))
    return [decode_image(files[i % len(files)].read_bytes(), draft_size=draft) for i in range(n)]


def _tiny_models(out: Path, image_size: int):
    import torch
    from transformers import BlipForConditionalGeneration, BlipForImageTextRetrieval

    from curation.sample.text import COLOURS, SHAPES
    from models import blip as B

    torch.manual_seed(0)
    words = [f"{n} {c} {s} on a {bg} background" for n in ("one", "two", "three") for c in COLOURS for s in SHAPES
             for bg in ("white", "grey")]
    tok = B.build_tokenizer(words, out / "tok", vocab_size=500)
    cfg = B.tiny_blip_config(tok, "tiny", image_size=image_size)
    proc = B.make_processor(tok, image_size)
    cap = B.save_blip(BlipForConditionalGeneration(cfg), proc, out / "captioner", {"role": "captioner"})
    fil = B.save_blip(BlipForImageTextRetrieval(cfg), proc, out / "filter", {"role": "filter"})
    return cap, fil


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--realdata", default=os.environ.get("REALDATA_DIR", str(ROOT / ".." / "shared" / "realdata")))
    ap.add_argument("--captioner", default=None)
    ap.add_argument("--filter", default=None)
    ap.add_argument("--image-size", type=int, default=64, help="of the tiny models built when none is given")
    ap.add_argument("--device", default="auto", help="auto (cuda when present) | cpu | cuda | cuda:N")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--images", type=int, default=128, help="images captioned and scored batched")
    ap.add_argument("--captions-per-image", type=int, default=2,
                    help="ITM texts per picture (the stage scores the web caption and K=1 synthetic one)")
    ap.add_argument("--per-image", type=int, default=16, help="of those, how many go one at a time (slow)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--trials", type=int, default=5)
    args = ap.parse_args()

    import logging

    import numpy as np
    import torch

    logging.disable(logging.WARNING)
    from models.blip import generate_captions, itm_scores, load_captioner, load_filter
    from models.trainer import resolve_device
    from pipelines.dask_capfilt import _autocast, picture_seed

    args.device = resolve_device(args.device)

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-capfilt-models-"))
    if not (args.captioner and args.filter):
        cap_dir, fil_dir = _tiny_models(tmp, args.image_size)
    cap = load_captioner(args.captioner or cap_dir, args.device)
    filt = load_filter(args.filter or fil_dir, args.device)
    images = _images(args.realdata, args.images, max(cap.pixel_transform().size, filt.pixel_transform().size))
    few = images[:args.per_image]
    gen = dict(num_captions=1, top_p=0.9, max_length=30, min_length=10, repetition_penalty=1.1)
    # The stage's path: each picture's sampling noise seeded from the picture (dask_capfilt).
    seeds = [picture_seed(0, f"bench-{i}") for i in range(len(images))]
    # ITM as the stage scores it: several captions per picture, each picture's vision tokens once
    # (image_index), against one (picture, caption) pair per call.
    k = args.captions_per_image
    texts = [f"a photo of thing number {i} caption {c}" for i in range(len(images)) for c in range(k)]
    image_index = [i for i in range(len(images)) for _ in range(k)]
    few_pairs = [(few[i], texts[i * k + c]) for i in range(len(few)) for c in range(k)]
    generate_captions(cap, few[:2], batch_size=2, image_seeds=seeds[:2], **gen)  # warm-up
    itm_scores(filt, few[:2], texts[:2], batch_size=2)

    def timed(fn) -> float:
        if str(args.device).startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        with _autocast(args.device):  # bf16/fp16 on GPU, as the stage
            fn()
        if str(args.device).startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t

    trials = []
    for _ in range(args.trials):
        g_b = timed(lambda: generate_captions(cap, images, batch_size=args.batch_size, image_seeds=seeds, **gen))
        g_1 = timed(lambda: generate_captions(cap, few, batch_size=1, image_seeds=seeds[:len(few)], **gen))
        i_b = timed(lambda: itm_scores(filt, images, texts, image_index, batch_size=args.batch_size))
        i_1 = timed(lambda: [itm_scores(filt, [im], [t], batch_size=1) for im, t in few_pairs])
        trials.append({"captions_per_s_batched": len(images) / g_b, "captions_per_s_per_image": len(few) / g_1,
                       "itm_pairs_per_s_batched": len(texts) / i_b, "itm_pairs_per_s_per_pair": len(few_pairs) / i_1})
    med = {k: round(statistics.median(t[k] for t in trials), 2) for k in trials[0]}
    gen_ratio = statistics.median(t["captions_per_s_batched"] / t["captions_per_s_per_image"] for t in trials)
    itm_ratio = statistics.median(t["itm_pairs_per_s_batched"] / t["itm_pairs_per_s_per_pair"] for t in trials)
    sample_caps = generate_captions(cap, images[:2], batch_size=2, image_seeds=seeds[:2], **gen)
    print(json.dumps({
        "bench": "capfilt",
        "device": args.device, "gpu_measured": str(args.device).startswith("cuda"),
        "captioner": args.captioner or f"tiny BLIP from config ({args.image_size}px, random weights)",
        "filter": args.filter or f"tiny BLIP from config ({args.image_size}px, random weights)",
        "batch_size": args.batch_size, "images_batched": len(images), "images_per_image": len(few),
        "itm_captions_per_image": k,
        **med,
        "generation_speedup": round(gen_ratio, 2), "itm_speedup": round(itm_ratio, 2),
        "target_speedup": 3.0, "meets_target": bool(gen_ratio >= 3 and itm_ratio >= 3),
        "trials": args.trials, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2), "machine": platform.machine(),
        "example_tokens": int(np.mean([len(c[0].split()) for c in sample_caps])),
    }))


if __name__ == "__main__":
    main()
