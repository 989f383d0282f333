"""Confidence intervals and the verdict rule of the claims table (standard library only).

Accuracies get a Wilson score interval (it stays inside [0, 1] and behaves at 0 % and 100 %); means (losses,
bits per byte, throughput) get a Student-t interval. A claim "A is lower than B" counts as *reproduced* only
when the two 95 % intervals are separated in the claimed direction; anything else (overlap, or the opposite
order) is "not reproduced at this scale". The rule is code, so nobody decides a verdict by hand.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Z_95 = 1.959963984540054  # two-sided 95 % quantile of the standard normal

# Two-sided 95 % quantiles t_{0.975, df} of Student's t for df = 1..30 (standard tables).
T_975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced at this scale"
NOT_TESTED = "not tested"


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided 95 % interval ``[low, high]`` and how it was computed."""

    estimate: float
    low: float
    high: float
    method: str

    def __post_init__(self) -> None:
        if not (self.low <= self.estimate <= self.high):
            raise ValueError(f"need low <= estimate <= high, got {self.low}, {self.estimate}, {self.high}")

    def text(self, digits: int = 3) -> str:
        return f"{self.estimate:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    def to_dict(self) -> dict[str, float | str]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "method": self.method}

    @classmethod
    def from_dict(cls, values: dict) -> Interval:
        return cls(values["estimate"], values["low"], values["high"], values["method"])


def t_quantile(df: int) -> float:
    """``t_{0.975, df}``: the table for ``df <= 30``, the Cornish–Fisher expansion in ``1/df`` above."""
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"df must be an int >= 1, got {df!r}")
    if df <= len(T_975):
        return T_975[df - 1]
    z = Z_95
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def t_interval(values: Sequence[float], method: str = "t") -> Interval:
    """Mean of ``values`` (at least 2, all finite) with its Student-t 95 % interval."""
    values = [float(v) for v in values]
    if len(values) < 2:
        raise ValueError(f"a t interval needs at least 2 values, got {len(values)}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError("values must all be finite")
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, f"{method} (n={n})")


def wilson_interval(hits: int, n: int) -> Interval:
    """Share ``hits / n`` with its Wilson score 95 % interval."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if isinstance(hits, bool) or not isinstance(hits, int) or not 0 <= hits <= n:
        raise ValueError(f"hits must be an int in [0, n={n}], got {hits!r}")
    p, z2 = hits / n, Z_95**2
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z_95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # p itself always lies inside; clamp the rounding of the endpoints
    return Interval(p, max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half)), f"Wilson (n={n})")


def slope_interval(xs: Sequence[float], ys: Sequence[float], method: str = "least-squares slope") -> Interval:
    r"""Least-squares slope of ``ys`` on ``xs`` with its Student-t 95 % interval (``n - 2`` degrees of
    freedom).

    .. math::
        \hat b = \frac{\sum (x_i - \bar x)(y_i - \bar y)}{\sum (x_i - \bar x)^2}, \qquad
        \mathrm{se}(\hat b) = \sqrt{\frac{\sum r_i^2 / (n - 2)}{\sum (x_i - \bar x)^2}}

    On log–log axes the slope is the exponent of a power law ``y = c x^b`` (the scaling experiment's
    "time grows like length^b"). Needs at least 3 points, at least two distinct ``xs``, all finite.
    """
    xs, ys = [float(x) for x in xs], [float(y) for y in ys]
    if len(xs) != len(ys):
        raise ValueError(f"xs and ys must have the same length, got {len(xs)} and {len(ys)}")
    if len(xs) < 3:
        raise ValueError(f"a slope interval needs at least 3 points, got {len(xs)}")
    if not all(math.isfinite(v) for v in xs + ys):
        raise ValueError("xs and ys must all be finite")
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        raise ValueError("xs must hold at least two distinct values")
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    residuals = [y - my - slope * (x - mx) for x, y in zip(xs, ys, strict=True)]
    half = t_quantile(n - 2) * math.sqrt(sum(r * r for r in residuals) / (n - 2) / sxx)
    return Interval(slope, slope - half, slope + half, f"{method} (n={n})")


def lower_is_separated(a: Interval, b: Interval) -> bool:
    """True when ``a`` lies entirely below ``b`` (the 95 % intervals do not overlap)."""
    return a.high < b.low


def verdict_lower(a: Interval | None, b: Interval | None) -> str:
    """Verdict of the claim "a is lower than b": reproduced only if the intervals separate that way."""
    if a is None or b is None:
        return NOT_TESTED
    return REPRODUCED if lower_is_separated(a, b) else NOT_REPRODUCED


def verdict_higher(a: Interval | None, b: Interval | None) -> str:
    """Verdict of the claim "a is higher than b" (e.g. an accuracy or a throughput)."""
    return verdict_lower(b, a)


__all__ = [
    "NOT_REPRODUCED",
    "NOT_TESTED",
    "REPRODUCED",
    "Interval",
    "lower_is_separated",
    "slope_interval",
    "t_interval",
    "t_quantile",
    "verdict_higher",
    "verdict_lower",
    "wilson_interval",
]
