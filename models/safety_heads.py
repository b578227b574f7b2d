"""LAION's NSFW and aesthetic heads on the CLIP image embeddings the score stage already has.

Both heads are tiny networks trained by LAION on *OpenAI* CLIP image embeddings (ViT-B/32 or
ViT-L/14), so they cost a matrix product per batch and no second pass over pixels:

- NSFW (LAION-AI/CLIP-based-NSFW-Detector, ported from Keras to a torch state dict):
  ``x' = (x - norm.mean) / (sqrt(norm.variance) + 1e-10)``, then ``linear_1..k`` with ReLU
  between them and a sigmoid at the end (B/32: 512->32->32->1, L/14: 768->64->512->256->1).
  The output is P(NSFW); LAION-5B flagged images with the L/14 head's score.
- Aesthetic (LAION-AI/aesthetic-predictor v1): one linear layer on the L2-normalised
  embedding, a rating on roughly LAION's 1-10 scale.

A head is chosen by the score model (:func:`resolve_heads`): the released heads exist only for
``ViT-B-32``/``ViT-L-14`` with ``pretrained: openai`` and live under ``safety.heads_dir``
(the layout of the released files). For another CLIP, ``safety.nsfw_head`` /
``safety.aesthetic_head`` name a head file trained for it; with none the columns are null
(a head applied to another model's embedding space would give confident nonsense, which is
worse than no score). Heads run in numpy (float32 matmuls): the weights are loaded with torch
once per worker and the hot path needs nothing else.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from curation.errors import ModelLoadError

# Score models whose embeddings the released heads were trained on -> file names under heads_dir.
NSFW_FILES = {
    "ViT-B-32": "nsfw/clip_ViT-B-32_openai_binary_nsfw_head.pth",
    "ViT-L-14": "nsfw/clip_ViT-L-14_openai_binary_nsfw_head.pth",
}
AESTHETIC_FILES = {
    "ViT-B-32": "aesthetic/sa_0_4_vit_b_32_linear.pth",
    "ViT-L-14": "aesthetic/sa_0_4_vit_l_14_linear.pth",
}
HEADS_PRETRAINED = "openai"  # the CLIP weights LAION's heads were trained on
NSFW_EPS = 1e-10  # the Keras Normalization port's epsilon (see PROVENANCE of the released heads)

OFFLINE_HINT = (
    "The heads are LAION's released files (MIT): the NSFW heads from "
    "github.com/LAION-AI/CLIP-based-NSFW-Detector (ported to a torch state dict: norm.mean, "
    "norm.variance, linear_1..k) and the aesthetic heads from github.com/LAION-AI/aesthetic-predictor "
    "(sa_0_4_vit_*_linear.pth). Offline, copy them on a connected machine into one folder with "
    "nsfw/ and aesthetic/ beside each other and pass --set safety.heads_dir=/models/clip_heads, "
    "or name a file with --set safety.nsfw_head=/path/head.pth (safety.aesthetic_head likewise), "
    "or set them to null to write null columns."
)


def _load_state_dict(path: str | Path, what: str) -> dict[str, np.ndarray]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ModelLoadError(f"{what} head not found: {p}. {OFFLINE_HINT}")
    import torch

    try:
        sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: torch raises many types
        raise ModelLoadError(f"{what} head {p} could not be read ({type(exc).__name__}: {exc}). {OFFLINE_HINT}") from None
    if not isinstance(sd, dict):
        raise ModelLoadError(f"{what} head {p} is not a state dict (got {type(sd).__name__}). {OFFLINE_HINT}")
    return {k: v.detach().cpu().numpy().astype(np.float32) for k, v in sd.items()}


@dataclass(frozen=True)
class NsfwHead:
    """LAION's NSFW MLP: normalisation, linear layers with ReLU between, sigmoid -> P(NSFW)."""

    mean: np.ndarray
    scale: np.ndarray  # sqrt(variance) + eps, so the hot path divides once
    layers: tuple[tuple[np.ndarray, np.ndarray], ...]  # (weight (out, in), bias (out,))
    path: str

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def __call__(self, emb: np.ndarray) -> np.ndarray:
        x = (np.asarray(emb, dtype=np.float32) - self.mean) / self.scale
        for i, (w, b) in enumerate(self.layers):
            x = x @ w.T + b
            if i < len(self.layers) - 1:
                np.maximum(x, 0.0, out=x)
        return (1.0 / (1.0 + np.exp(-x[:, 0]))).astype(np.float32)


@dataclass(frozen=True)
class AestheticHead:
    """LAION's aesthetic predictor v1: ``rating = normalise(x) @ weight.T + bias``."""

    weight: np.ndarray  # (dim,)
    bias: float
    path: str

    @property
    def dim(self) -> int:
        return int(self.weight.shape[0])

    def __call__(self, emb: np.ndarray) -> np.ndarray:
        x = np.asarray(emb, dtype=np.float32)
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.where(norm > 0, norm, 1.0)
        return (x @ self.weight + self.bias).astype(np.float32)


def load_nsfw_head(path: str | Path) -> NsfwHead:
    sd = _load_state_dict(path, "NSFW")
    names = sorted((k[: -len(".weight")] for k in sd if k.startswith("linear_") and k.endswith(".weight")),
                   key=lambda k: int(k.split("_")[1]))
    if "norm.mean" not in sd or "norm.variance" not in sd or not names:
        raise ModelLoadError(f"NSFW head {path} lacks norm.mean/norm.variance/linear_1..k (keys: {sorted(sd)}). {OFFLINE_HINT}")
    layers = tuple((sd[f"{n}.weight"], sd[f"{n}.bias"]) for n in names)
    if layers[-1][0].shape[0] != 1:
        raise ModelLoadError(f"NSFW head {path}: last layer has {layers[-1][0].shape[0]} outputs, expected 1")
    return NsfwHead(sd["norm.mean"], np.sqrt(sd["norm.variance"]) + np.float32(NSFW_EPS), layers, str(path))


def load_aesthetic_head(path: str | Path) -> AestheticHead:
    sd = _load_state_dict(path, "aesthetic")
    if "weight" not in sd or "bias" not in sd or sd["weight"].shape[0] != 1:
        raise ModelLoadError(f"aesthetic head {path}: expected one linear layer (weight 1xD, bias), keys {sorted(sd)}. {OFFLINE_HINT}")
    return AestheticHead(sd["weight"][0], float(sd["bias"][0]), str(path))


@dataclass(frozen=True)
class HeadPaths:
    """Which head files apply to the run's score model (None: that column is null), and why."""

    nsfw: str | None
    aesthetic: str | None
    note: str


def resolve_heads(model: str, pretrained: str | None, heads_dir: str | None,
                  nsfw_head: str | None = "auto", aesthetic_head: str | None = "auto") -> HeadPaths:
    """The heads for ``model``/``pretrained``: ``auto`` picks a released head when one exists for it.

    ``auto`` needs the OpenAI weights (the heads' embedding space) and ``heads_dir``; a path is
    used as given (its width is checked against the embeddings when the stage starts); None
    switches the head off.
    """
    notes = []

    def pick(setting: str | None, table: dict[str, str], what: str) -> str | None:
        if setting is None:
            notes.append(f"{what}: off (safety.{what}_head: null)")
            return None
        if setting != "auto":
            return setting
        if model not in table or pretrained != HEADS_PRETRAINED:
            notes.append(f"{what}: no released head for {model} ({pretrained or 'random weights'}); "
                         f"LAION's heads need {'/'.join(table)} with pretrained {HEADS_PRETRAINED}")
            return None
        if not heads_dir:
            notes.append(f"{what}: safety.heads_dir is not set")
            return None
        return str(Path(heads_dir).expanduser() / table[model])

    nsfw = pick(nsfw_head, NSFW_FILES, "nsfw")
    aesthetic = pick(aesthetic_head, AESTHETIC_FILES, "aesthetic")
    return HeadPaths(nsfw, aesthetic, "; ".join(notes) or "nsfw and aesthetic heads applied")


@dataclass(frozen=True)
class SafetyHeads:
    """The loaded heads of one run (either may be None)."""

    nsfw: NsfwHead | None
    aesthetic: AestheticHead | None

    @classmethod
    def load(cls, paths: HeadPaths, dim: int | None = None) -> "SafetyHeads":
        heads = cls(load_nsfw_head(paths.nsfw) if paths.nsfw else None,
                    load_aesthetic_head(paths.aesthetic) if paths.aesthetic else None)
        for head in (heads.nsfw, heads.aesthetic):
            if head is not None and dim is not None and head.dim != dim:
                raise ModelLoadError(f"head {head.path} expects {head.dim}-d CLIP embeddings, the score model gives {dim}-d; "
                                     "name a head trained on this CLIP's embeddings or set it to null")
        return heads

    def score(self, emb: np.ndarray, ok: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(nsfw, aesthetic) float32 per row; NaN where a head is off or ``ok`` is False."""
        n = len(emb)
        out = []
        for head in (self.nsfw, self.aesthetic):
            col = np.full(n, np.nan, dtype=np.float32)
            if head is not None and n:
                rows = np.flatnonzero(ok) if ok is not None else np.arange(n)
                if rows.size:
                    col[rows] = head(np.asarray(emb)[rows])
            out.append(col)
        return out[0], out[1]


def safety_reasons(nsfw: np.ndarray, aesthetic: np.ndarray, max_nsfw: float | None,
                   min_aesthetic: float | None) -> list[tuple[str, str] | None]:
    """Per row: (``nsfw`` | ``low_aesthetic``, detail) or None. A null score never rejects."""
    out: list[tuple[str, str] | None] = [None] * len(nsfw)
    if max_nsfw is not None:
        for i in np.flatnonzero(np.nan_to_num(nsfw, nan=-np.inf) > max_nsfw).tolist():
            out[i] = ("nsfw", f"nsfw_score {float(nsfw[i]):.4f} > {max_nsfw}")
    if min_aesthetic is not None:
        for i in np.flatnonzero(np.nan_to_num(aesthetic, nan=np.inf) < min_aesthetic).tolist():
            if out[i] is None:
                out[i] = ("low_aesthetic", f"aesthetic_score {float(aesthetic[i]):.3f} < {min_aesthetic}")
    return out
