r"""Feature and prediction drift: the label-free early warning.

Per (model, version), a :class:`FeatureDriftTracker` keeps a reference (the first
``reference_size`` events of the version) and a sliding window of the last
``window_size`` events, and every ``test_every`` events tests the window of each
monitored column against the reference. Columns are the input features, the
prediction (``"__prediction__"``) and each class score (``"__score__:<class>"``).

Tests (the statistics are in :mod:`stream_monitor.core.distribution`):

* numeric column: Kolmogorov-Smirnov (``ks``) and Pearson's chi-square on 10
  reference-quantile bins (``chi2``, with the PSI of those bins reported), plus river's
  ADWIN (``adwin``) on the standardised mean of each block of ``test_every`` values,
  which catches small mean shifts that a window of a few hundred values cannot;
* categorical column (text values; the predicted class): chi-square on category
  counts (``chi2``) and the count of categories never seen in the reference
  (``unseen``, its own signal);
* any column but the prediction: the missing-value count (``missing``, its own signal).

**Thresholds from a false-alarm budget.** The user states the tolerated expected run
time (ERT): the mean number of events between false alarms on a stationary stream, all
columns together. With $T$ tests per round, each runs at level
$\alpha = test\_every / (ERT \cdot T)$ (Bonferroni across tests and rounds, see
:func:`~stream_monitor.core.distribution.bonferroni_alpha`). By linearity of
expectation this bounds the false alarms per event by $1/ERT$ under any dependence
between columns and between overlapping windows, so no simulation is needed and
calibration takes milliseconds when the reference completes. Holm would add nothing
before the first rejection, which is all a false alarm is; Benjamini-Hochberg controls
the share of false discoveries among discoveries, not the alarm rate of a stationary
stream; simulation from the reference (as alibi-detect does) would be tighter but
needs on the order of ERT / test_every simulated rounds per version. The bound is
conservative: overlapping windows make rejections come in clusters that raise one
alarm (below), so the measured run time is longer than the ERT asked for. ADWIN's
``delta`` is set to the same $\alpha$; its own bound holds per check and is loose (on
standard normal input, measured about 1000x below ``delta``).

**One change, one episode.** Each column has a drift state per kind (distribution,
missing, unseen). A test that rejects while its kind is ``ok`` raises one
:class:`FeatureSignal` and moves the kind to ``drifted``; further rejections are
silent. The kind re-arms when all its tests accept again at ``recovery_p_value`` (KS,
chi-square and the rate tests; for ADWIN: no cut for a whole window and its window
mean back within that level of the reference mean), or on
:meth:`FeatureDriftTracker.reset`. The gap between the tiny test level and the
recovery level is a hysteresis: a drift that persists keeps one episode, a return
re-arms. An ADWIN cut back towards the reference mean is no signal, and a change ADWIN
finds that began before the column's last episode ended reopens that episode silently.
Limit: a shift so small that the window tests only reach the threshold now and then
(about 0.1 standard deviation with the defaults) can re-arm in between and open a new
episode thousands of events later; the policy's cooldown merges those.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter, methodcaller
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from river import drift

from stream_monitor.config import FeatureDriftSettings
from stream_monitor.core import distribution as dist

PREDICTION = "__prediction__"
SCORE_PREFIX = "__score__:"
_RESERVED = (PREDICTION, SCORE_PREFIX)  # column names that are not input features
# Chi-square cells and the distribution tests need this many expected values.
MIN_EXPECTED = 5

Task = Literal["classification", "regression"]
Kind = Literal[
    "numeric", "categorical", "missing", "unseen", "prediction", "score", "breakage", "schema"
]
TestName = Literal["ks", "chi2", "adwin", "missing", "unseen", "breakage", "schema"]
Role = Literal["input", "prediction", "score"]
FeatureValue = float | int | str | None
BoolArray = NDArray[np.bool_]


@dataclass(slots=True)
class _Events:
    """Events waiting for the reference to complete or for the next round, by field."""

    features: list[Mapping[str, FeatureValue]] = field(default_factory=list)
    predictions: list[object] = field(default_factory=list)
    scores: list[Mapping[str, float] | None] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class FeatureSignal:
    """A column moved away from its reference: the first rejection of an episode.

    ``score`` is compared with ``threshold``: the KS distance ``D``, the chi-square
    statistic, the missing or unseen share of the window (threshold: the smallest share
    that rejects upwards), or for ADWIN the mean shift in reference standard deviations
    (threshold ``None``: ADWIN's cut depends on its window). ``psi`` is the column's
    population stability index at that moment (``None`` for missing and unseen).
    ``observations`` counts the events the tracker has seen.
    """

    feature: str
    kind: Kind
    test: TestName
    score: float
    threshold: float | None
    p_value: float | None
    psi: float | None
    observations: int
    detail: str | None = None
    """What a broken pipeline or a schema change looks like (kinds ``breakage`` and
    ``schema``): a sentence for the escalation."""


@dataclass(frozen=True, slots=True)
class Statistic:
    """One test's value at the last round, as in :class:`FeatureSignal`."""

    score: float
    threshold: float | None
    p_value: float | None


@dataclass(frozen=True, slots=True)
class FeatureStats:
    """A monitored column at the last round, for metrics."""

    kind: Literal["numeric", "categorical"]
    drifted: tuple[Kind, ...]
    tests: dict[TestName, Statistic]
    psi: float
    missing_rate: float
    reference_missing_rate: float


@dataclass(frozen=True, slots=True)
class _Column:
    name: str
    role: Role
    key: str | None

    def values(self, events: _Events) -> list[object]:
        if self.role == "input":
            return list(map(methodcaller("get", self.key), events.features))
        if self.role == "prediction":
            return list(events.predictions)
        return [s.get(self.key) if s else None for s in events.scores]  # type: ignore[arg-type]

    def kind(self, value_kind: Literal["numeric", "categorical"]) -> Kind:
        return value_kind if self.role == "input" else self.role


def _floats(columns: Sequence[_Column], events: _Events) -> dist.FloatArray:
    """Values as a (columns, events) float array; missing and non-numbers are NaN."""
    rows: list[Sequence[object] | None] = [
        c.values(events) if c.role != "input" else None for c in columns
    ]
    inputs = [j for j, c in enumerate(columns) if c.role == "input"]
    if len(inputs) > 1:
        try:
            # One C-level lookup per event for all input columns (all keys present).
            get = itemgetter(*(columns[j].key for j in inputs))
            for j, row in zip(inputs, zip(*map(get, events.features), strict=True), strict=True):
                rows[j] = row
        except KeyError:
            pass
    table = [row if row is not None else columns[j].values(events) for j, row in enumerate(rows)]
    try:
        return np.array(table, dtype=np.float64)  # None becomes NaN
    except (TypeError, ValueError):
        # Text in a numeric column cannot be compared with its reference: missing.
        clean = [[v if isinstance(v, int | float) else None for v in row] for row in table]
        return np.array(clean, dtype=np.float64)


def _ring(position: int, length: int, size: int) -> dist.IntArray:
    return (position + np.arange(length)) % size


def _transition(state: BoolArray, hit: BoolArray, calm: BoolArray) -> list[int]:
    """Move drift states on by one round; return the columns whose episode starts now."""
    if not (hit.any() or state.any()):
        return []  # the usual round: nothing fires, nothing drifts
    start = np.flatnonzero(~state & hit).tolist()
    state[:] = np.where(state, ~calm, hit)
    return start


def _limits(
    level: float, hits: dist.IntArray, window: int, size: int, side: dist.RateSide
) -> tuple[dist.IntArray, dist.IntArray]:
    pairs = [dist.rate_limits(level, window, int(h), size, side) for h in hits]
    return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


class _NumericGroup:
    """The numeric columns of one tracker, tested together on rank codes."""

    def __init__(
        self, columns: list[_Column], reference: dist.FloatArray, s: FeatureDriftSettings
    ) -> None:
        n, width, k = s.reference_size, s.window_size, len(columns)
        self.columns = columns
        self.size = n
        self.block = s.test_every
        self.epsilon = s.psi_epsilon
        self.sorted = [np.sort(row[~np.isnan(row)]) for row in reference]
        self.valid_reference = np.array([len(r) for r in self.sorted], dtype=np.float64)
        self.missing_reference = n - self.valid_reference.astype(np.int64)
        # Too few reference values to fill every bin: only the missing rate is tested.
        self.min_valid = MIN_EXPECTED * s.psi_bins
        testable = self.valid_reference >= self.min_valid
        self.bounds = np.zeros((k, s.psi_bins + 1), dtype=np.int64)
        self.padded = dist.padded_rows(self.sorted)
        codes = dist.rank_codes_by_row(self.padded, reference, n).astype(dist.CODE_TYPE)
        for j, ref in enumerate(self.sorted):
            if testable[j]:
                self.bounds[j] = dist.quantile_bounds(ref, s.psi_bins)
        self.reference_bins = dist.bin_counts(np.sort(codes, axis=1), self.bounds, n)
        self.dof = np.array([dist.chi2_dof(b) for b in self.bounds])
        self.mean = np.array([r.mean() if len(r) else 0.0 for r in self.sorted])
        self.std = np.array([r.std() if len(r) else 0.0 for r in self.sorted])
        self.ks_on = testable
        self.ks_steps = self._ks_steps()
        self.chi2_on = testable & (self.dof > 0)
        self.adwin_on = testable & (self.std > 0)
        self.missing_on = np.array([c.role != "prediction" for c in columns])
        # The window starts as the reference's tail, so tests can run from the next round.
        self.window = codes[:, n - width :].copy()
        self.position = 0
        self.adwins: list[drift.ADWIN | None] = [None] * k
        self.fired = np.zeros(k, dtype=bool)
        self.drifted = np.zeros(k, dtype=bool)
        self.calm_since = np.full(k, -np.inf)  # when the last episode ended
        self.last_cut = np.full(k, -np.inf)  # when ADWIN last found a change
        self.missing_drifted = np.zeros(k, dtype=bool)
        self.last: dict[str, dist.FloatArray] = {}
        # Broken-pipeline signatures. A unit change multiplies every value, so it moves
        # the typical magnitude (median |x|) by its factor and, unless the values are
        # near 0, takes most of them out of the reference's range; near 0, a shrinking
        # unit shows in the spread around the median (MAD) of a continuous column (no
        # value in over 10 % of the reference: a discrete one can have a window MAD of 0).
        self.median = np.array([np.median(r) if len(r) else 0.0 for r in self.sorted])
        self.magnitude = np.array([np.median(np.abs(r)) if len(r) else 0.0 for r in self.sorted])
        self.spread = np.array(
            [
                np.median(np.abs(r - m)) if len(r) else 0.0
                for r, m in zip(self.sorted, self.median, strict=True)
            ]
        )
        self.top_share = np.array([_top_share(r) for r in self.sorted])
        self.continuous = (self.top_share <= 0.1) & (self.spread > 0)
        blocks = max(width // self.block, 1)
        self.block_magnitude = np.full((k, blocks), np.nan)
        self.block_spread = np.full((k, blocks), np.nan)
        self.block_position = 0
        self.broken = np.zeros(k, dtype=bool)
        self.breakage = _Breakage(
            s.breakage_missing_share, s.breakage_scale_factor, s.breakage_unseen_share
        )

    def _ks_steps(self) -> dist.FloatArray:
        cdf = np.zeros((len(self.columns), 2 * self.size + 1))
        for j in np.flatnonzero(self.ks_on).tolist():
            cdf[j] = dist.reference_cdf(self.sorted[j], self.size)
        return dist.ks_steps(cdf)

    def __getstate__(self) -> dict[str, object]:
        # Derived from the sorted reference (the CDFs 32 KB a column): rebuilt on restore.
        return {k: v for k, v in self.__dict__.items() if k not in ("ks_steps", "padded")}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self.ks_steps = self._ks_steps()
        self.padded = dist.padded_rows(self.sorted)
        # Snapshots of earlier versions hold 16-bit codes, which sort slower.
        self.window = self.window.astype(dist.CODE_TYPE, copy=False)

    def test_count(self) -> int:
        return int(sum(a.sum() for a in (self.ks_on, self.chi2_on, self.adwin_on, self.missing_on)))

    def calibrate(self, alpha: float, reference: dist.FloatArray, s: FeatureDriftSettings) -> None:
        recovery, width = s.recovery_p_value, s.window_size
        self.ks_critical = dist.ks_scaled_critical(alpha)
        self.ks_recovery = dist.ks_scaled_critical(recovery)
        self.chi2_critical = dist.chi2_critical(alpha, self.dof)
        self.chi2_recovery = dist.chi2_critical(recovery, self.dof)
        self.z_recovery = dist.normal_two_sided_critical(recovery)
        self.missing_low, self.missing_high = _limits(
            alpha, self.missing_reference, width, self.size, "two-sided"
        )
        self.calm_low, self.calm_high = _limits(
            recovery, self.missing_reference, width, self.size, "two-sided"
        )
        delta = s.adwin_delta if s.adwin_delta is not None else alpha
        self.adwins = [drift.ADWIN(delta=delta, clock=1) if on else None for on in self.adwin_on]
        # ADWIN starts with the reference in its window, so it can cut right after it.
        for start in range(0, self.size, self.block):
            self._feed_adwin(reference[:, start : start + self.block])
        self.fired[:] = False

    def insert(self, values: dist.FloatArray) -> None:
        self.block_magnitude[:, self.block_position] = _row_medians(np.abs(values))
        self.block_spread[:, self.block_position] = _row_medians(
            np.abs(values - self.median[:, None])
        )
        self.block_position = (self.block_position + 1) % self.block_spread.shape[1]
        codes = dist.rank_codes_by_row(self.padded, values, self.size)
        where = _ring(self.position, values.shape[1], self.window.shape[1])
        self.window[:, where] = codes
        self.position = int(where[-1] + 1) % self.window.shape[1]
        self._feed_adwin(values)

    def _feed_adwin(self, values: dist.FloatArray) -> None:
        valid = ~np.isnan(values)
        count = valid.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(valid, values, 0.0).sum(axis=1) / count
            # A block mean in units of its own standard error: about N(0, 1) on any
            # feature, the scale ADWIN's bound is written for.
            z = (mean - self.mean) / self.std * np.sqrt(count)
        # Python floats and ints: indexing numpy arrays one item at a time costs more.
        columns = zip(self.adwins, count.tolist(), z.tolist(), strict=True)
        for j, (detector, n, value) in enumerate(columns):
            if detector is not None and n > 0:
                detector.update(value)
                if detector.drift_detected:
                    self.fired[j] = True

    def round(self, observations: int) -> list[FeatureSignal]:
        codes = np.sort(self.window, axis=1)  # missing values (the largest code) last
        valid = np.count_nonzero(codes <= 2 * self.size, axis=1).astype(np.float64)
        testable = valid >= self.min_valid
        pooled = self.valid_reference + valid
        product = self.valid_reference * valid
        scale = np.sqrt(np.divide(product, pooled, out=np.zeros_like(pooled), where=pooled > 0))
        bins = dist.bin_counts(codes, self.bounds, self.size)
        ks = dist.ks_from_sorted_codes(codes, valid, self.ks_steps) * (self.ks_on & testable)
        chi2 = dist.chi2_homogeneity(self.reference_bins, bins) * (self.chi2_on & testable)
        missing = codes.shape[1] - valid
        self.last = {
            "ks": ks,
            "scale": scale,
            "valid": valid,
            "chi2": chi2,
            "missing": missing,
            "bins": bins,
        }
        adwin, adwin_calm = self._adwin_round(observations)
        hits = {
            "ks": ks * scale > self.ks_critical,
            "chi2": chi2 > self.chi2_critical,
            "adwin": adwin,
        }
        calm = (ks * scale <= self.ks_recovery) & (chi2 <= self.chi2_recovery) & adwin_calm
        self.calm_since[self.drifted & calm] = observations
        missing_hit = self.missing_on & (
            (missing <= self.missing_low) | (missing >= self.missing_high)
        )
        missing_calm = (missing > self.calm_low) & (missing < self.calm_high)

        signals = []
        for j in _transition(self.drifted, hits["ks"] | hits["chi2"] | adwin, calm):
            stats = self.test_stats(j)
            fired = [t for t in _DISTRIBUTION_TESTS if hits[t][j]]
            # The most significant test names the episode; ADWIN has no p-value: last.
            test = min(fired, key=lambda t: _p_or(stats[t], 2.0))
            kind = self.columns[j].kind("numeric")
            signals.append(
                _signal(self.columns[j], kind, test, stats[test], self.psi(j), observations)
            )
        for j in _transition(self.missing_drifted, missing_hit, missing_calm):
            rate = self.test_stats(j)["missing"]
            signals.append(_signal(self.columns[j], "missing", "missing", rate, None, observations))
        return signals + self._breakages(codes, valid, observations)

    def _breakages(
        self, codes: dist.IntArray, valid: dist.FloatArray, observations: int
    ) -> list[FeatureSignal]:
        """Signatures of a broken pipeline: most values missing, a scale moved by orders
        of magnitude (a unit change), a constant where the reference varied."""
        s, width = self.breakage, self.window.shape[1]
        inputs = np.array([c.role == "input" for c in self.columns])
        missing_share = 1.0 - valid / width
        enough = valid >= self.min_valid
        last_valid = codes[np.arange(len(codes)), np.maximum(valid.astype(np.int64) - 1, 0)]
        constant = enough & (codes[:, 0] == last_valid) & (self.top_share <= _VARIED)
        # Codes 0 and 2 n: below and above every reference value.
        outside = ((codes == 0) | (codes == 2 * self.valid_reference[:, None])).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            magnitude = _row_medians(self.block_magnitude) / self.magnitude
            spread = _row_medians(self.block_spread) / self.spread
            factor = s.scale_factor
            moved = (outside >= valid / 2) & ((magnitude >= factor) | (magnitude <= 1 / factor))
            shrunk = self.continuous & (spread <= 1 / factor)
        ratio = np.where(moved, magnitude, spread)
        scaled = enough & (moved | shrunk)
        missing = (missing_share >= s.missing_share) & (self.missing_reference <= self.size / 2)
        hit = inputs & (missing | scaled | constant)
        return _breakage_signals(
            self.columns,
            _transition(self.broken, hit, ~hit),
            [
                (missing, _missing_detail(missing_share), missing_share, s.missing_share),
                (constant, _constant_detail, np.ones_like(ratio), _VARIED),
                (
                    scaled,
                    lambda name, j: (
                        f"{name}'s scale moved by a factor {ratio[j]:.3g} (a unit change?)"
                    ),
                    ratio,
                    s.scale_factor,
                ),
            ],
            observations,
        )

    def _adwin_round(self, observations: int) -> tuple[BoolArray, BoolArray]:
        """ADWIN's new episodes, and where ADWIN lets a drifted column recover.

        A detection counts when ADWIN's window, after the cut, has a mean off the
        reference's (a cut back towards the reference is no drift). One whose changed
        part began before the column's last episode ended belongs to that episode (the
        window tests can signal and re-arm before ADWIN cuts): it reopens it silently.
        A column recovers only once ADWIN has gone a whole window without a cut (not
        just been cut short) and its window mean is back near the reference's.
        """
        self.last_cut[self.fired] = observations
        hit = np.zeros(len(self.columns), dtype=bool)
        calm = observations - self.last_cut >= self.window.shape[1]
        # Reading ADWIN is a call into river: only where it fired or may recover.
        for j in np.flatnonzero(self.fired | (self.drifted & self.adwin_on)).tolist():
            detector = self.adwins[j]
            assert detector is not None
            away = abs(detector.estimation) * math.sqrt(detector.width) > self.z_recovery
            calm[j] &= not away
            if self.fired[j] and away and not self.drifted[j]:
                if observations - detector.width * self.block < self.calm_since[j]:
                    self.drifted[j] = True
                else:
                    hit[j] = True
        self.fired[:] = False
        return hit, calm

    def psi(self, j: int) -> float:
        return float(dist.psi(self.reference_bins[j], self.last["bins"][j], self.epsilon))

    def _adwin_shift(self, j: int) -> float:
        """ADWIN's window mean, from block standard errors to reference standard deviations."""
        detector = self.adwins[j]
        assert detector is not None
        block_valid = self.block * self.last["valid"][j] / self.window.shape[1]
        return float(detector.estimation) / math.sqrt(max(block_valid, 1.0))

    def test_stats(self, j: int) -> dict[TestName, Statistic]:
        last, width = self.last, self.window.shape[1]
        out: dict[TestName, Statistic] = {}
        scale = float(last["scale"][j])
        if self.ks_on[j]:
            out["ks"] = Statistic(
                float(last["ks"][j]),
                self.ks_critical / scale if scale > 0 else math.inf,
                float(dist.ks_p_value(last["ks"][j], self.valid_reference[j], last["valid"][j])),
            )
        if self.chi2_on[j]:
            out["chi2"] = Statistic(
                float(last["chi2"][j]),
                float(self.chi2_critical[j]),
                float(dist.chi2_p_value(last["chi2"][j], self.dof[j])),
            )
        if self.adwin_on[j]:
            out["adwin"] = Statistic(self._adwin_shift(j), None, None)
        if self.missing_on[j]:
            out["missing"] = _rate_stats(
                int(last["missing"][j]),
                width,
                int(self.missing_reference[j]),
                self.size,
                int(self.missing_high[j]),
                "two-sided",
            )
        return out

    def feature_stats(self, j: int) -> FeatureStats:
        drifted: tuple[Kind, ...] = (self.columns[j].kind("numeric"),) if self.drifted[j] else ()
        if self.missing_drifted[j]:
            drifted += ("missing",)
        return FeatureStats(
            "numeric",
            drifted,
            self.test_stats(j),
            self.psi(j),
            float(self.last["missing"][j]) / self.window.shape[1],
            float(self.missing_reference[j]) / self.size,
        )


_DISTRIBUTION_TESTS: tuple[TestName, ...] = ("ks", "chi2", "adwin")


@dataclass(frozen=True, slots=True)
class _Breakage:
    """The broken-pipeline thresholds of :class:`FeatureDriftSettings`."""

    missing_share: float
    scale_factor: float
    unseen_share: float


_VARIED = 0.95
"""A column varied in its reference when its most frequent value had at most this share."""


# A broken-pipeline signature: where it holds, how to say it (a column's name and
# index), its score by column, and the threshold the score passed.
_Signature = tuple[BoolArray, Callable[[str, int], str], dist.FloatArray, float]


def _breakage_signals(
    columns: Sequence[_Column], starting: list[int], signatures: list[_Signature], observations: int
) -> list[FeatureSignal]:
    """A breakage signal for each column in ``starting``, named by the first of
    ``signatures`` that holds for it (one does: they make up its hit)."""
    signals = []
    for j in starting:
        name = columns[j].name
        _, describe, scores, threshold = next(sig for sig in signatures if sig[0][j])
        score, detail = float(scores[j]), describe(name, j)
        breakage = FeatureSignal(
            name, "breakage", "breakage", score, threshold, None, None, observations, detail
        )
        signals.append(breakage)
    return signals


def _missing_detail(share: dist.FloatArray) -> Callable[[str, int], str]:
    return lambda name, j: f"{name} is missing in {share[j]:.0%} of the window"


def _constant_detail(name: str, j: int) -> str:
    return f"{name} is constant where the reference varied"


def _row_medians(values: dist.FloatArray) -> dist.FloatArray:
    """Median of each row's non-NaN values (NaN for a row without any), silently."""
    ordered = np.sort(values, axis=1)  # NaN last
    count = np.count_nonzero(~np.isnan(ordered), axis=1)
    rows = np.arange(len(values))
    low = ordered[rows, np.maximum((count - 1) // 2, 0)]
    high = ordered[rows, np.maximum(count // 2, 0)]
    medians: dist.FloatArray = np.where(count > 0, (low + high) / 2.0, np.nan)
    return medians


def _top_share(sorted_values: dist.FloatArray) -> float:
    """Share of the most frequent value among sorted values (1 for none)."""
    if len(sorted_values) == 0:
        return 1.0
    _, counts = np.unique(sorted_values, return_counts=True)
    return float(counts.max() / len(sorted_values))


def _p_or(stats: Statistic, default: float) -> float:
    return stats.p_value if stats.p_value is not None else default


def _signal(
    column: _Column,
    kind: Kind,
    test: TestName,
    stats: Statistic,
    psi: float | None,
    observations: int,
) -> FeatureSignal:
    return FeatureSignal(
        column.name, kind, test, stats.score, stats.threshold, stats.p_value, psi, observations
    )


def _rate_stats(
    hits: int, window: int, reference_hits: int, size: int, high: int, side: dist.RateSide
) -> Statistic:
    p = dist.rate_p_values(hits, window, reference_hits, size, side)
    return Statistic(hits / window, high / window, float(p))


@dataclass(frozen=True, slots=True)
class _Cells:
    """How a categorical column's values map to chi-square cells."""

    codes: dict[Hashable, int]
    """Kept categories: 0 .. kept - 1; any other reference category: ``kept`` (the rest)."""
    kept: int
    rest: bool
    """Whether the rest (other and unseen categories) is a cell of its own."""


def _cells(values: Sequence[object], keep: int, window: int) -> _Cells:
    """Choose the cells on the even-numbered reference events: the ``keep`` most frequent
    categories expected at least MIN_EXPECTED times in a window, and the rest when it is
    expected as often. Only the odd-numbered events then count as the reference sample,
    so the cells do not depend on it: chosen on the same sample, the categories that
    were lucky in the reference would look under-represented in every window (measured:
    dozens of false alarms per million events on a long-tailed feature)."""
    chooser = values[0::2]
    counts: Counter[Hashable] = Counter(v for v in chooser if v is not None)
    enough = math.ceil(MIN_EXPECTED * len(chooser) / window)
    kept = [c for c, count in counts.most_common(keep) if count >= enough]
    codes: dict[Hashable, int] = {c: i for i, c in enumerate(kept)}
    rest = sum(counts.values()) - sum(counts[c] for c in kept)
    for value in values:
        if value is not None:
            codes.setdefault(value, len(kept))
    return _Cells(codes, len(kept), rest >= enough)


class _CategoricalGroup:
    """The categorical columns of one tracker, tested together on category codes."""

    def __init__(
        self, columns: list[_Column], reference: list[list[object]], s: FeatureDriftSettings
    ) -> None:
        n, width, k = s.reference_size, s.window_size, len(columns)
        self.columns = columns
        self.size = n
        self.epsilon = s.psi_epsilon
        cells = [_cells(values, s.max_categories, width) for values in reference]
        self.maps = [c.codes for c in cells]
        # Codes: kept categories, the rest (0 .. cells - 1), "unseen", "missing".
        self.cells = max(c.kept for c in cells) + 1
        self.offsets = (np.arange(k) * (self.cells + 2))[:, None]
        self.kept = np.array([c.kept for c in cells])
        self.cell_on = (
            np.arange(self.cells) < (self.kept + np.array([c.rest for c in cells]))[:, None]
        )
        self.dof = np.maximum(self.cell_on.sum(axis=1) - 1, 0)
        self.chi2_on = self.dof > 0
        codes = self._encode(reference)
        self.reference_counts = self._cell_counts(self._table(codes[:, 1::2]))
        counts = self._table(codes)
        self.missing_reference = counts[:, -1].astype(np.int64)
        self.singletons = np.array(
            [
                dist.good_turing_unseen(list(Counter(v for v in values if v is not None).values()))
                for values in reference
            ],
            dtype=np.int64,
        )
        self.missing_on = np.array([c.role != "prediction" for c in columns])
        self.window = codes[:, n - width :].copy()
        self.position = 0
        self.drifted = np.zeros(k, dtype=bool)
        self.unseen_drifted = np.zeros(k, dtype=bool)
        self.missing_drifted = np.zeros(k, dtype=bool)
        self.last: dict[str, dist.FloatArray] = {}
        valid_reference = np.maximum(n - self.missing_reference, 1)
        self.kept_cell = np.arange(self.cells) < self.kept[:, None]
        self.top_share = (counts[:, : self.cells] * self.kept_cell).max(axis=1) / valid_reference
        self.singleton_share = self.singletons / valid_reference
        self.broken = np.zeros(k, dtype=bool)
        self.breakage = _Breakage(
            s.breakage_missing_share, s.breakage_scale_factor, s.breakage_unseen_share
        )

    def _cell_counts(self, table: dist.IntArray) -> dist.FloatArray:
        """Chi-square cells from a code table: unseen values join the rest."""
        cells = table[:, : self.cells].astype(np.float64)
        cells[np.arange(len(self.columns)), self.kept] += table[:, -2]
        out: dist.FloatArray = cells * self.cell_on
        return out

    def test_count(self) -> int:
        return int(self.chi2_on.sum() + len(self.columns) + self.missing_on.sum())

    def calibrate(self, alpha: float, s: FeatureDriftSettings) -> None:
        recovery, width, n = s.recovery_p_value, s.window_size, self.size
        self.chi2_critical = dist.chi2_critical(alpha, self.dof)
        self.chi2_recovery = dist.chi2_critical(recovery, self.dof)
        self.unseen_high = _limits(alpha, self.singletons, width, n, "greater")[1]
        self.unseen_calm = _limits(recovery, self.singletons, width, n, "greater")[1]
        self.missing_low, self.missing_high = _limits(
            alpha, self.missing_reference, width, n, "two-sided"
        )
        self.calm_low, self.calm_high = _limits(
            recovery, self.missing_reference, width, n, "two-sided"
        )

    def _encode(self, columns: Sequence[Sequence[object]]) -> dist.IntArray:
        unseen, missing = self.cells, self.cells + 1
        return np.array(
            [
                [missing if v is None else codes.get(v, unseen) for v in values]
                for codes, values in zip(self.maps, columns, strict=True)
            ],
            dtype=np.int64,
        )

    def _table(self, codes: dist.IntArray) -> dist.IntArray:
        """Counts of each code (cells, then unseen, then missing) per column."""
        width = self.cells + 2
        counts = np.bincount((codes + self.offsets).ravel(), minlength=self.offsets.size * width)
        table: dist.IntArray = counts.reshape(len(self.columns), width)
        return table

    def insert(self, columns: Sequence[Sequence[object]]) -> None:
        where = _ring(self.position, len(columns[0]), self.window.shape[1])
        self.window[:, where] = self._encode(columns)
        self.position = int(where[-1] + 1) % self.window.shape[1]

    def round(self, observations: int) -> list[FeatureSignal]:
        table = self._table(self.window)
        cells = self._cell_counts(table)
        unseen, missing = table[:, -2].astype(np.float64), table[:, -1].astype(np.float64)
        testable = self.chi2_on & (cells.sum(axis=1) >= MIN_EXPECTED * (self.dof + 1))
        chi2 = dist.chi2_homogeneity(self.reference_counts, cells) * testable
        self.last = {"chi2": chi2, "unseen": unseen, "missing": missing, "cells": cells}
        missing_hit = self.missing_on & (
            (missing <= self.missing_low) | (missing >= self.missing_high)
        )
        missing_calm = (missing > self.calm_low) & (missing < self.calm_high)
        slots: tuple[tuple[BoolArray, BoolArray, BoolArray, TestName], ...] = (
            (self.drifted, chi2 > self.chi2_critical, chi2 <= self.chi2_recovery, "chi2"),
            (self.unseen_drifted, unseen >= self.unseen_high, unseen < self.unseen_calm, "unseen"),
            (self.missing_drifted, missing_hit, missing_calm, "missing"),
        )
        signals = self._breakages(table, observations)
        for state, hit, calm, test in slots:
            for j in _transition(state, hit, calm):
                column = self.columns[j]
                kind: Kind = "unseen" if test == "unseen" else "missing"
                psi = None
                if test == "chi2":
                    kind, psi = column.kind("categorical"), self.psi(j)
                stats = self.test_stats(j)[test]
                signals.append(_signal(column, kind, test, stats, psi, observations))
        return signals

    def _breakages(self, table: dist.IntArray, observations: int) -> list[FeatureSignal]:
        """Signatures of a broken pipeline: most values missing, most values never seen
        (renamed categories), a constant where the reference varied."""
        s, width = self.breakage, self.window.shape[1]
        inputs = np.array([c.role == "input" for c in self.columns])
        missing_share = table[:, -1] / width
        valid = width - table[:, -1]
        unseen_share = table[:, -2] / np.maximum(valid, 1)
        enough = valid >= MIN_EXPECTED * 10
        missing = (missing_share >= s.missing_share) & (self.missing_reference <= self.size / 2)
        unseen = (
            enough & (unseen_share >= s.unseen_share) & (self.singleton_share < s.unseen_share / 2)
        )
        top = (table[:, : self.cells] * self.kept_cell).max(axis=1)
        constant = enough & (top == valid) & (self.top_share <= _VARIED)
        hit = inputs & (missing | unseen | constant)
        return _breakage_signals(
            self.columns,
            _transition(self.broken, hit, ~hit),
            [
                (missing, _missing_detail(missing_share), missing_share, s.missing_share),
                (
                    unseen,
                    lambda name, j: (
                        f"{unseen_share[j]:.0%} of {name}'s values were never seen (renamed?)"
                    ),
                    unseen_share,
                    s.unseen_share,
                ),
                (constant, _constant_detail, np.ones_like(unseen_share), _VARIED),
            ],
            observations,
        )

    def psi(self, j: int) -> float:
        return float(dist.psi(self.reference_counts[j], self.last["cells"][j], self.epsilon))

    def test_stats(self, j: int) -> dict[TestName, Statistic]:
        last, width, n = self.last, self.window.shape[1], self.size
        out: dict[TestName, Statistic] = {}
        if self.chi2_on[j]:
            out["chi2"] = Statistic(
                float(last["chi2"][j]),
                float(self.chi2_critical[j]),
                float(dist.chi2_p_value(last["chi2"][j], self.dof[j])),
            )
        out["unseen"] = _rate_stats(
            int(last["unseen"][j]),
            width,
            int(self.singletons[j]),
            n,
            int(self.unseen_high[j]),
            "greater",
        )
        if self.missing_on[j]:
            out["missing"] = _rate_stats(
                int(last["missing"][j]),
                width,
                int(self.missing_reference[j]),
                n,
                int(self.missing_high[j]),
                "two-sided",
            )
        return out

    def feature_stats(self, j: int) -> FeatureStats:
        column = self.columns[j]
        drifted: tuple[Kind, ...] = ()
        for state, kind in (
            (self.drifted, column.kind("categorical")),
            (self.unseen_drifted, "unseen"),
            (self.missing_drifted, "missing"),
        ):
            if state[j]:
                drifted += (kind,)
        return FeatureStats(
            "categorical",
            drifted,
            self.test_stats(j),
            self.psi(j),
            float(self.last["missing"][j]) / self.window.shape[1],
            float(self.missing_reference[j]) / self.size,
        )


class FeatureDriftTracker:
    """Feature and prediction drift of one (model, version); see the module docstring.

    Feed every prediction of the version to :meth:`update`, in order. The first
    ``reference_size`` events form the reference (kept in the tracker, in compact form:
    sorted values and counts) and return no signal; then every ``test_every`` events
    one test round runs and returns the episodes that start. Between rounds an update
    only appends the event to a list, so the cost per event is a share of one
    vectorised round.

    Columns are fixed when the reference completes: the prediction, the input features
    seen in the reference (by name) and the class scores, up to ``max_features``
    (:attr:`unmonitored` counts the rest). A column is categorical if any of its
    reference values is text (and the prediction of a classifier is), numeric
    otherwise; text in a numeric column later counts as missing. A feature that first
    appears after the reference has nothing to be compared with: it is counted in
    :attr:`unmonitored` and raises one ``schema`` signal (a schema change), and it is
    monitored from the next version's reference on.

    The tracker is plain Python and numpy, written whole by :mod:`stream_monitor.core.codec`.

    Parameters
    ----------
    settings
        Sizes, the expected run time and the rest: :class:`FeatureDriftSettings`.
    task
        ``"classification"``: the prediction is a category; ``"regression"``: a number.
    shared_tests
        Tests outside the tracker that take a share of the same ``expected_run_time``
        (the estimated-performance test, see :mod:`stream_monitor.core.estimation`).

    Examples
    --------
    >>> import random
    >>> rng = random.Random(3)
    >>> tracker = FeatureDriftTracker(FeatureDriftSettings(), task="classification")
    >>> signals = []
    >>> for i in range(4000):
    ...     shift = 0.0 if i < 2500 else 1.0
    ...     features = {"x": rng.gauss(shift, 1.0), "y": rng.gauss(0.0, 1.0)}
    ...     signals += tracker.update(features, prediction=int(features["y"] > 0))
    >>> [(s.feature, s.kind, s.test) for s in signals]
    [('x', 'numeric', 'ks')]
    >>> 2500 < signals[0].observations <= 2700
    True
    >>> tracker.feature_stats()["x"].drifted, tracker.feature_stats()["y"].drifted
    (('numeric',), ())

    """

    def __init__(self, settings: FeatureDriftSettings, task: Task, shared_tests: int = 0) -> None:
        self.settings = settings
        self.task = task
        self.shared_tests = shared_tests
        """Other tests of the version that share the false-alarm budget (the estimate's)."""
        self.observations = 0
        self.unmonitored = 0
        self.tests = 0
        self.alpha = math.nan
        self._pending = _Events()
        self._numeric: _NumericGroup | None = None
        self._categorical: _CategoricalGroup | None = None
        self._ready = False
        self._known: list[str] = []
        """Input feature names seen so far: the reference's, then late ones."""

    @property
    def ready(self) -> bool:
        """Whether the reference is complete and tests run."""
        return self._ready

    def update(
        self,
        features: Mapping[str, FeatureValue],
        prediction: object,
        scores: Mapping[str, float] | None = None,
    ) -> list[FeatureSignal]:
        """Add one prediction event; return the drift episodes that start with it."""
        self.observations += 1
        pending = self._pending
        pending.features.append(features)
        pending.predictions.append(prediction)
        pending.scores.append(scores)
        if len(pending.features) < (
            self.settings.test_every if self._ready else self.settings.reference_size
        ):
            return []
        events, self._pending = pending, _Events()
        if not self._ready:
            self._build(events)
            return []
        signals = self._new_features(events)
        if self._numeric is not None:
            self._numeric.insert(_floats(self._numeric.columns, events))
            signals += self._numeric.round(self.observations)
        if self._categorical is not None:
            self._categorical.insert([c.values(events) for c in self._categorical.columns])
            signals += self._categorical.round(self.observations)
        return signals

    def _new_features(self, events: _Events) -> list[FeatureSignal]:
        """Input features that first appear after the reference: not tested (they have
        no reference), counted in :attr:`unmonitored`, each reported once as a schema
        change."""
        new = sorted(set().union(*events.features).difference(self._known))
        if not new:
            return []
        self._known += new
        self.unmonitored += len(new)
        count = len(events.features)
        return [
            FeatureSignal(
                name,
                "schema",
                "schema",
                sum(name in f for f in events.features) / count,
                None,
                None,
                None,
                self.observations,
                f"{name} is an input feature that the reference does not have",
            )
            for name in new
        ]

    def _build(self, events: _Events) -> None:
        names: set[str] = set().union(*events.features)
        self._known = sorted(names)
        classes: set[str] = set().union(*(s for s in events.scores if s))
        columns = [_Column(PREDICTION, "prediction", None)]
        columns += [_Column(name, "input", name) for name in sorted(names)]
        columns += [_Column(SCORE_PREFIX + c, "score", c) for c in sorted(classes)]
        self.unmonitored = max(len(columns) - self.settings.max_features, 0)
        columns = columns[: self.settings.max_features]

        numeric, categorical, texts = [], [], []
        for column in columns:
            values = column.values(events)
            if (column.role == "prediction" and self.task == "classification") or any(
                isinstance(v, str) for v in values
            ):
                categorical.append(column)
                texts.append(values)
            else:
                numeric.append(column)
        s = self.settings
        reference = _floats(numeric, events) if numeric else None
        if reference is not None:
            self._numeric = _NumericGroup(numeric, reference, s)
        if categorical:
            self._categorical = _CategoricalGroup(categorical, texts, s)
        groups = [g for g in (self._numeric, self._categorical) if g is not None]
        self.tests = sum(g.test_count() for g in groups)
        self.alpha = dist.bonferroni_alpha(
            s.expected_run_time, s.test_every, self.tests + self.shared_tests
        )
        if self._numeric is not None and reference is not None:
            self._numeric.calibrate(self.alpha, reference, s)
        if self._categorical is not None:
            self._categorical.calibrate(self.alpha, s)
        self._ready = True

    def _columns(self) -> list[tuple[_NumericGroup | _CategoricalGroup, int]]:
        out: list[tuple[_NumericGroup | _CategoricalGroup, int]] = []
        for group in (self._numeric, self._categorical):
            if group is not None:
                out += [(group, j) for j in range(len(group.columns))]
        return out

    def feature_stats(self) -> dict[str, FeatureStats]:
        """Each monitored column at the last round (empty until the first round)."""
        return {g.columns[j].name: g.feature_stats(j) for g, j in self._columns() if g.last}

    @property
    def monitored_inputs(self) -> int:
        """Input features under test (not the prediction nor scores)."""
        return sum(g.columns[j].role == "input" for g, j in self._columns())

    def drifted_features(self) -> list[str]:
        """Input features now in a drift episode of any kind."""
        return [
            g.columns[j].name
            for g, j in self._columns()
            if g.columns[j].role == "input" and _any_drifted(g, j)
        ]

    def reset(self) -> None:
        """End every episode: columns still drifting signal again at the next round."""
        for group, j in self._columns():
            for state in _states(group):
                state[j] = False


def _states(group: _NumericGroup | _CategoricalGroup) -> tuple[BoolArray, ...]:
    if isinstance(group, _NumericGroup):
        return group.drifted, group.missing_drifted, group.broken
    return group.drifted, group.unseen_drifted, group.missing_drifted, group.broken


def _any_drifted(group: _NumericGroup | _CategoricalGroup, j: int) -> bool:
    return any(bool(state[j]) for state in _states(group))
