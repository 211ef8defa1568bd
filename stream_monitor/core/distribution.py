r"""Two-sample statistics of a current window against a fixed reference, and their thresholds.

Every test here asks one question: are the ``m`` values of the current window and the
``n`` values of the reference independent draws from one distribution? Each has a
p-value that is valid (or conservative) under that null hypothesis, which is what lets
:func:`bonferroni_alpha` turn a tolerated false-alarm rate into thresholds. Valid means
on average over references: against one fixed reference, every window shares the
reference's own sampling error, and a test can reject more or less often than its level.

* **Kolmogorov-Smirnov** (:func:`ks_statistic`) for numeric values:
  $D = \sup_x |F_{ref}(x) - F_{cur}(x)|$. Chosen over Wasserstein because its null
  distribution does not depend on the feature's distribution or units, so one
  threshold serves every feature, in closed form, with no per-feature simulation;
  Wasserstein is in the feature's units and would need exactly such a simulation.
  The asymptotic Kolmogorov distribution gives the p-value,
  $p = Q_{KS}(\sqrt{nm/(n+m)}\,D)$, which is conservative at these sizes (ties make it
  more so).
* **Pearson's chi-square** (:func:`chi2_homogeneity`) on counts: reference-quantile
  bins of a numeric value (:func:`quantile_bounds`) or categories.
* **PSI** (:func:`psi`), the population stability index, on the same bins. It is
  reported as the familiar effect size, but it does not make the decision: its null
  law is close to $(1/n + 1/m)\,\chi^2_{B-1}$ in the bulk, yet its upper tail is
  heavier (measured with 2 million simulated windows, ``n=1000``, 10 bins: at a
  nominal $10^{-5}$ it exceeds the threshold 2.1x as often for ``m=500`` and 5.2x for
  ``m=200``), while Pearson's statistic on the same counts stays at or below nominal.
* **Rate of an event** (:func:`rate_p_values`): a missing value, or a category never
  seen in the reference. Fisher's exact test on the 2x2 table (hits and misses in the
  window and in the reference), exact at any size, so a reference with no missing
  values at all does not make the first missing value an alarm.

The numeric tests run on *rank codes* (:func:`rank_codes`): each value is coded once,
on arrival, by its position among the sorted reference. A round sorts the window's codes
(32-bit integers: fast) and gets the KS statistic and the bin counts of many features
at once in a few vectorised passes over the window, whatever the reference's size.

>>> import numpy as np
>>> rng = np.random.default_rng(1)
>>> reference = np.sort(rng.normal(size=1000))
>>> same, shifted = rng.normal(size=500), rng.normal(0.5, 1.0, size=500)
>>> [round(float(ks_p_value(ks_statistic(reference, w), 1000, 500)), 3) for w in (same, shifted)]
[0.539, 0.0]
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special, stats

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.signedinteger[Any]]


def bonferroni_alpha(expected_run_time: float, test_every: int, tests: int) -> float:
    r"""Level of each test so that the tests together meet an expected run time.

    With ``tests`` tests run every ``test_every`` events, each at level $\alpha$, the
    expected number of rejections per event on a stationary stream is at most
    $tests \cdot \alpha / test\_every$, whatever the dependence between features,
    between overlapping windows and between rounds (linearity of expectation). Setting
    $\alpha = test\_every / (ERT \cdot tests)$ makes that at most $1/ERT$: one false
    rejection per ``expected_run_time`` events or fewer, on average over references.

    >>> bonferroni_alpha(100_000, 50, 40)
    1.25e-05
    """
    return min(0.5, test_every / (expected_run_time * max(tests, 1)))


def psi(
    reference_counts: ArrayLike, current_counts: ArrayLike, epsilon: float = 1e-4
) -> FloatArray:
    r"""Population stability index between two sets of counts (bins on the last axis).

    $$PSI = \sum_i (q_i - p_i) \ln \frac{q_i}{p_i}$$

    where $p_i$ and $q_i$ are the reference and current shares of bin $i$, each floored
    at ``epsilon`` so that an empty bin costs a finite amount. It is the symmetrised
    Kullback-Leibler divergence of the two histograms. Rows of two-dimensional input
    are independent.

    >>> round(float(psi([50, 50], [25, 75])), 4)  # 0.25 ln 2 + 0.25 ln 1.5
    0.2747
    >>> psi([[10, 10], [10, 10]], [[10, 10], [0, 20]]).round(4).tolist()
    [0.0, 4.6043]
    """
    r = np.asarray(reference_counts, dtype=np.float64)
    c = np.asarray(current_counts, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        # fmax also floors the NaN shares of an empty sample.
        p = np.fmax(r / r.sum(axis=-1, keepdims=True), epsilon)
        q = np.fmax(c / c.sum(axis=-1, keepdims=True), epsilon)
    out: FloatArray = np.sum((q - p) * np.log(q / p), axis=-1)
    return out


# Rank codes are 32-bit integers: numpy's SIMD sort takes 32 and 64-bit keys on any
# x86-64 with AVX2, 16-bit ones only with AVX-512. On an AVX2 machine, with other memory
# traffic between rounds, a test round took 0.7 ms with 32-bit codes and 1.0 ms with
# 16-bit ones; 64-bit codes only add memory traffic.
CODE_TYPE = np.int32


def rank_codes(reference_sorted: FloatArray, values: ArrayLike, size: int) -> IntArray:
    r"""Code values by their position among sorted reference values.

    With $L$ the number of reference values below $x$: a value strictly between two
    reference values gets $2L$, a value equal to a reference value gets $2L + 1$, and a
    missing value (NaN) gets ``2 * size + 1``, one past every other code. ``size`` is
    the largest reference length in use, so codes of several features share one range.
    The empirical distribution functions of the reference and of any set of values are
    step functions of these codes (see :func:`reference_cdf`).

    >>> rank_codes(np.array([1.0, 2.0, 2.0]), [0.5, 1.0, 1.5, 2.0, 9.0, np.nan], size=3).tolist()
    [0, 1, 2, 3, 6, 7]
    """
    v = np.asarray(values, dtype=np.float64)
    row = rank_codes_by_row(padded_rows([reference_sorted]), v.reshape(1, -1), size)
    codes: IntArray = row.reshape(v.shape)
    return codes


def padded_rows(rows: Sequence[FloatArray]) -> FloatArray:
    """Sorted reference arrays of different lengths as one array, each row NaN-padded to
    one past the longest (numpy sorts NaN last, so searches ignore the padding).

    >>> padded_rows([np.array([1.0, 2.0]), np.array([3.0])]).tolist()
    [[1.0, 2.0, nan], [3.0, nan, nan]]
    """
    out = np.full((len(rows), max((len(r) for r in rows), default=0) + 1), np.nan)
    for j, row in enumerate(rows):
        out[j, : len(row)] = row
    return out


def rank_codes_by_row(padded: FloatArray, values: FloatArray, size: int) -> IntArray:
    """:func:`rank_codes` of each row of ``values`` against the same row of ``padded``
    (from :func:`padded_rows`): one search per row, and the tie test for all rows at
    once.

    >>> padded = padded_rows([np.array([1.0, 2.0, 2.0]), np.array([5.0])])
    >>> rank_codes_by_row(padded, np.array([[2.0, 9.0], [5.0, np.nan]]), size=3).tolist()
    [[3, 6], [1, 7]]
    """
    left = np.empty(values.shape, dtype=np.intp)
    for j in range(len(values)):
        left[j] = padded[j].searchsorted(values[j])
    # A value equal to a reference value is where the search put it (never a NaN pad).
    tie = padded.ravel()[left + _row_starts(*padded.shape)] == values
    codes: IntArray = 2 * left + tie
    codes[np.isnan(values)] = 2 * size + 1
    return codes


def _row_starts(rows: int, width: int) -> IntArray:
    """Where each row of a (rows, width, ...) array starts once flattened to (rows *
    width, ...), as a column to add to indices within the rows."""
    starts: IntArray = np.arange(0, rows * width, width)[:, None]
    return starts


def reference_cdf(reference_sorted: FloatArray, size: int) -> FloatArray:
    """The reference's empirical distribution function at each code ``0 .. 2 * size``.

    For a code no value can take (inside a run of tied reference values, or past the
    reference's length) it repeats the previous code's value, so that evaluating a
    difference of distribution functions at every code visits only real points.

    >>> reference_cdf(np.array([1.0, 2.0, 2.0]), size=3).round(3).tolist()
    [0.0, 0.333, 0.333, 1.0, 1.0, 1.0, 1.0]
    """
    n = len(reference_sorted)
    out = np.full(2 * size + 1, np.nan)
    # The L-th and (L+1)-th reference values differ: something lies strictly between.
    gap = np.ones(n + 1, dtype=bool)
    gap[1:n] = reference_sorted[1:] > reference_sorted[:-1]
    below = np.flatnonzero(gap)
    out[2 * below] = below / n
    # A value equal to a run of ties that starts at L + 1 is at or above all of the run.
    starts = np.flatnonzero(gap[:n])
    out[2 * starts + 1] = np.searchsorted(reference_sorted, reference_sorted[starts], "right") / n
    filled = np.where(np.isnan(out), 0, np.arange(out.size))
    result: FloatArray = out[np.maximum.accumulate(filled)]
    return result


def ks_steps(cdfs: FloatArray) -> FloatArray:
    """What :func:`ks_from_sorted_codes` reads of reference distribution functions
    (rows of :func:`reference_cdf`): at each code $c$ from 0 to ``span`` (the missing
    code), the pair $F(c)$ and $F(c - 1)$, clamped to the table, so that one lookup per
    window value gives both.

    >>> ks_steps(np.array([[0.0, 0.5, 1.0]]))[0].tolist()
    [[0.0, 0.0], [0.5, 0.0], [1.0, 0.5], [1.0, 1.0]]
    """
    span = cdfs.shape[-1]
    codes = np.arange(span + 1)
    pairs = (cdfs[:, np.minimum(codes, span - 1)], cdfs[:, np.maximum(codes - 1, 0)])
    # Contiguous, so that the lookup's reshape is a view, not a copy of the table.
    steps: FloatArray = np.ascontiguousarray(np.stack(pairs, axis=-1))
    return steps


def ks_from_sorted_codes(codes: IntArray, valid: IntArray, steps: FloatArray) -> FloatArray:
    r"""KS statistics of windows given as rank codes (rows: features).

    Each row of ``codes`` is sorted, its ``valid[j]`` values first and missing codes
    after; ``steps[j]`` is :func:`ks_steps` of that feature's :func:`reference_cdf`.
    Between two consecutive codes of the window its distribution function is constant
    and the reference's is non-decreasing, so the supremum is reached next to a window
    value: with $c_i$ the $i$-th code (from 0) and $m$ the valid values,

    $$D = \max_i \max\left(\frac{i+1}{m} - F_{ref}(c_i),\;
    F_{ref}(c_i - 1) - \frac{i}{m}\right)$$

    (inside a run of equal codes only its ends matter, and the other terms are smaller).
    One pass over the window, however long the reference. A row with no value gives 0.
    """
    # (features, window, 2): F(c_i), F(c_i - 1). np.take: ten times faster than [].
    at = np.take(steps.reshape(-1, 2), codes + _row_starts(*steps.shape[:2]), axis=0)
    step = 1.0 / np.maximum(valid, 1)[:, None]
    position = np.arange(codes.shape[1], dtype=np.float64)
    # Capped at 1 so that missing codes (past the last valid one, F = 1) add nothing.
    above = np.minimum((position + 1.0) * step, 1.0) - at[..., 0]
    below = at[..., 1] - np.minimum(position * step, 1.0)
    result: FloatArray = np.maximum(above.max(axis=1), below.max(axis=1))
    return result


def ks_statistic(reference: ArrayLike, current: ArrayLike) -> float:
    r"""Two-sample Kolmogorov-Smirnov statistic $D = \sup_x |F_{ref}(x) - F_{cur}(x)|$.

    Missing values (NaN) are left out of both samples. Ties are handled exactly: the
    result equals :func:`scipy.stats.ks_2samp`'s statistic.

    >>> ks_statistic([1, 2, 3, 4], [3, 4, 5, 6])
    0.5
    """
    ref = np.asarray(reference, dtype=np.float64)
    ref = np.sort(ref[~np.isnan(ref)])
    size = len(ref)
    codes = np.sort(rank_codes(ref, current, size))[None, :]
    valid = np.count_nonzero(codes < 2 * size + 1, axis=1)
    steps = ks_steps(reference_cdf(ref, size)[None, :])
    return float(ks_from_sorted_codes(codes, valid, steps)[0])


def ks_p_value(d: ArrayLike, n: ArrayLike, m: ArrayLike) -> FloatArray:
    r"""Asymptotic p-value of KS statistics ``d`` of samples of sizes ``n`` and ``m``.

    $p = Q_{KS}(\sqrt{nm/(n+m)}\,D)$ with $Q_{KS}(x) = 2\sum_{k\ge1}(-1)^{k-1}e^{-2k^2x^2}$,
    the limit law of the statistic; above the exact p-value at these sample sizes.

    >>> round(float(ks_p_value(0.1, 1000, 1000)), 4)
    0.0001
    """
    n_, m_ = np.asarray(n, dtype=np.float64), np.asarray(m, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.sqrt(n_ * m_ / (n_ + m_))
    p: FloatArray = special.kolmogorov(np.nan_to_num(np.asarray(d) * scale))
    return p


def ks_scaled_critical(alpha: float) -> float:
    r"""Critical value of $\sqrt{nm/(n+m)}\,D$ at level ``alpha``: $Q_{KS}^{-1}(\alpha)$.

    >>> round(ks_scaled_critical(0.05), 4)
    1.3581
    """
    return float(special.kolmogi(alpha))


def quantile_bounds(reference_sorted: FloatArray, bins: int) -> IntArray:
    """Reference-quantile bins as ranges of rank codes: bin ``k`` holds codes
    ``bounds[k] .. bounds[k + 1] - 1``.

    The inner edges are the reference values at ranks ``k * n // bins``; a value equal
    to an edge goes to the bin above it. With ties, edges coincide and some bins are
    empty (they count for nothing, see :func:`chi2_dof`). The last bound is one past
    the last code of a present value, so it also covers values above the reference.

    >>> quantile_bounds(np.arange(10.0), 4).tolist()
    [0, 5, 11, 15, 21]
    """
    n = len(reference_sorted)
    edges = reference_sorted[np.arange(1, bins) * n // bins]
    inner = 2 * np.searchsorted(reference_sorted, edges, "left") + 1
    bounds: IntArray = np.concatenate([[0], inner, [2 * n + 1]]).astype(np.int64)
    return bounds


def bin_counts(codes: IntArray, bounds: IntArray, size: int) -> FloatArray:
    """Counts per bin of windows given as sorted rank codes (rows: features; ``bounds``
    per row, from :func:`quantile_bounds`; ``size`` as in :func:`rank_codes`)."""
    # Rows shifted apart make one sorted array: one search for every row and bound.
    offsets = (np.arange(codes.shape[0], dtype=np.int64) * (2 * size + 2))[:, None]
    at = np.searchsorted((codes + offsets).ravel(), (bounds + offsets).ravel())
    counts: FloatArray = np.diff(at.reshape(bounds.shape), axis=1).astype(np.float64)
    return counts


def chi2_homogeneity(reference_counts: ArrayLike, current_counts: ArrayLike) -> FloatArray:
    r"""Pearson's chi-square statistic of the 2 x k table (reference row, current row).

    $$X^2 = \sum_{s \in \{ref, cur\}} \sum_j \frac{(O_{sj} - E_{sj})^2}{E_{sj}},\quad
    E_{sj} = \frac{N_s\,T_j}{N}$$

    with $N_s$ the row totals, $T_j$ the column totals and $N$ the grand total; columns
    empty in both rows are skipped. Under the null it is asymptotically
    $\chi^2_{k'-1}$ with $k'$ the columns that can be non-empty. Rows of
    two-dimensional input are independent; a row with an empty sample gives 0.

    >>> round(float(chi2_homogeneity([30, 70], [50, 50])), 4)
    8.3333
    """
    r = np.asarray(reference_counts, dtype=np.float64)
    c = np.asarray(current_counts, dtype=np.float64)
    n_r, n_c = r.sum(axis=-1, keepdims=True), c.sum(axis=-1, keepdims=True)
    # The same sum, rewritten for a 2 x k table: (r_j N_c - c_j N_r)^2 / (T_j N_r N_c).
    numerator = (r * n_c - c * n_r) ** 2
    denominator = (r + c) * n_r * n_c
    terms = np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)
    stat: FloatArray = terms.sum(axis=-1)
    return stat


def chi2_dof(bounds: IntArray) -> int:
    """Degrees of freedom of the chi-square test on the bins ``bounds`` of one feature:
    the bins that are not empty ranges of codes, minus one.

    Each such bin holds a code some value can take, but the reference may leave it
    empty (a feature with many ties: nothing below its smallest value); such a bin
    still counts, which makes the test conservative for that feature.

    >>> chi2_dof(np.array([0, 2, 2, 5]))
    1
    """
    return max(int(np.count_nonzero(np.diff(bounds) > 0)) - 1, 0)


def chi2_p_value(stat: ArrayLike, dof: ArrayLike) -> FloatArray:
    """Upper-tail p-value of a chi-square statistic.

    >>> round(float(chi2_p_value(3.841458820694124, 1)), 6)
    0.05
    """
    p: FloatArray = special.chdtrc(np.asarray(dof, dtype=np.float64), np.asarray(stat))
    return p


def chi2_critical(alpha: float, dof: ArrayLike) -> FloatArray:
    """Critical chi-square value at level ``alpha`` (infinite for 0 degrees of freedom).

    >>> chi2_critical(0.05, [1, 0]).round(4).tolist()
    [3.8415, inf]
    """
    d = np.asarray(dof, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        crit: FloatArray = np.where(d > 0, special.chdtri(np.maximum(d, 1.0), alpha), np.inf)
    return crit


RateSide = Literal["two-sided", "greater"]


def rate_p_values(
    hits: ArrayLike, window: int, reference_hits: int, reference_size: int, side: RateSide
) -> FloatArray:
    r"""Fisher's exact p-values for ``hits`` events out of ``window`` against
    ``reference_hits`` out of ``reference_size`` in the reference.

    Given the total $t$ of hits in both, the window's count is hypergeometric,
    $X \sim H(n + m, t, m)$. ``"greater"`` is $P(X \ge x)$; ``"two-sided"`` doubles the
    smaller tail (capped at 1), so each side is tested at half the level.

    >>> from scipy.stats import fisher_exact
    >>> round(float(rate_p_values(12, 500, 3, 1000, "greater")), 8)
    0.00026625
    >>> round(float(fisher_exact([[12, 488], [3, 997]], alternative="greater").pvalue), 8)
    0.00026625
    """
    x = np.asarray(hits, dtype=np.int64)
    total = reference_hits + x
    upper: FloatArray = stats.hypergeom.sf(x - 1, reference_size + window, total, window)
    if side == "greater":
        return upper
    lower: FloatArray = stats.hypergeom.cdf(x, reference_size + window, total, window)
    result: FloatArray = np.minimum(1.0, 2.0 * np.minimum(upper, lower))
    return result


@functools.lru_cache(maxsize=1024)  # columns with the same reference count share limits
def rate_limits(
    alpha: float, window: int, reference_hits: int, reference_size: int, side: RateSide
) -> tuple[int, int]:
    """Counts out of ``window`` that reject at level ``alpha`` (see :func:`rate_p_values`):
    reject when the count is ``<= low`` or ``>= high``; ``low`` is -1 and ``high`` is
    ``window + 1`` when no count is extreme enough.

    >>> rate_limits(1e-5, 500, 0, 1000, "greater")
    (-1, 11)
    """
    counts = np.arange(window + 1)
    total = reference_hits + counts
    size = reference_size + window
    half = alpha / 2 if side == "two-sided" else alpha
    upper = stats.hypergeom.sf(counts - 1, size, total, window) <= half
    high = int(counts[upper][0]) if upper.any() else window + 1
    if side == "greater":
        return -1, high
    lower = stats.hypergeom.cdf(counts, size, total, window) <= half
    low = int(counts[lower][-1]) if lower.any() else -1
    return low, high


def good_turing_unseen(category_counts: ArrayLike) -> int:
    """Reference events that stand for "a category not seen before": the categories seen
    exactly once (Good-Turing: the chance that the next value is new is about
    ``singletons / n``). Used as the reference's hits in the unseen-category test.

    >>> good_turing_unseen([5, 1, 1, 3])
    2
    """
    return int(np.count_nonzero(np.asarray(category_counts) == 1))


def normal_two_sided_critical(alpha: float) -> float:
    """``z`` with ``P(|Z| > z) = alpha`` for a standard normal ``Z``.

    >>> round(normal_two_sided_critical(0.05), 3)
    1.96
    """
    return float(special.ndtri(1.0 - alpha / 2.0))
