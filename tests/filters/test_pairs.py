"""Pair filters: DataComp's basic filter, LAION's threshold, DataComp's top fraction."""
from __future__ import annotations

import math

import numpy as np
import pytest

from curation.config import PairFilterConfig, ScoreConfig
from filters.pairs import (
    CaptionCharsFilter,
    CaptionLanguageFilter,
    CaptionWordsFilter,
    ClipScoreThresholdFilter,
    ImageAspectRatioFilter,
    ImageMinSideFilter,
    PairView,
    TopFractionFilter,
    basic_filters,
    run_filters,
    score_filter,
    top_fraction_cutoff,
)


def test_datacomp_basic_filter_thresholds_by_default():
    cfg = PairFilterConfig()
    # DataComp: > 2 words, > 5 characters, shorter side >= 200, aspect ratio <= 3, English.
    assert (cfg.min_words, cfg.min_chars, cfg.min_side, cfg.max_aspect_ratio, cfg.languages) == (3, 6, 200, 3.0, ["en"])
    assert ScoreConfig().min_clip_score == 0.28 and ScoreConfig().top_fraction == 0.3


@pytest.mark.parametrize(
    "rule, view, expected",
    [
        (CaptionWordsFilter(3), PairView("a red car"), True),
        (CaptionWordsFilter(3), PairView("red car"), (False, "basic_filter:too_few_words")),
        (CaptionCharsFilter(6), PairView("a cats"), True),
        (CaptionCharsFilter(6), PairView("  cats "), (False, "basic_filter:too_few_chars")),
        (CaptionCharsFilter(6), PairView(None), (False, "basic_filter:too_few_chars")),
        (ImageMinSideFilter(200), PairView("x", 640, 200), True),
        (ImageMinSideFilter(200), PairView("x", 640, 199), (False, "basic_filter:image_too_small")),
        (ImageMinSideFilter(200), PairView("x", None, 500), (False, "basic_filter:image_too_small")),
        (ImageAspectRatioFilter(3.0), PairView("x", 600, 200), True),
        (ImageAspectRatioFilter(3.0), PairView("x", 200, 601), (False, "basic_filter:aspect_ratio")),
        (ClipScoreThresholdFilter(0.28), PairView("x", clip_score=0.28), True),
        (ClipScoreThresholdFilter(0.28), PairView("x", clip_score=0.2799), (False, "clip_score_below_threshold")),
        (ClipScoreThresholdFilter(0.28), PairView("x", clip_score=float("nan")), (False, "clip_score_below_threshold")),
        (ClipScoreThresholdFilter(0.28), PairView("x"), (False, "clip_score_below_threshold")),
    ],
)
def test_each_rule(rule, view, expected):
    assert rule.filter(view) == expected


def test_language_with_fasttext():
    rule = CaptionLanguageFilter(["en"])
    assert rule.filter(PairView("A man riding a horse along the beach at sunset.")) is True
    assert rule.filter(PairView("Un homme qui monte à cheval sur la plage au coucher du soleil.")) == (
        False, "basic_filter:language")
    assert rule.filter(PairView("")) == (False, "basic_filter:language")


def test_basic_filters_first_reason_and_disable():
    rules = basic_filters(PairFilterConfig())
    assert run_filters(rules, PairView("A dog catching a frisbee in a park.", 640, 480)) is None
    assert run_filters(rules, PairView("dog", 640, 480)) == "basic_filter:too_few_chars"
    assert run_filters(rules, PairView("A dog catching a frisbee.", 1000, 100)) == "basic_filter:image_too_small"
    assert basic_filters(PairFilterConfig(enabled=False)) == []


def test_top_fraction_cutoff_keeps_the_fraction():
    rng = np.random.default_rng(0)
    scores = rng.normal(0.25, 0.05, size=1000)
    for fraction in (0.1, 0.3, 0.5, 1.0):
        cutoff = top_fraction_cutoff(scores, fraction)
        assert (scores >= cutoff).sum() == math.ceil(fraction * 1000)
    with_nan = np.concatenate([scores, [np.nan] * 50])
    assert top_fraction_cutoff(with_nan, 0.3) == top_fraction_cutoff(scores, 0.3)  # NaN (undecodable) not in the pool
    assert top_fraction_cutoff(np.array([]), 0.3) == math.inf


def test_score_filter_modes():
    assert score_filter("none", 0.28, 0.3) is None
    assert isinstance(score_filter("threshold", 0.28, 0.3), ClipScoreThresholdFilter)
    f = score_filter("top_fraction", 0.28, 0.5, np.array([0.1, 0.2, 0.3, 0.4]))
    assert isinstance(f, TopFractionFilter) and f.min_score == 0.3
    assert f.filter(PairView(None, clip_score=0.2)) == (False, "not_in_top_fraction")
    with pytest.raises(ValueError):
        score_filter("top_fraction", 0.28, 0.3)
