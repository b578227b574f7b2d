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
    PAIR_FILTERS,
    PairView,
    TopFractionFilter,
    basic_filters,
    find_rejection,
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


def test_rejections_carry_the_failing_value():
    assert CaptionWordsFilter(3).filter(PairView("red car")).detail == "words 2 < 3"
    assert ImageMinSideFilter(200).filter(PairView("x", 640, 199)).detail == "shorter side 199 < 200"
    assert ImageMinSideFilter(200).filter(PairView("x", None, 500)).detail == "shorter side unknown"
    assert ImageAspectRatioFilter(3.0).filter(PairView("x", 200, 601)).detail == "aspect ratio 3.005 > 3.0"
    assert ClipScoreThresholdFilter(0.28).filter(PairView("x", clip_score=0.2)).detail == "clip_score 0.2 < 0.28"
    rejection = find_rejection(basic_filters(PairFilterConfig()), PairView("dog", 640, 480))
    assert (rejection.reason, rejection.detail) == ("basic_filter:too_few_chars", "chars 3 < 6")


def test_pair_filter_config_is_derived_from_the_table_and_loads_from_yaml():
    import dataclasses

    from curation.config import PipelineConfig
    from curation.errors import ConfigError
    from filters.config import PairFilterConfig as Derived

    assert Derived is PairFilterConfig  # curation.config re-exports the one definition
    assert {f.name for f in dataclasses.fields(PairFilterConfig)} == {
        "enabled", "languages", "min_words", "min_chars", "min_side", "max_aspect_ratio"}
    assert [type(f) for f in basic_filters(PairFilterConfig())] == [cls for cls, _ in PAIR_FILTERS.rows]
    cfg = PipelineConfig.load(overrides={"score.filters.min_words": 5, "score.filters.languages": ["en", "de"]})
    assert cfg.score.filters.min_words == 5 and basic_filters(cfg.score.filters)[1].minimum == 5
    with pytest.raises(ConfigError, match="max_aspect_ratio"):
        PipelineConfig.load(overrides={"score.filters.max_aspect_ratio": 0.5})
    with pytest.raises(ConfigError, match="languages"):
        PipelineConfig.load(overrides={"score.filters.languages": [""]})
