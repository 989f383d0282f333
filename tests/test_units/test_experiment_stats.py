"""Confidence intervals and the verdict rule of the claims table (neural_memory.experiments.stats)."""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from neural_memory.experiments.base import compared_claim
from neural_memory.experiments.stats import (
    NOT_REPRODUCED,
    NOT_TESTED,
    REPRODUCED,
    Interval,
    slope_interval,
    t_interval,
    t_quantile,
    verdict_higher,
    verdict_lower,
    wilson_interval,
)


@pytest.mark.parametrize(("df", "expected"), [(1, 12.706), (2, 4.303), (10, 2.228), (30, 2.042)])
def test_t_quantile_matches_the_printed_table(df, expected):
    assert t_quantile(df) == pytest.approx(expected, abs=5e-4)


@pytest.mark.parametrize(("df", "expected"), [(40, 2.0211), (60, 2.0003), (120, 1.9799), (10_000, 1.9602)])
def test_t_quantile_expansion_above_the_table_matches_published_values(df, expected):
    assert t_quantile(df) == pytest.approx(expected, abs=2e-4)


def test_t_interval_of_one_two_three_by_hand():
    # mean 2, sample sd 1, half width t_{0.975,2} / sqrt(3) = 4.303 / 1.7320508
    ci = t_interval([1.0, 2.0, 3.0])
    assert ci.estimate == pytest.approx(2.0, abs=1e-12)
    assert ci.high - ci.estimate == pytest.approx(4.303 / math.sqrt(3), abs=1e-12)
    assert ci.estimate - ci.low == pytest.approx(4.303 / math.sqrt(3), abs=1e-12)


@given(st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=40))
def test_t_interval_is_centred_on_the_mean_with_the_sample_sd(values):
    ci = t_interval(values)
    mean, sd = statistics.fmean(values), statistics.stdev(values)
    assert ci.estimate == pytest.approx(mean, abs=1e-9)
    assert (ci.high - ci.low) / 2 == pytest.approx(
        t_quantile(len(values) - 1) * sd / math.sqrt(len(values)), abs=1e-9
    )


@pytest.mark.parametrize(
    ("hits", "n", "low", "high"),
    [(0, 10, 0.0, 0.2775), (5, 10, 0.2366, 0.7634), (10, 10, 0.7225, 1.0), (81, 263, 0.2553, 0.3662)],
)
def test_wilson_interval_matches_published_values(hits, n, low, high):
    ci = wilson_interval(hits, n)
    assert ci.estimate == hits / n
    assert ci.low == pytest.approx(low, abs=1e-4)
    assert ci.high == pytest.approx(high, abs=1e-4)


@given(st.integers(1, 2000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_interval_stays_in_zero_one_and_contains_the_share(hits_n):
    hits, n = hits_n
    ci = wilson_interval(hits, n)
    assert 0.0 <= ci.low <= hits / n <= ci.high <= 1.0


def test_separated_intervals_in_the_claimed_direction_are_reproduced():
    low, high = Interval(1.0, 0.9, 1.1, "t"), Interval(2.0, 1.9, 2.1, "t")
    assert verdict_lower(low, high) == REPRODUCED
    assert verdict_higher(high, low) == REPRODUCED


def test_overlapping_or_reversed_intervals_are_not_reproduced():
    a, b = Interval(1.0, 0.5, 1.6, "t"), Interval(1.5, 1.4, 2.0, "t")
    assert verdict_lower(a, b) == NOT_REPRODUCED  # overlap
    assert verdict_lower(b, a) == NOT_REPRODUCED  # overlap, other way
    far = Interval(5.0, 4.9, 5.1, "t")
    assert verdict_lower(far, a) == NOT_REPRODUCED  # separated, but the opposite direction
    touching = Interval(1.6, 1.6, 1.7, "t")
    assert verdict_lower(a, touching) == NOT_REPRODUCED  # sharing an endpoint is not separation


def test_a_missing_measurement_is_not_tested():
    assert verdict_lower(None, Interval(1.0, 0.9, 1.1, "t")) == NOT_TESTED


def test_compared_claim_records_both_intervals_and_applies_the_rule():
    a, b = Interval(0.9, 0.8, 1.0, "Wilson"), Interval(0.2, 0.1, 0.3, "Wilson")
    claim = compared_claim("a recalls better", "ref", "90 vs 20", "m", a, b, "higher")
    assert claim.verdict == REPRODUCED
    assert claim.comparison == {"a": a.to_dict(), "b": b.to_dict(), "direction": "higher"}
    assert compared_claim("a is lower", "ref", "p", "m", a, b, "lower").verdict == NOT_REPRODUCED


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="at least 2 values"):
        t_interval([1.0])
    with pytest.raises(ValueError, match="finite"):
        t_interval([1.0, math.nan])
    with pytest.raises(ValueError, match="df must be an int >= 1"):
        t_quantile(0)
    with pytest.raises(ValueError, match=r"hits must be an int in \[0, n=3\]"):
        wilson_interval(4, 3)
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="direction must be 'lower' or 'higher'"):
        compared_claim("c", "r", "p", "m", Interval(1, 1, 1, "t"), Interval(1, 1, 1, "t"), "equal")
    with pytest.raises(ValueError, match="low <= estimate <= high"):
        Interval(2.0, 0.0, 1.0, "t")


def test_slope_interval_by_hand():
    # x = 0, 1, 2, 3; y = 1, 3, 4, 8: mean x 1.5, mean y 4, Sxx = 5,
    # Sxy = (-1.5)(-3) + (-0.5)(-1) + 0.5(0) + 1.5(4) = 11, slope 11/5 = 2.2;
    # residuals y - 4 - 2.2 (x - 1.5) = 0.3, 0.1, -1.1, 0.7; RSS = 0.09 + 0.01 + 1.21 + 0.49 = 1.8;
    # se = sqrt(1.8 / 2 / 5) = sqrt(0.18); t_{0.975, 2} = 4.303
    interval = slope_interval([0, 1, 2, 3], [1, 3, 4, 8])
    half = 4.303 * math.sqrt(0.18)
    assert interval.estimate == pytest.approx(2.2, abs=1e-12)
    assert (interval.low, interval.high) == pytest.approx((2.2 - half, 2.2 + half), abs=1e-12)
    assert interval.method == "least-squares slope (n=4)"


@given(
    st.lists(st.floats(-50, 50), min_size=3, max_size=12, unique=True),
    st.floats(-5, 5),
    st.floats(-5, 5),
)
def test_slope_interval_of_exact_power_law_points_is_the_exponent_with_no_width(xs, slope, intercept):
    # y = intercept + slope x exactly: the residuals vanish, so the interval is the slope itself
    if max(xs) - min(xs) < 1e-3:
        return
    interval = slope_interval(xs, [intercept + slope * x for x in xs])
    assert interval.estimate == pytest.approx(slope, abs=1e-8)
    assert interval.high - interval.low == pytest.approx(0.0, abs=1e-6)


def test_slope_interval_bad_input():
    with pytest.raises(ValueError, match="at least 3 points"):
        slope_interval([1, 2], [1, 2])
    with pytest.raises(ValueError, match="same length"):
        slope_interval([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="two distinct"):
        slope_interval([1, 1, 1], [1, 2, 3])
    with pytest.raises(ValueError, match="finite"):
        slope_interval([1, 2, math.inf], [1, 2, 3])
