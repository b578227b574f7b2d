"""The experiment's paired comparison: effect, bootstrap interval, spread, and the separation rule."""
from __future__ import annotations

import numpy as np
import pytest

from pipelines.experiment_stats import paired_effect, paired_matrix


def runs(matrix):
    return [{f"p{j}": float(v) for j, v in enumerate(row)} for row in matrix]


def test_identical_rows_have_no_effect_and_are_not_separated():
    rng = np.random.default_rng(1)
    m = (rng.random((3, 50)) < 0.4).astype(float)
    e = paired_effect("a", "b", runs(m), runs(m))
    assert e.effect == 0 and e.ci_low == 0 and e.ci_high == 0 and not e.separated


def test_a_clear_win_is_separated_with_the_interval_around_it():
    rng = np.random.default_rng(2)
    b = (rng.random((3, 80)) < 0.2).astype(float)
    a = np.maximum(b, (rng.random((3, 80)) < 0.5).astype(float))  # a hits wherever b does, and more
    e = paired_effect("a", "b", runs(a), runs(b))
    assert e.effect == pytest.approx((a - b).mean())
    assert 0 < e.ci_low < e.effect < e.ci_high
    assert e.per_seed == pytest.approx((a - b).mean(axis=1).tolist())
    assert e.separated and e.pictures == 80 and e.seeds == 3


def test_an_effect_within_twice_the_seed_spread_is_not_separated():
    # seed 0: a wins everywhere; seeds 1 and 2: a loses a little. The mean is positive, the spread large.
    a = np.array([[1.0] * 40, [0.0] * 40, [0.0] * 40])
    b = np.array([[0.0] * 40, [0.2] * 40, [0.2] * 40])
    e = paired_effect("a", "b", runs(a), runs(b))
    assert e.effect > 0 and abs(e.effect) < 2 * e.spread and not e.separated


def test_only_pictures_every_run_scored_are_compared():
    a = [{"x": 1.0, "y": 0.0, "z": float("nan")}, {"x": 1.0, "y": 1.0, "w": 1.0}]
    b = [{"x": 0.0, "y": 0.0, "z": 1.0}, {"x": 0.0, "y": 0.0}]
    d, keys = paired_matrix(a, b)
    assert keys == ["x", "y"] and d.tolist() == [[1.0, 0.0], [1.0, 1.0]]


def test_rows_with_different_seed_counts_are_refused():
    with pytest.raises(ValueError, match="same seeds"):
        paired_effect("a", "b", runs(np.ones((3, 4))), runs(np.ones((2, 4))))


def test_the_interval_is_reproducible():
    rng = np.random.default_rng(3)
    a, b = rng.random((3, 30)), rng.random((3, 30))
    assert paired_effect("a", "b", runs(a), runs(b)) == paired_effect("a", "b", runs(a), runs(b))
