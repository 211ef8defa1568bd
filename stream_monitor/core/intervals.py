r"""Confidence intervals for the figures a drift decision rests on.

A performance signal compares the model's mean error *before* a change with its mean
error *after* it. Both are estimates from a finite number of labels, and the "after" part
is often short when a detector fires, so every figure comes with its sample size and an
interval, and the policy decides on the conservative end of the interval of the change.

* **Accuracy** (a proportion): Wilson's score interval,
  $$\frac{\hat p + \frac{z^2}{2n} \pm z\sqrt{\frac{\hat p(1-\hat p)}{n} + \frac{z^2}{4n^2}}}
  {1 + \frac{z^2}{n}},$$
  which stays inside [0, 1] and keeps its coverage for small ``n`` and for rates near 0
  or 1, where the normal (Wald) interval collapses to a point.
* **Accuracy drop** (a difference of two independent proportions): Newcombe's hybrid
  score interval, built from the two Wilson intervals $(l_1, u_1)$ of $p_1$ and
  $(l_2, u_2)$ of $p_2$: $d = p_1 - p_2$,
  $[d - \sqrt{(p_1 - l_1)^2 + (u_2 - p_2)^2},\; d + \sqrt{(u_1 - p_1)^2 + (p_2 - l_2)^2}]$.
* **MAE** (a mean of absolute errors): Student's t interval $\bar x \pm t_{n-1} s/\sqrt n$.
* **Relative MAE change** (a ratio of two independent means): the delta method on the
  log of the ratio, $\log(\bar a/\bar b) \pm z\sqrt{s_a^2/(n_a \bar a^2) + s_b^2/(n_b \bar
  b^2)}$, mapped back by $e^x - 1$; scale-free, as the relative change is.

No bootstrap: the intervals are closed forms, cheap enough to recompute at every label
while a decision waits for more data.

>>> low, high = wilson(successes=2, n=3, confidence=0.95)
>>> round(low, 3), round(high, 3)
(0.208, 0.939)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import special, stats


def z_value(confidence: float) -> float:
    """``z`` with ``P(|Z| <= z) = confidence`` for a standard normal ``Z``.

    >>> round(z_value(0.95), 3)
    1.96
    """
    return float(special.ndtri(0.5 + confidence / 2.0))


def wilson(successes: float, n: int, confidence: float) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / n`` (``(0, 1)`` for ``n = 0``).

    >>> [round(v, 3) for v in wilson(95, 100, 0.95)]
    [0.888, 0.978]
    """
    if n <= 0:
        return 0.0, 1.0
    z = z_value(confidence)
    p = successes / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(mean: float, sd: float, n: int, confidence: float) -> tuple[float, float]:
    """Student's t interval of a mean (unbounded for fewer than two values).

    >>> [round(v, 3) for v in mean_interval(10.0, 2.0, 16, 0.95)]
    [8.934, 11.066]
    """
    if n < 2:
        return -math.inf, math.inf
    half = float(stats.t.ppf(0.5 + confidence / 2.0, n - 1)) * sd / math.sqrt(n)
    return mean - half, mean + half


@dataclass(frozen=True, slots=True)
class ErrorSample:
    """The mean error of a stretch of a model's error stream: its size, mean and standard
    deviation (0/1 errors for classification, absolute errors for regression).

    >>> ErrorSample.from_sums(4, 2.0, 2.0)
    ErrorSample(count=4, mean=0.5, sd=0.5773502691896257)
    """

    count: int
    mean: float
    sd: float

    @classmethod
    def from_sums(cls, count: int, total: float, squares: float) -> ErrorSample:
        """From the count, sum and sum of squares of the errors."""
        if count <= 0:
            return cls(0, math.nan, math.nan)
        mean = total / count
        variance = max(squares - count * mean * mean, 0.0) / max(count - 1, 1)
        return cls(count, mean, math.sqrt(variance))


def metric_interval(
    sample: ErrorSample, classification: bool, confidence: float
) -> tuple[float, float]:
    """Interval of the metric a sample stands for: accuracy (Wilson on the correct
    predictions) for classification, MAE (Student's t) for regression.

    >>> [round(v, 3) for v in metric_interval(ErrorSample(3, 1 / 3, 0.58), True, 0.95)]
    [0.208, 0.939]
    """
    if classification:
        return wilson(sample.count * (1.0 - sample.mean), sample.count, confidence)
    low, high = mean_interval(sample.mean, sample.sd, sample.count, confidence)
    return max(low, 0.0), high


@dataclass(frozen=True, slots=True)
class Change:
    """How much worse the model got, with its interval: the accuracy drop
    (classification) or the relative MAE increase (regression, 0.1 = +10 %)."""

    value: float
    low: float
    high: float


def change_interval(
    before: ErrorSample, after: ErrorSample, classification: bool, confidence: float
) -> Change:
    """The change from ``before`` to ``after`` with its interval (see the module).

    Tiny windows give wide intervals: three labels, two of them wrong, after a long
    stretch at 95 % accuracy is a point drop of 0.617 with an interval from 0.158 to
    0.889, anything from a modest drop to a collapse (hence a minimum of labels).

    >>> tiny = change_interval(ErrorSample(5000, 0.05, 0.22), ErrorSample(3, 2 / 3, 0.58),
    ...                        classification=True, confidence=0.95)
    >>> round(tiny.value, 3), round(tiny.low, 3), round(tiny.high, 3)
    (0.617, 0.158, 0.889)
    >>> mae = change_interval(ErrorSample(1000, 850.0, 700.0), ErrorSample(1000, 700.0, 600.0),
    ...                       classification=False, confidence=0.95)
    >>> round(mae.value, 3), mae.high < 0
    (-0.176, True)
    """
    if classification:
        p1, p2 = after.mean, before.mean
        l1, u1 = wilson(after.count * p1, after.count, confidence)
        l2, u2 = wilson(before.count * p2, before.count, confidence)
        d = p1 - p2
        return Change(d, d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2))
    a, b = after.mean, before.mean
    if b <= 0.0:
        # A perfect model before: any error after is an unbounded relative increase.
        worse = math.inf if a > 0 else 0.0
        return Change(worse, worse, worse)
    if a <= 0.0:
        return Change(-1.0, -1.0, -1.0)
    if after.count < 2 or before.count < 2:
        return Change(a / b - 1.0, -1.0, math.inf)
    z = z_value(confidence)
    spread = math.sqrt((after.sd / a) ** 2 / after.count + (before.sd / b) ** 2 / before.count)
    log_ratio = math.log(a / b)
    return Change(
        a / b - 1.0, math.expm1(log_ratio - z * spread), math.expm1(log_ratio + z * spread)
    )
