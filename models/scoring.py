"""Batched CLIP encoding of image bytes and texts, with decoding overlapped with the model.

:class:`ClipScorer` wraps a :class:`models.clip.ClipModel`. ``encode_images`` decodes and
preprocesses batch ``k+1..k+n`` in ``loader_threads`` threads while the model runs batch ``k``
(PIL decoding, resizing and torch's CPU kernels release the GIL, so threads overlap; a torch
``DataLoader`` with worker processes is not an option inside daemonic Dask worker processes).
Undecodable images do not stop a batch: they get a zero embedding, ``ok=False`` and the reason.

Embeddings are L2-normalised float32 (autocast bf16/fp16 on GPU, fp32 on CPU, by
``ClipModel.autocast``); callers store them as float16. ``clip_score`` is the row-wise cosine.
"""
from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from curation.image_decode import MAX_PIXELS, ImageDecodeError, decode_image
from models.clip import ClipModel, default_device, load_clip

log = logging.getLogger(__name__)

RANDOM_WEIGHTS_WARNING = (
    "score.pretrained is null: {name} has RANDOM weights, so clip_score, MMC4 similarities, semantic "
    "dedup and decontamination are meaningless; set score.pretrained to an open_clip tag or a local checkpoint"
)


@dataclass(frozen=True)
class ModelSpec:
    """What identifies a loaded model on a worker (the setup-once cache key)."""

    name: str
    pretrained: str | None
    device: str = "auto"
    seed: int = 0
    threads: int | None = None  # torch intra-op threads on CPU (None: leave torch's default)


@dataclass
class ImageEmbeddings:
    """``embeddings[i]`` is image i's unit vector (zeros when ``ok[i]`` is False, see ``errors[i]``)."""

    embeddings: np.ndarray
    ok: np.ndarray
    errors: list[tuple[str, str] | None]
    sizes: np.ndarray  # (n, 2) width, height of decoded images (0 when not decoded)
    seconds_model: float = 0.0
    seconds_total: float = 0.0
    counters: dict = field(default_factory=dict)


class ClipScorer:
    """Batched image/text encoding with one loaded CLIP (built once per worker by the stage)."""

    def __init__(self, clip: ClipModel, batch_size: int = 64, loader_threads: int = 2, max_pixels: int = MAX_PIXELS):
        self.clip = clip
        self.batch_size = batch_size
        self.loader_threads = loader_threads
        self.max_pixels = max_pixels
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self.encode_texts(["a"]).shape[1])
        return self._dim

    # ------------------------------------------------------------------ images

    def _prepare(self, blobs: Sequence[bytes | None]):
        """Decode + preprocess one batch (runs in a loader thread)."""
        import torch

        tensors, ok, errors, sizes = [], [], [], []
        for blob in blobs:
            try:
                im = decode_image(blob, max_pixels=self.max_pixels)
            except ImageDecodeError as exc:
                ok.append(False)
                errors.append((exc.reason, exc.detail))
                sizes.append((0, 0))
                continue
            sizes.append(im.size)
            tensors.append(self.clip.preprocess(im))
            ok.append(True)
            errors.append(None)
        pixels = torch.stack(tensors) if tensors else None
        if pixels is not None and self.clip.device.startswith("cuda"):
            pixels = pixels.pin_memory()
        return pixels, ok, errors, sizes

    def encode_pixels(self, pixels) -> np.ndarray:
        """Model only: preprocessed ``(n, 3, H, W)`` pixels -> unit float32 embeddings."""
        return self.clip.encode_images(pixels).cpu().numpy().astype(np.float32, copy=False)

    def encode_images(self, blobs: Sequence[bytes | None]) -> ImageEmbeddings:
        """Encode encoded-image bytes; decoding of later batches overlaps the model on earlier ones."""
        import time

        start = time.perf_counter()
        n = len(blobs)
        bounds = [(i, min(i + self.batch_size, n)) for i in range(0, n, self.batch_size)]
        out: np.ndarray | None = None
        ok_all = np.zeros(n, dtype=bool)
        errors: list[tuple[str, str] | None] = [None] * n
        sizes = np.zeros((n, 2), dtype=np.int64)
        model_s = 0.0

        def consume(lo: int, hi: int, prepared) -> None:
            nonlocal out, model_s
            pixels, ok, errs, szs = prepared
            ok_all[lo:hi] = ok
            errors[lo:hi] = errs
            sizes[lo:hi] = szs
            if pixels is None:
                return
            t = time.perf_counter()
            emb = self.encode_pixels(pixels)
            model_s += time.perf_counter() - t
            if out is None:
                out = np.zeros((n, emb.shape[1]), dtype=np.float32)
            out[np.arange(lo, hi)[np.asarray(ok, dtype=bool)]] = emb

        if self.loader_threads <= 0 or len(bounds) <= 1:
            for lo, hi in bounds:
                consume(lo, hi, self._prepare(blobs[lo:hi]))
        else:
            with ThreadPoolExecutor(self.loader_threads, thread_name_prefix="clip-loader") as pool:
                pending: deque = deque()
                todo = iter(bounds)
                for lo, hi in todo:  # keep loader_threads + 1 batches in flight
                    pending.append((lo, hi, pool.submit(self._prepare, blobs[lo:hi])))
                    if len(pending) > self.loader_threads:
                        break
                while pending:
                    lo, hi, fut = pending.popleft()
                    nxt = next(todo, None)
                    if nxt is not None:
                        pending.append((nxt[0], nxt[1], pool.submit(self._prepare, blobs[nxt[0]:nxt[1]])))
                    consume(lo, hi, fut.result())
        if out is None:
            out = np.zeros((n, self.dim), dtype=np.float32)
        return ImageEmbeddings(out, ok_all, errors, sizes, model_s, time.perf_counter() - start)

    # ------------------------------------------------------------------ texts

    def encode_texts(self, texts: Sequence[str | None]) -> np.ndarray:
        """Unit float32 embeddings of ``texts`` (None is encoded as the empty string), batched."""
        texts = [t or "" for t in texts]
        chunks = [self.clip.encode_texts(texts[i:i + self.batch_size]).cpu().numpy()
                  for i in range(0, len(texts), self.batch_size)]
        if not chunks:
            dim = self._dim if self._dim is not None else int(self.clip.encode_texts(["a"]).shape[1])
            return np.zeros((0, dim), dtype=np.float32)
        emb = np.concatenate(chunks).astype(np.float32, copy=False)
        self._dim = emb.shape[1]
        return emb


def clip_scores(image_emb: np.ndarray, text_emb: np.ndarray) -> np.ndarray:
    """Row-wise cosine of unit vectors (float32)."""
    return np.einsum("ij,ij->i", image_emb.astype(np.float32), text_emb.astype(np.float32))


def load_scorer(spec: ModelSpec, batch_size: int = 64, loader_threads: int = 2,
                device: str | None = None) -> ClipScorer:
    """Load ``spec``'s CLIP on ``device`` (seeded when the weights are random).

    ``device`` is where this process should run the model: the Dask stage passes its worker's
    (``curation.dask_cluster.worker_device``, which spreads workers over GPUs) and keeps one
    scorer per worker process itself; None means ``spec.device``, with ``auto`` = CUDA when present.
    """
    import torch

    if device is None:
        device = default_device() if spec.device == "auto" else spec.device
    if spec.threads and device == "cpu":
        torch.set_num_threads(spec.threads)
    if spec.pretrained is None:
        torch.manual_seed(spec.seed)  # every worker builds the same random model
        log.warning(RANDOM_WEIGHTS_WARNING.format(name=spec.name))
    clip = load_clip(spec.name, spec.pretrained, device)
    log.info("loaded %s (%s) on %s, %d torch threads", spec.name, spec.pretrained or "random weights",
             device, torch.get_num_threads())
    return ClipScorer(clip, batch_size=batch_size, loader_threads=loader_threads)
