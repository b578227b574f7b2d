"""Image-text pair filters: DataComp's basic filter and the CLIP-score filters (LAION, DataComp).

Each rule is one small class whose ``filter(pair)`` returns True to keep or ``(False, reason)``
(the datatrove/OBELICS convention of :mod:`filters.base`, and :func:`filters.base.run_filters`
applies a list of them). Thresholds come from ``ScoreConfig`` (``curation/config.py``):

- DataComp basic filter (Gadre et al. 2023, ``baselines/filters.py``): caption in English
  (fastText), more than 2 words, more than 5 characters, image shorter side >= 200 px, aspect
  ratio <= 3. Reasons ``basic_filter:<which>``.
- LAION-400M (Schuhmann et al. 2021): keep ``clip_score >= 0.28`` with ViT-B/32
  (``clip_score_below_threshold``). That number is a ViT-B/32 cosine: other models (or random
  weights) have other scales, hence ``filter_mode``.
- DataComp "CLIP score (top 30%)": keep the pairs at or above the global ``1 - fraction``
  quantile of the pool's scores (``not_in_top_fraction``); :func:`top_fraction_cutoff` computes
  it once over every scored pair, then the filter is a threshold like LAION's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from filters.base import FilterResult, run_filters

__all__ = [
    "PairView", "PairFilter", "CaptionLanguageFilter", "CaptionWordsFilter", "CaptionCharsFilter",
    "ImageMinSideFilter", "ImageAspectRatioFilter", "ClipScoreThresholdFilter", "TopFractionFilter",
    "basic_filters", "score_filter", "top_fraction_cutoff", "run_filters",
]


@dataclass
class PairView:
    """What the pair filters look at: the caption, the image size and (once scored) the score."""

    caption: str | None
    width: int | None = None
    height: int | None = None
    clip_score: float | None = None


class PairFilter:
    """One rule on a pair; ``name`` is its reject reason."""

    name: ClassVar[str]

    def filter(self, pair: PairView) -> FilterResult:  # pragma: no cover - interface
        raise NotImplementedError

    def reject(self) -> tuple[bool, str]:
        return False, self.name

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


class CaptionLanguageFilter(PairFilter):
    """Caption's fastText lid.176 language is one of ``languages`` (DataComp: English)."""

    name = "basic_filter:language"

    def __init__(self, languages: list[str], lid=None):
        self.languages = frozenset(languages)
        self._lid = lid

    def filter(self, pair: PairView) -> FilterResult:
        if self._lid is None:
            from filters.language import get_language_identifier

            self._lid = get_language_identifier()
        lang, _ = self._lid.predict(pair.caption or "")
        return True if lang in self.languages else self.reject()


class CaptionWordsFilter(PairFilter):
    """At least ``min_words`` whitespace-separated words (DataComp: more than 2)."""

    name = "basic_filter:too_few_words"

    def __init__(self, min_words: int):
        self.min_words = min_words

    def filter(self, pair: PairView) -> FilterResult:
        return True if len((pair.caption or "").split()) >= self.min_words else self.reject()


class CaptionCharsFilter(PairFilter):
    """At least ``min_chars`` characters after stripping (DataComp: more than 5)."""

    name = "basic_filter:too_few_chars"

    def __init__(self, min_chars: int):
        self.min_chars = min_chars

    def filter(self, pair: PairView) -> FilterResult:
        return True if len((pair.caption or "").strip()) >= self.min_chars else self.reject()


class ImageMinSideFilter(PairFilter):
    """Shorter image side at least ``min_side`` pixels (DataComp: 200); unknown size fails."""

    name = "basic_filter:image_too_small"

    def __init__(self, min_side: int):
        self.min_side = min_side

    def filter(self, pair: PairView) -> FilterResult:
        if not pair.width or not pair.height:
            return self.reject()
        return True if min(pair.width, pair.height) >= self.min_side else self.reject()


class ImageAspectRatioFilter(PairFilter):
    """Longer side / shorter side at most ``max_ratio`` (DataComp: 3); unknown size fails."""

    name = "basic_filter:aspect_ratio"

    def __init__(self, max_ratio: float):
        self.max_ratio = max_ratio

    def filter(self, pair: PairView) -> FilterResult:
        if not pair.width or not pair.height:
            return self.reject()
        ratio = max(pair.width, pair.height) / min(pair.width, pair.height)
        return True if ratio <= self.max_ratio else self.reject()


class ClipScoreThresholdFilter(PairFilter):
    """LAION: ``clip_score >= min_score`` (0.28 for ViT-B/32). A missing score fails."""

    name = "clip_score_below_threshold"

    def __init__(self, min_score: float):
        self.min_score = min_score

    def filter(self, pair: PairView) -> FilterResult:
        s = pair.clip_score
        return True if s is not None and not math.isnan(s) and s >= self.min_score else self.reject()


class TopFractionFilter(ClipScoreThresholdFilter):
    """DataComp: at or above the pool's global quantile ``cutoff`` (see :func:`top_fraction_cutoff`)."""

    name = "not_in_top_fraction"

    def __init__(self, cutoff: float, fraction: float):
        super().__init__(cutoff)
        self.fraction = fraction


def top_fraction_cutoff(scores: np.ndarray, fraction: float) -> float:
    """The score at the ``1 - fraction`` quantile of the finite ``scores`` (DataComp's global cut).

    Keeping ``score >= cutoff`` keeps ``ceil(fraction * n)`` pairs when scores are distinct:
    the cutoff is the ``ceil(fraction * n)``-th largest score. ``inf`` when there is none.
    """
    s = np.asarray(scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return math.inf
    k = max(1, math.ceil(fraction * s.size))
    return float(np.partition(s, s.size - k)[s.size - k])


def basic_filters(cfg, lid=None) -> list[PairFilter]:
    """DataComp's basic filter from a ``PairFilterConfig`` (empty when disabled). Cheap rules first."""
    if not cfg.enabled:
        return []
    return [
        CaptionCharsFilter(cfg.min_chars),
        CaptionWordsFilter(cfg.min_words),
        ImageMinSideFilter(cfg.min_side),
        ImageAspectRatioFilter(cfg.max_aspect_ratio),
        CaptionLanguageFilter(cfg.languages, lid),
    ]


def score_filter(mode: str, min_clip_score: float, top_fraction: float, scores: np.ndarray | None = None) -> PairFilter | None:
    """The CLIP-score filter of ``filter_mode``: None, LAION's threshold, or DataComp's top fraction."""
    if mode == "none":
        return None
    if mode == "threshold":
        return ClipScoreThresholdFilter(min_clip_score)
    if mode == "top_fraction":
        if scores is None:
            raise ValueError("top_fraction needs the pool's scores to compute its global cutoff")
        return TopFractionFilter(top_fraction_cutoff(scores, top_fraction), top_fraction)
    raise ValueError(f"unknown filter_mode {mode!r}")
