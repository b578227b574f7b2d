"""Benchmark: training throughput with the streaming loader against tensors already in memory.

Same model, same optimizer step, same batches: once pulled from ``PairStream.loader()`` (Parquet
row groups read, JPEG/PNG/WebP decoded and transformed in DataLoader worker processes, shuffle
buffer), once from a list of batches decoded before timing. The ratio of samples/s says whether
the loader keeps up with the model (target >= 0.8). Rounds alternate between the two so load
from other processes hits both alike; the median of each is reported, with the loader's own
rate (batches pulled with no model) and the machine's load average: on a CPU the workers and the
model share the cores, so a loaded machine lowers the ratio without the loader being the limit.

Data: the sample mini-crawl's web pairs (IMAGE_PAIRS Parquet built from its ground truth).

Usage: python bench/train.py [--device auto|cpu|cuda] [--model vlc-tiny-clip] [--batch-size 64]
       [--steps 20] [--rounds 3] [--workers 1] [--threads 0]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build_data(tmp: Path) -> Path:
    import pyarrow.parquet as pq

    from curation.sample import generate_sample
    from models.sample_pairs import web_pairs

    generate_sample(str(tmp / "sample"), n_pages=300, seed=0)
    table = web_pairs(tmp / "sample")
    out = tmp / "pairs"
    out.mkdir()
    n = table.num_rows
    for i in range(4):
        pq.write_table(table.slice(i * n // 4, (i + 1) * n // 4 - i * n // 4), out / f"part-{i:05d}.parquet",
                       row_group_size=64)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto", help="auto (cuda when present) | cpu | cuda | cuda:N")
    ap.add_argument("--model", default="vlc-tiny-clip")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per round")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="training threads (0: cores left after the workers)")
    args = ap.parse_args()

    import torch

    from models.clip_train import ClipTask
    from models.data import LoaderState, PairStream, open_sources
    from models.train_config import TrainConfig
    from models.trainer import _move, autocast_dtype, resolve_device, seed_everything

    device = resolve_device(args.device)
    threads = args.threads or max(1, (os.cpu_count() or 1) - args.workers)
    torch.set_num_threads(threads)
    cfg = TrainConfig(model=args.model, batch_size=args.batch_size, num_workers=args.workers, device=device)
    with tempfile.TemporaryDirectory() as tmpdir:
        data = build_data(Path(tmpdir))
        sources = open_sources(str(data))
        seed_everything(0)
        task = ClipTask()
        task.setup(cfg, sources, Path(tmpdir), device)
        model = task.module().train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        amp_dtype, _ = autocast_dtype("auto", device)

        def step(batch) -> None:
            b = _move(batch, device)
            ctx = torch.autocast(device.split(":")[0], dtype=amp_dtype) if amp_dtype is not None else _Null()
            with ctx:
                loss, _ = task.loss(b, device)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if device.startswith("cuda"):
                torch.cuda.synchronize()

        stream = PairStream(sources, args.batch_size, task.image_transform(), task.text_transform(), seed=0,
                            shuffle_buffer=256, rows_per_unit=64, num_workers=args.workers, draft_size=task.draft_size())
        n = args.warmup + args.steps
        in_memory = [b for _, b in zip(range(n), iter(stream))]  # decoded before any timing

        def run_memory() -> float:
            for b in in_memory[:args.warmup]:
                step(b)
            t0 = time.perf_counter()
            for b in in_memory[args.warmup:]:
                step(b)
            return args.steps * args.batch_size / (time.perf_counter() - t0)

        state = LoaderState.fresh(stream.streams_per_rank)

        def run_streaming() -> float:
            # A fresh DataLoader per round, continuing where the last one stopped (worker start-up is in
            # the warm-up steps, as it is once per training run).
            it = iter(stream.loader(state))
            for _ in range(args.warmup):
                b = next(it)
                state.advance(b)
                step(b)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                b = next(it)
                state.advance(b)
                step(b)
            rate = args.steps * args.batch_size / (time.perf_counter() - t0)
            del it
            return rate

        def run_loader_only() -> float:
            # The loader's own capacity: batches pulled as fast as the workers make them, no model.
            it = iter(stream.loader(LoaderState.fresh(stream.streams_per_rank)))
            for _ in range(args.warmup):
                next(it)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                next(it)
            rate = args.steps * args.batch_size / (time.perf_counter() - t0)
            del it
            return rate

        mem, streaming, loader_only = [], [], []
        for _ in range(args.rounds):
            mem.append(run_memory())
            streaming.append(run_streaming())
            loader_only.append(run_loader_only())
    m, s = statistics.median(mem), statistics.median(streaming)
    print(json.dumps({
        "benchmark": "train_loader_throughput",
        "device": device,
        "gpu_measured": device.startswith("cuda"),
        "model": args.model,
        "batch_size": args.batch_size,
        "loader_workers": args.workers,
        "train_threads": threads,
        "timed_steps_per_round": args.steps,
        "rounds": args.rounds,
        "streaming_samples_per_s": round(s, 1),
        "in_memory_samples_per_s": round(m, 1),
        "ratio_streaming_over_in_memory": round(s / m, 3),
        "target_ratio": 0.8,
        "loader_only_samples_per_s": round(statistics.median(loader_only), 1),
        "rounds_streaming": [round(x, 1) for x in streaming],
        "rounds_in_memory": [round(x, 1) for x in mem],
        "skipped_rows": state.skipped,
        "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }, indent=1))


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    main()
