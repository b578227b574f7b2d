"""Image-text pair filters: DataComp's basic filter and the CLIP-score filters (LAION, DataComp).

Each rule is one small :class:`filters.base.Filter` whose ``filter(pair)`` returns True to keep or
a rejection ``(False, reason)`` carrying the failing value (:func:`filters.base.find_rejection`
applies a list of them). The basic filter's keys (``score.filters``) are declared on its rules
(``settings``) and ``filters.config.PairFilterConfig`` is derived from :data:`PAIR_FILTERS`; the
score filter's come from ``ScoreConfig`` (``curation/config.py``):

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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

from filters.base import (
    Filter,
    FilterResult,
    FilterTable,
    ThresholdFilter,
    at_least,
    language_codes,
    find_rejection,
    run_filters,
    setting,
)

__all__ = [
    "PairView", "PairFilter", "CaptionLanguageFilter", "CaptionWordsFilter", "CaptionCharsFilter",
    "ImageMinSideFilter", "ImageAspectRatioFilter", "ClipScoreThresholdFilter", "TopFractionFilter",
    "PAIR_FILTERS", "basic_filters", "score_filter", "top_fraction_cutoff", "run_filters", "find_rejection",
    "RECIPE_STEPS", "FILTER_MODE_STEPS", "recipe_steps", "check_recipe",
]

PAIR = "pair"  # the level of the basic-filter chain (``score.filters`` in the config)


@dataclass
class PairView:
    """What the pair filters look at: the caption, the image size and (once scored) the score."""

    caption: str | None
    width: int | None = None
    height: int | None = None
    clip_score: float | None = None


# One rule on a pair; threshold rules are ``ThresholdFilter[PairView]``.
PairFilter = Filter[PairView]


class CaptionLanguageFilter(PairFilter):
    """Caption's fastText lid.176 language is one of ``languages`` (DataComp: English)."""

    name = "basic_filter:language"
    settings = (setting("languages", list[str], check=language_codes, pair=["en"]),)

    def __init__(self, languages: list[str], lid=None):
        self.languages = frozenset(languages)
        self._lid = lid

    def score(self, pair: PairView) -> str:
        if self._lid is None:
            from filters.language import get_language_identifier

            self._lid = get_language_identifier()
        return self._lid.predict(pair.caption or "")[0]

    def filter(self, pair: PairView) -> FilterResult:
        lang = self.score(pair)
        return True if lang in self.languages else self.reject(detail=f"lang {lang}")


class CaptionWordsFilter(ThresholdFilter[PairView]):
    """At least ``min_words`` whitespace-separated words (DataComp: more than 2)."""

    name = "basic_filter:too_few_words"
    measure = "words"
    settings = (setting("min_words", int, arg="threshold", check=at_least(0), pair=3),)

    def score(self, pair: PairView) -> int:
        return len((pair.caption or "").split())


class CaptionCharsFilter(ThresholdFilter[PairView]):
    """At least ``min_chars`` characters after stripping (DataComp: more than 5)."""

    name = "basic_filter:too_few_chars"
    measure = "chars"
    settings = (setting("min_chars", int, arg="threshold", check=at_least(0), pair=6),)

    def score(self, pair: PairView) -> int:
        return len((pair.caption or "").strip())


class ImageMinSideFilter(ThresholdFilter[PairView]):
    """Shorter image side at least ``min_side`` pixels (DataComp: 200); unknown size fails."""

    name = "basic_filter:image_too_small"
    measure = "shorter side"
    settings = (setting("min_side", int, arg="threshold", check=at_least(0), pair=200),)

    def score(self, pair: PairView) -> int | None:
        return min(pair.width, pair.height) if pair.width and pair.height else None


class ImageAspectRatioFilter(ThresholdFilter[PairView]):
    """Longer side / shorter side at most ``max_ratio`` (DataComp: 3); unknown size fails."""

    name = "basic_filter:aspect_ratio"
    measure = "aspect ratio"
    bound = "maximum"
    settings = (setting("max_aspect_ratio", float, arg="threshold", check=at_least(1.0), pair=3.0),)

    def score(self, pair: PairView) -> float | None:
        if not pair.width or not pair.height:
            return None
        return max(pair.width, pair.height) / min(pair.width, pair.height)


class ClipScoreThresholdFilter(ThresholdFilter[PairView]):
    """LAION: ``clip_score >= min_score`` (0.28 for ViT-B/32). A missing or NaN score fails."""

    name = "clip_score_below_threshold"
    measure = "clip_score"

    @property
    def min_score(self) -> float:
        return self.minimum

    def score(self, pair: PairView) -> float | None:
        return pair.clip_score


class TopFractionFilter(ClipScoreThresholdFilter):
    """DataComp: at or above the pool's global quantile ``cutoff`` (see :func:`top_fraction_cutoff`)."""

    name = "not_in_top_fraction"

    def __init__(self, cutoff: float, fraction: float):
        super().__init__(cutoff)
        self.fraction = fraction


# DataComp's basic filter, cheap rules first; ``filters.config.PairFilterConfig`` is derived from it.
PAIR_FILTERS = FilterTable((
    (CaptionCharsFilter, (PAIR,)),
    (CaptionWordsFilter, (PAIR,)),
    (ImageMinSideFilter, (PAIR,)),
    (ImageAspectRatioFilter, (PAIR,)),
    (CaptionLanguageFilter, (PAIR,)),
))


def top_fraction_cutoff(scores: np.ndarray, fraction: float) -> float:
    """The score at the ``1 - fraction`` quantile of the finite ``scores`` (DataComp's global cut).

    Keeping ``score >= cutoff`` keeps ``ceil(fraction * n)`` pairs when scores are distinct:
    the cutoff is the ``ceil(fraction * n)``-th largest score. ``inf`` when there is none.
    """
    import numpy as np  # here, not at module level: curation.config imports this module to build its configs

    s = np.asarray(scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return math.inf
    k = max(1, math.ceil(fraction * s.size))
    return float(np.partition(s, s.size - k)[s.size - k])


def basic_filters(cfg, lid=None) -> list[PairFilter]:
    """DataComp's basic filter from a ``PairFilterConfig`` (empty when disabled), in :data:`PAIR_FILTERS` order."""
    filters = PAIR_FILTERS.build(PAIR, cfg)
    if lid is not None:
        for f in filters:
            if isinstance(f, CaptionLanguageFilter):
                f._lid = lid
    return filters


# ``score.recipe``: DataComp/MetaCLIP filtering steps applied in the listed order, a pair kept only
# when every step keeps it (an intersection; the reason is the first step that rejects). Each
# step -> the reasons it rejects with. ``basic`` runs inside the scoring pass on the workers
# (it must come first); the others run in the score stage's decision pass (pipelines/dask_score.py).
RECIPE_STEPS: dict[str, tuple[str, ...]] = {
    "basic": PAIR_FILTERS.reasons(),
    "clip_threshold": (ClipScoreThresholdFilter.name,),
    "clip_top_fraction": (TopFractionFilter.name,),
    "text_based": ("text_based",),
    "image_based": ("image_based",),
    "metaclip": ("metaclip_unmatched", "metaclip_balanced_out"),
}
# ``recipe: null``: today's ``filter_mode`` as the steps after the scoring pass.
FILTER_MODE_STEPS: dict[str, tuple[str, ...]] = {
    "none": (), "threshold": ("clip_threshold",), "top_fraction": ("clip_top_fraction",),
}


def recipe_steps(recipe: list[str] | None, filter_mode: str) -> tuple[str, ...]:
    """The decision pass's steps: ``recipe`` without ``basic`` (run earlier), or ``filter_mode``'s one."""
    if recipe is None:
        return FILTER_MODE_STEPS[filter_mode]
    return tuple(s for s in recipe if s != "basic")


def check_recipe(recipe: list[str]) -> None:
    """Known steps, each once, ``basic`` first (it runs in the scoring pass); ValueError otherwise."""
    unknown = [s for s in recipe if s not in RECIPE_STEPS]
    if unknown:
        raise ValueError(f"recipe: unknown step(s) {unknown}; known: {', '.join(RECIPE_STEPS)}")
    if len(set(recipe)) != len(recipe):
        raise ValueError(f"recipe: a step is listed twice: {recipe}")
    if "basic" in recipe and recipe[0] != "basic":
        raise ValueError("recipe: basic must be the first step (it runs on the workers in the scoring pass)")
    if "clip_threshold" in recipe and "clip_top_fraction" in recipe:
        raise ValueError("recipe: clip_threshold and clip_top_fraction are two CLIP-score filters; pick one")


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
