"""Paired comparison of two experiment rows on the same held-out pictures (``make experiment``).

Why paired: every row's CLIP is evaluated on the same pictures with the same training seeds, so
the difference between two rows can be taken picture by picture and seed by seed. The picture-to-
picture variation (some pictures are easy for every model) then cancels, and the comparison has
far more power than comparing two means whose seed spreads overlap.

The effect is the mean over seeds and pictures of ``R@1(A) - R@1(B)``, where a picture's R@1 is
the mean of its image->text hit and its captions' text->image hits (models/metrics.py
``per_picture_r1``); averaged over pictures it is the "mean R@1" of the table. Two spreads are
reported:

- ``spread``: the sample standard deviation of the per-seed effects (training noise: how much the
  effect moves when only the CLIP's seed changes);
- a 95% interval from a two-level bootstrap (resample the seeds, then the pictures, with
  replacement), covering both the training seed and which pictures happen to be held out.

A comparison is *separated* when the interval excludes zero and the effect exceeds twice its
``spread`` (the issue's rule); otherwise it is reported as not separated, whatever its sign.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

PerPicture = dict[str, float]  # picture sha256 -> its R@1 (NaN: no caption)


@dataclass(frozen=True)
class PairedEffect:
    a: str
    b: str
    effect: float  # mean of R@1(a) - R@1(b) over seeds and common pictures
    ci_low: float
    ci_high: float
    per_seed: list[float]
    spread: float  # std (ddof=1) of per_seed; 0 with one seed
    pictures: int
    seeds: int
    separated: bool

    def as_dict(self) -> dict:
        return asdict(self)


def paired_matrix(a_runs: Sequence[PerPicture], b_runs: Sequence[PerPicture]) -> tuple[np.ndarray, list[str]]:
    """``R@1(a) - R@1(b)`` as a (seeds, pictures) array over the pictures every run scored."""
    if len(a_runs) != len(b_runs) or not a_runs:
        raise ValueError(f"paired rows need the same seeds: {len(a_runs)} vs {len(b_runs)} runs")
    common = None
    for run in list(a_runs) + list(b_runs):
        scored = {k for k, v in run.items() if v == v}  # not NaN
        common = scored if common is None else common & scored
    keys = sorted(common or ())
    a = np.array([[run[k] for k in keys] for run in a_runs], dtype=np.float64).reshape(len(a_runs), len(keys))
    b = np.array([[run[k] for k in keys] for run in b_runs], dtype=np.float64).reshape(len(b_runs), len(keys))
    return a - b, keys


def paired_effect(a: str, b: str, a_runs: Sequence[PerPicture], b_runs: Sequence[PerPicture],
                  n_boot: int = 4000, seed: int = 0, level: float = 0.95) -> PairedEffect:
    """The paired effect of row ``a`` over row ``b`` (runs aligned by training seed)."""
    d, keys = paired_matrix(a_runs, b_runs)
    n_seeds, n_pics = d.shape
    if n_pics == 0:
        return PairedEffect(a, b, float("nan"), float("nan"), float("nan"), [], float("nan"), 0, n_seeds, False)
    per_seed = d.mean(axis=1)
    spread = float(per_seed.std(ddof=1)) if n_seeds > 1 else 0.0
    rng = np.random.default_rng(seed)
    seeds_idx = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    pics_idx = rng.integers(0, n_pics, size=(n_boot, n_pics))
    # Per replicate: mean over resampled seeds of the mean over resampled pictures.
    pic_means = np.stack([d[seeds_idx[:, s]][np.arange(n_boot)[:, None], pics_idx].mean(axis=1)
                          for s in range(n_seeds)], axis=1)
    boots = pic_means.mean(axis=1)
    lo, hi = np.quantile(boots, [(1 - level) / 2, 1 - (1 - level) / 2])
    effect = float(d.mean())
    separated = bool((lo > 0 or hi < 0) and abs(effect) > 2 * spread)
    return PairedEffect(a, b, effect, float(lo), float(hi), [float(x) for x in per_seed], spread, n_pics, n_seeds,
                        separated)


def describe(e: PairedEffect, label_a: str, label_b: str) -> str:
    """One sentence for the experiment's report."""
    pts = f"{100 * e.effect:+.1f} points of mean R@1 (95% CI {100 * e.ci_low:+.1f} to {100 * e.ci_high:+.1f}, " \
          f"seed spread {100 * e.spread:.1f}, {e.pictures} pictures x {e.seeds} seeds)"
    if e.separated:
        return f"{label_a} {'beats' if e.effect > 0 else 'trails'} {label_b}: {pts}."
    return f"{label_a} vs {label_b}: {pts}; not separated."
