"""The thin trainer: one loop for CLIP and BLIP, resumable exactly from its checkpoints.

A :class:`TrainTask` says what to build and what loss to take (``models.clip_train``,
``models.blip_train``); :func:`train` does the rest: streaming batches
(:class:`models.data.PairStream`), AdamW (no decay on gains, biases, temperatures), linear
warm-up then cosine decay, global grad-norm clipping, autocast on GPU (bf16, or fp16 with a
GradScaler), a tqdm bar, a JSON Lines metrics log, and checkpoints.

A checkpoint (``checkpoints/step-NNNNNNNN.pt``, written to a temp name and renamed) holds the
task's parameters, the optimizer, scheduler and scaler states, the step, Python/NumPy/torch RNG
states and the loader's position (each stream's epoch and rows consumed, the stream due next,
rows skipped per reason). Resuming restores all of it, so an interrupted run ends with the same
weights as an uninterrupted one with the same seed. A checkpoint of a different configuration
or different data is refused rather than silently mixed in.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.data import LoaderState, PairSource, PairStream, open_sources
from models.train_config import TrainConfig

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
METRICS_LOG = "metrics.jsonl"
SUMMARY = "train_summary.json"
# What evaluation decontaminates against: task, data files, the model it started from.
MANIFEST = "train_manifest.json"
# Config keys that do not change the trajectory (a resumed run may change them).
_NOT_TRAJECTORY = {"checkpoint_every", "keep_checkpoints", "log_every", "threads", "device"}


class TrainError(RuntimeError):
    """Training cannot start or continue (incompatible checkpoint, bad data, ...)."""


class TrainTask(ABC):
    """What a training run builds and optimises. ``setup`` must be deterministic given the seed."""

    name: str = "task"

    @abstractmethod
    def setup(self, cfg: TrainConfig, sources: list[PairSource], out_dir: Path, device: str) -> None:
        """Build the model(s) on ``device``."""

    @abstractmethod
    def module(self):
        """The ``torch.nn.Module`` holding every trained parameter (its state_dict is checkpointed)."""

    @abstractmethod
    def image_transform(self) -> Callable:
        """RGB PIL image -> tensor, run in loader workers (picklable)."""

    def text_transform(self) -> Callable | None:
        """Captions -> model inputs, run in loader workers (picklable), or None."""
        return None

    def draft_size(self) -> int | None:
        """JPEG draft size for decoding (the model's input side), or None."""
        return None

    @abstractmethod
    def loss(self, batch: dict, device: str) -> tuple[Any, dict[str, float]]:
        """The loss tensor of one batch and numbers to log."""

    def after_step(self) -> None:
        """Called after each optimizer step (e.g. clamp a temperature)."""

    def no_decay(self, name: str, param) -> bool:
        low = name.lower()
        return param.ndim < 2 or "bias" in low or "norm" in low or "logit_" in low or low.endswith("temp")

    @abstractmethod
    def export(self, out_dir: Path) -> dict[str, str]:
        """Write the final model(s) in their loadable format; returns role -> directory."""


@dataclass
class TrainResult:
    out_dir: str
    steps: int
    exported: dict[str, str]
    final_loss: float
    rows_seen: int
    skipped: dict[str, int]
    seconds: float
    samples_per_s: float
    resumed_from: int | None = None
    history: list[dict] = field(default_factory=list)


# --------------------------------------------------------------------------- helpers


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError(f"device {name} requested but CUDA is not available")
    return name


def autocast_dtype(precision: str, device: str):
    """The autocast dtype (None: fp32) and whether a GradScaler is needed."""
    import torch

    if precision == "fp32" or (precision == "auto" and not device.startswith("cuda")):
        return None, False
    if precision == "bf16" or (precision == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16, False
    return torch.float16, device.startswith("cuda")


def lr_lambda(step: int, total: int, warmup: int, lr: float, min_lr: float) -> float:
    """Multiplier of ``lr`` at ``step``: linear warm-up, then cosine down to ``min_lr``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    progress = min(1.0, max(0.0, progress))
    return (min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))) / lr


def _fused_ok(module, device: str) -> bool:
    """AdamW's fused kernel: one call for all parameters instead of a Python loop over them
    (on the CPU experiment's tiny CLIP the loop was a quarter of each step). CPU and CUDA, float
    parameters only; elsewhere the default implementation."""
    import torch

    return torch.device(device).type in ("cpu", "cuda") and all(
        p.dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64) for p in module.parameters())


class _Schedule:
    """Picklable LambdaLR function (a lambda would not survive the scheduler's state_dict)."""

    def __init__(self, total: int, warmup: int, lr: float, min_lr: float):
        self.total, self.warmup, self.lr, self.min_lr = total, warmup, lr, min_lr

    def __call__(self, step: int) -> float:
        return lr_lambda(step, self.total, self.warmup, self.lr, self.min_lr)


def data_fingerprint(sources: list[PairSource]) -> str:
    parts = []
    for s in sources:
        p = Path(s.path)
        parts.append(f"{p.name}:{p.stat().st_size}" if p.is_file() else f"{s.path}:{sum(s.parts())}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _trajectory_config(cfg: TrainConfig) -> dict:
    d = asdict(cfg)
    return {k: v for k, v in d.items() if k not in _NOT_TRAJECTORY}


def _rng_state() -> dict:
    import torch

    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    import torch

    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    d = Path(out_dir) / CHECKPOINT_DIR
    return sorted(d.glob("step-*.pt")) if d.is_dir() else []


def _move(batch: dict, device: str) -> dict:
    import torch

    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            out[k] = v.to(device, non_blocking=True)
        elif isinstance(v, dict):
            out[k] = {kk: vv.to(device, non_blocking=True) if isinstance(vv, torch.Tensor) else vv for kk, vv in v.items()}
        else:
            out[k] = v
    return out


# --------------------------------------------------------------------------- the loop


def train(task: TrainTask, data, out_dir: str | Path, cfg: TrainConfig, *, resume: bool = True,
          on_step: Callable[[int, dict], None] | None = None, progress: bool = True) -> TrainResult:
    """Train ``task`` on ``data`` (shard dir, glob, files, Arrow table or sources) into ``out_dir``.

    ``on_step(step, logs)`` is called after every optimizer step (an exception there interrupts
    the run like a crash would). With ``resume`` the latest checkpoint in ``out_dir`` is continued;
    without it, earlier checkpoints and logs in ``out_dir`` are removed first.
    """
    import torch
    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Busy-waiting OpenMP threads competing with loader workers for the same cores are far slower
    # than fewer threads: by default leave one core per decoding worker.
    torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) - cfg.num_workers))
    device = resolve_device(cfg.device)
    sources = data if isinstance(data, list) and data and isinstance(data[0], PairSource) else open_sources(data)
    fingerprint = data_fingerprint(sources)

    ckpts = list_checkpoints(out)
    if ckpts and not resume:
        for c in ckpts:
            c.unlink()
        (out / METRICS_LOG).unlink(missing_ok=True)
        ckpts = []
    state = None
    if ckpts:
        state = torch.load(ckpts[-1], map_location="cpu", weights_only=False)
        if state["task"] != task.name or state["config"] != _trajectory_config(cfg) or state["data"] != fingerprint:
            diff = sorted(k for k in set(state["config"]) | set(_trajectory_config(cfg))
                          if state["config"].get(k) != _trajectory_config(cfg).get(k))
            raise TrainError(
                f"{out} holds a checkpoint of a different run (task {state['task']}, data {state['data']}, "
                f"config keys that differ: {', '.join(diff) or 'none'}); pass another --out or --no-resume"
            )

    seed_everything(cfg.seed)
    task.setup(cfg, sources, out, device)
    module = task.module()
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if p.requires_grad:
            (no_decay if task.no_decay(name, p) else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                            fused=_fused_ok(module, device))
    stream = PairStream(sources, cfg.batch_size, task.image_transform(), task.text_transform(), seed=cfg.seed,
                        shuffle_buffer=cfg.shuffle_buffer, rows_per_unit=cfg.rows_per_unit,
                        num_workers=cfg.num_workers, infinite=True, draft_size=task.draft_size(),
                        decode_cache_mb=cfg.decode_cache_mb)
    total = cfg.steps or max(1, math.ceil(cfg.epochs * stream.total_rows / cfg.batch_size))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _Schedule(total, min(cfg.warmup_steps, total), cfg.lr, cfg.min_lr))
    amp_dtype, use_scaler = autocast_dtype(cfg.precision, device)
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None

    step = 0
    loader_state = LoaderState.fresh(stream.streams_per_rank)
    resumed_from = None
    if state is not None:
        module.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        step = resumed_from = state["step"]
        loader_state = LoaderState.from_dict(state["loader"])
        _set_rng_state(state["rng"])
        _truncate_log(out / METRICS_LOG, step)
        log.info("resuming %s from step %d (%s)", task.name, step, ckpts[-1].name)

    def save_checkpoint() -> None:
        ck = out / CHECKPOINT_DIR
        ck.mkdir(exist_ok=True)
        path = ck / f"step-{step:08d}.pt"
        tmp = ck / f".{path.name}.tmp"
        torch.save({"task": task.name, "step": step, "config": _trajectory_config(cfg), "data": fingerprint,
                    "model": module.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "loader": loader_state.to_dict(), "rng": _rng_state()}, tmp)
        os.replace(tmp, path)
        for old in list_checkpoints(out)[:-cfg.keep_checkpoints]:
            old.unlink(missing_ok=True)

    history: list[dict] = []
    last_loss = float("nan")
    start_time = time.perf_counter()
    rows_at_start = loader_state.rows_seen
    window_t, window_rows = time.perf_counter(), 0
    module.train()
    bar = tqdm(total=total, initial=step, desc=f"train {task.name}", disable=not progress, unit="step")
    try:
        with open(out / METRICS_LOG, "a", encoding="utf-8") as mlog:
            if step < total:
                for batch in stream.loader(loader_state, pin_memory=device.startswith("cuda")):
                    loader_state_rows = int(batch["_rows"])
                    if loader_state_rows == 0:
                        loader_state.advance(batch)
                        continue
                    b = _move(batch, device)
                    ctx = torch.autocast(device.split(":")[0], dtype=amp_dtype) if amp_dtype is not None else _null()
                    with ctx:
                        loss, logs = task.loss(b, device)
                    opt.zero_grad(set_to_none=True)
                    if scaler is not None:
                        scaler.scale(loss).backward()
                        scaler.unscale_(opt)
                    else:
                        loss.backward()
                    grad_norm = (torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.grad_clip)
                                 if cfg.grad_clip > 0 else torch.tensor(float("nan")))
                    if scaler is not None:
                        scaler.step(opt)
                        scaler.update()
                    else:
                        opt.step()
                    sched.step()
                    task.after_step()
                    loader_state.advance(batch)
                    step += 1
                    window_rows += loader_state_rows
                    last_loss = float(loss.detach())
                    bar.update(1)
                    if step % cfg.log_every == 0 or step == total:
                        now = time.perf_counter()
                        rec = {"step": step, "loss": round(last_loss, 6), **{k: round(float(v), 6) for k, v in logs.items()},
                               "lr": sched.get_last_lr()[0], "grad_norm": round(float(grad_norm), 4),
                               "samples_per_s": round(window_rows / max(1e-9, now - window_t), 2),
                               "rows_seen": loader_state.rows_seen, "skipped": dict(loader_state.skipped)}
                        mlog.write(json.dumps(rec) + "\n")
                        mlog.flush()
                        history.append(rec)
                        bar.set_postfix(loss=f"{last_loss:.3f}")
                        window_t, window_rows = now, 0
                    if step % cfg.checkpoint_every == 0 or step == total:
                        save_checkpoint()
                    if on_step is not None:
                        on_step(step, logs)
                    if step >= total:
                        break
    finally:
        bar.close()
    seconds = time.perf_counter() - start_time
    module.eval()
    exported = task.export(out)
    result = TrainResult(str(out), step, exported, last_loss, loader_state.rows_seen, dict(loader_state.skipped),
                         round(seconds, 3), round((loader_state.rows_seen - rows_at_start) / max(seconds, 1e-9), 2),
                         resumed_from, history)
    summary = {k: v for k, v in asdict(result).items() if k != "history"}
    summary.update(task=task.name, total_steps=total, data_rows=stream.total_rows, data_fingerprint=fingerprint,
                   data=[s.path for s in sources], config=asdict(cfg), device=device)
    (out / SUMMARY).write_text(json.dumps(summary, indent=1, sort_keys=True, default=str) + "\n")
    init = getattr(task, "init", None)
    manifest = {
        "task": task.name,
        # Files only: an in-memory table (e.g. a COCO set read with models.coco) cannot be
        # decontaminated against later; write it as Parquet first when that matters.
        "data": [str(Path(s.path).resolve()) for s in sources if Path(s.path).is_file()],
        "in_memory_sources": sum(1 for s in sources if not Path(s.path).is_file()),
        "init": str(Path(init).resolve()) if init and Path(init).exists() else init,
        "exported": exported, "steps": step, "rows_seen": loader_state.rows_seen,
        "skipped": dict(loader_state.skipped),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return result


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past ``step`` (written after the checkpoint a resumed run restarts from)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in keep))


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
