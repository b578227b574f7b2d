"""The generic filter: datatrove's contract, a separate score, rejections with the failing value, the chain table."""
from __future__ import annotations

import math
import pickle
from dataclasses import dataclass

import pytest

from filters.base import (
    Filter,
    FilterTable,
    Rejection,
    ThresholdFilter,
    at_least,
    check_range,
    find_rejection,
    ratio,
    run_filters,
    setting,
)


@dataclass
class Box:
    size: float | None


class SizeFilter(ThresholdFilter[Box]):
    name = "size"
    reasons = ("too_small", "too_big")
    too_low, too_high, measure = "too_small", "too_big", "size"
    settings = (setting("min_size", int, a=1, b=2), setting("max_size", int, a=10))

    def __init__(self, min_size: int, max_size: int | None = None):
        self.minimum, self.maximum = min_size, max_size

    def score(self, box: Box) -> float | None:
        return box.size

    @classmethod
    def check_config(cls, values):
        super().check_config(values)
        check_range(values, "min_size", "max_size")


class ShareFilter(ThresholdFilter[Box]):
    name = "share"
    bound = "maximum"
    settings = (setting("max_share", float, arg="threshold", check=ratio, a=0.5),)

    def score(self, box: Box) -> float | None:
        return box.size


class Bare(Filter[Box]):
    """A datatrove-style rule returning a bare False or a plain tuple."""

    name = "bare"

    def __init__(self, result):
        self.result = result

    def filter(self, box: Box):
        return self.result


def test_rejection_is_the_datatrove_tuple_with_a_detail():
    r = Rejection("too_small", "size 1 < 2")
    assert r == (False, "too_small") and r.reason == "too_small" and r.detail == "size 1 < 2"
    keep, reason = r
    assert keep is False and reason == "too_small"
    clone = pickle.loads(pickle.dumps(r))
    assert clone == r and clone.detail == r.detail


def test_threshold_both_sides_and_unmeasurable():
    f = SizeFilter(2, 10)
    assert f.filter(Box(2)) is True and f.filter(Box(10)) is True  # bounds are inclusive
    assert f.filter(Box(1)) == (False, "too_small") and f.filter(Box(1)).detail == "size 1 < 2"
    assert f.filter(Box(10.5)).detail == "size 10.5 > 10" and f.filter(Box(11)).reason == "too_big"
    assert f.filter(Box(None)) == (False, "too_small") and f.filter(Box(None)).detail == "size unknown"
    assert f.filter(Box(math.nan)).reason == "too_small"  # NaN fails
    assert SizeFilter(2).filter(Box(1e9)) is True  # an open bound
    one_sided = ShareFilter(0.5)
    assert one_sided.maximum == 0.5 and one_sided.minimum is None
    assert one_sided.filter(Box(0.51234567)).detail == "share 0.5123 > 0.5"
    assert repr(one_sided) == "ShareFilter(maximum=0.5)"


def test_find_rejection_first_wins_and_accepts_datatrove_results():
    chain = [SizeFilter(2, 10), ShareFilter(5)]
    assert find_rejection(chain, Box(3)) is None and run_filters(chain, Box(3)) is None
    assert run_filters(chain, Box(1)) == "too_small"
    assert find_rejection([Bare(False)], Box(1)) == (False, "bare")
    assert find_rejection([Bare((False, "why"))], Box(1)).reason == "why"
    assert find_rejection([Bare((False, ""))], Box(1)).reason == "bare"
    assert find_rejection([Bare((True, "fine")), Bare(True)], Box(1)) is None


def test_table_derives_each_level_config_and_chain():
    table = FilterTable(((SizeFilter, ("a", "b")), (ShareFilter, ("a",))))
    A = table.config_class("a", "A", __name__, "level a")
    B = table.config_class("b", "B", __name__, "level b")
    assert A() == A(enabled=True, min_size=1, max_size=10, max_share=0.5) and A.__doc__ == "level a"
    assert B() == B(enabled=True, min_size=2)  # no max_size default at b: the constructor's None applies
    chain = table.build("a", A())
    assert [type(f) for f in chain] == [SizeFilter, ShareFilter] and chain[1].maximum == 0.5
    assert table.build("b", B())[0].maximum is None
    assert table.build("a", A(enabled=False)) == []
    assert table.reasons() == ("too_small", "too_big", "share")
    A().validate()
    with pytest.raises(ValueError, match="min_size <= max_size"):
        A(min_size=11).validate()
    with pytest.raises(ValueError, match="max_share"):
        A(max_share=1.5).validate()


def test_table_refuses_defaults_for_a_level_the_filter_is_not_in():
    with pytest.raises(TypeError, match="min_size"):
        FilterTable(((SizeFilter, ("a",)),))


def test_setting_checks():
    at_least(1)("n", 1)
    with pytest.raises(ValueError, match="n must be >= 1"):
        at_least(1)("n", 0)
    with pytest.raises(ValueError, match=r"r must be in \[0, 1\]"):
        ratio("r", -0.1)
