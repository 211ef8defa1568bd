r"""Estimated performance: a classifier's accuracy from its own scores, before the labels.

Confidence-based performance estimation (CBPE, as NannyML calls it). If the scores of
a (model, version) are calibrated, the probability that a prediction is right is the
calibrated probability $p_i$ of the class it predicted, so the accuracy of a window of
$n$ predictions is expected to be

$$\hat a = \frac{1}{n} \sum_i p_i .$$

**Calibration.** The first ``calibration_size`` labelled pairs whose prediction carries
``scores`` fit one map per class, score -> probability that the label is that class
(one-vs-rest): isotonic regression (scikit-learn's pool-adjacent-violators, kept as its
threshold arrays) or histogram binning (equal-count bins, the share of hits in each).
A binary model's map is fitted for its positive class, the other class gets $1 - p$;
a multiclass model's calibrated vector is normalised to sum to one. Only the arrays are
kept (plain data, no fitted scikit-learn object).

**Interval.** Given the $p_i$, the number of right predictions is a sum of independent
Bernoulli variables (Poisson-binomial) with variance $\sum_i p_i (1 - p_i)$, so the
realised accuracy lies in $\hat a \pm z_{(1+level)/2} \sqrt{\sum_i p_i (1 - p_i)} / n$
(normal approximation). The interval does not include the calibrator's own error.

**Detector.** The reference is the mean calibrated confidence $\mu_0$ of the
calibration pairs, with variance $s_0^2$ of one confidence. On a stationary stream a
window's estimate differs from it by about $N(0, s_0^2 (1/n + 1/n_0))$ (the window's
sampling and the reference's, $n_0$ pairs), so a drop is confirmed when

$$z = \frac{\mu_0 - \hat a}{s_0 \sqrt{1/n + 1/n_0}} > z_{1-\alpha}$$

($s_0^2$ replaced by the window's own variance where that is larger, so scores that
did not vary in the reference cannot make any drop infinitely significant), with
$\alpha$ the Bonferroni share of one test in the version's false-alarm budget
(``features.expected_run_time``, shared with the feature tests, see
:func:`~stream_monitor.core.distribution.bonferroni_alpha`). As with the feature
tests, a drop opens one episode; it re-arms when the test's p-value is back above
``features.recovery_p_value``.

**Realised against estimated.** Predictions are also cut into consecutive windows of
``window_size`` estimated predictions; when the labels of at least half of a window
have arrived (and no more are expected), its realised accuracy is compared with the
estimate it was given.

**When it is not honest.** The estimate assumes that $P(\text{right} \mid \text{score})$
stays what it was on the calibration pairs. A covariate shift (inputs move, the
relation between inputs and labels does not) keeps that; concept drift (the labels of
the same inputs change) breaks it, and the estimate does not move. Scores that were
not calibrated on this model's traffic are calibrated here, from its labelled pairs.

>>> estimator = PerformanceEstimator(EstimationSettings(calibration_size=100,
...     window_size=100), test_every=100, expected_run_time=100_000.0, recovery_p_value=0.05)
>>> import random
>>> rng = random.Random(1)
>>> for i in range(100):  # labelled pairs: the score of "yes" is its probability
...     s = rng.random()
...     label = "yes" if rng.random() < s else "no"
...     predicted = "yes" if s > 0.5 else "no"
...     estimator.observe_label(predicted, label, {"yes": s, "no": 1 - s}, float(i))
>>> estimator.ready
True
>>> for i in range(100):  # confident predictions only: an estimate above the reference
...     s = rng.choice([0.02, 0.98])
...     _ = estimator.observe_prediction("yes" if s > 0.5 else "no",
...                                      {"yes": s, "no": 1 - s}, 100.0 + i, 10)
>>> estimate = estimator.last
>>> estimate.accuracy > estimator.reference and estimate.low < estimate.accuracy
True
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy import special
from sklearn.isotonic import IsotonicRegression

from stream_monitor.config import EstimationSettings
from stream_monitor.core import distribution as dist
from stream_monitor.core.events import Prediction, Scalar

FloatArray = NDArray[np.float64]
Method = Literal["isotonic", "histogram"]
RECENT_COMPARISONS = 32
"""Compared windows kept for the stats (the metrics show the last one)."""
MAX_OPEN_WINDOWS = 1000
"""Windows waiting for their labels; beyond, the oldest is given up."""


class ReferenceEvent(Prediction, frozen=True, gc=False):
    """A prediction event of a ``reference_file``; with its ``label``, it is also a
    calibration pair, so the estimate can start before the first live label."""

    label: Scalar | None = None


def class_key(value: object) -> str:
    """The score key a predicted class or label stands for (JSON object keys are text).

    >>> class_key("cat"), class_key(1), class_key(True)
    ('cat', '1', 'true')
    """
    if type(value) is str:
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class Calibrator:
    """One map per class from a score to the probability that the label is that class.

    ``xs[k]`` and ``ys[k]``: for isotonic, the thresholds of class ``k``'s step-free
    piecewise-linear map (interpolated, clipped at the ends); for histogram binning,
    the inner bin edges and each bin's share of hits. ``fitted[k]`` is False for a
    class without a map (the other class of a binary model: ``1 - p``).

    >>> scores = np.array([[0.1, 0.9], [0.2, 0.8], [0.7, 0.3], [0.9, 0.1]])
    >>> c = Calibrator.fit(["a", "b"], scores, np.array([1, 0, 0, 0]), "isotonic", 10, 1)
    >>> c.probabilities(np.array([[0.15, 0.85], [0.8, 0.2]])).round(3).tolist()
    [[0.5, 0.5], [1.0, 0.0]]
    """

    def __init__(
        self,
        method: Method,
        classes: list[str],
        xs: list[FloatArray],
        ys: list[FloatArray],
        fitted: list[bool],
    ) -> None:
        self.method = method
        self.classes = classes
        self.xs = xs
        self.ys = ys
        self.fitted = fitted

    @classmethod
    def fit(
        cls,
        classes: list[str],
        scores: FloatArray,
        labels: NDArray[np.int64],
        method: Method,
        bins: int,
        positive: int,
    ) -> Calibrator:
        """Fit on ``scores`` (pairs x classes) and ``labels`` (class index, -1: none)."""
        k = len(classes)
        fitted = [k > 2 or j == positive for j in range(k)]
        xs: list[FloatArray] = []
        ys: list[FloatArray] = []
        for j in range(k):
            if not fitted[j]:
                xs.append(np.zeros(0))
                ys.append(np.zeros(0))
                continue
            hits = (labels == j).astype(np.float64)
            x, y = (_isotonic if method == "isotonic" else _histogram)(scores[:, j], hits, bins)
            xs.append(x)
            ys.append(y)
        return cls(method, classes, xs, ys, fitted)

    def probabilities(self, scores: FloatArray) -> FloatArray:
        """Calibrated class probabilities of each row of ``scores`` (rows sum to one)."""
        out = np.empty_like(scores, dtype=np.float64)
        for j, on in enumerate(self.fitted):
            if not on:
                continue
            if self.method == "isotonic":
                out[:, j] = np.interp(scores[:, j], self.xs[j], self.ys[j])
            else:
                out[:, j] = self.ys[j][np.searchsorted(self.xs[j], scores[:, j], side="right")]
        if len(self.fitted) == 2:
            positive = self.fitted.index(True)
            out[:, 1 - positive] = 1.0 - out[:, positive]
            return out
        total = out.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            normalised: FloatArray = np.where(total > 0, out / total, 1.0 / len(self.fitted))
        return normalised

    def __getstate__(self) -> dict[str, object]:
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)


def _isotonic(score: FloatArray, hits: FloatArray, bins: int) -> tuple[FloatArray, FloatArray]:
    model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(score, hits)
    return (
        np.asarray(model.X_thresholds_, dtype=np.float64),
        np.asarray(model.y_thresholds_, dtype=np.float64),
    )


def _histogram(score: FloatArray, hits: FloatArray, bins: int) -> tuple[FloatArray, FloatArray]:
    """Equal-count bins: inner edges at score quantiles (ties merged), hit share per bin."""
    edges = np.unique(np.quantile(score, np.linspace(0, 1, bins + 1)[1:-1]))
    index = np.searchsorted(edges, score, side="right")
    counts = np.bincount(index, minlength=len(edges) + 1).astype(np.float64)
    sums = np.bincount(index, weights=hits, minlength=len(edges) + 1)
    overall = float(hits.mean())
    shares = np.where(counts > 0, sums / np.maximum(counts, 1.0), overall)
    return edges.astype(np.float64), shares.astype(np.float64)


@dataclass(frozen=True, slots=True)
class WindowEstimate:
    """The estimate of the last ``size`` estimated predictions (``first`` to ``last``,
    counted among the version's estimated predictions, from 1). Precision, recall, F1
    and ROC AUC are for binary models only (of the positive class)."""

    first: int
    last: int
    size: int
    accuracy: float
    low: float
    high: float
    start: float
    """Event time of the window's first and last prediction (epoch seconds)."""
    end: float
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    roc_auc: float | None = None


@dataclass(frozen=True, slots=True)
class EstimateSignal:
    """A confirmed drop of the estimated accuracy below the reference."""

    estimate: WindowEstimate
    reference: float
    drop: float
    z: float
    threshold: float
    p_value: float


@dataclass(frozen=True, slots=True)
class Comparison:
    """A window's estimate beside its realised accuracy, once its labels arrived."""

    first: int
    last: int
    estimated: float
    low: float
    high: float
    realised: float
    labelled: int
    start: float
    """Event time of the window's first and last prediction (epoch seconds)."""
    end: float

    @property
    def error(self) -> float:
        """Estimated minus realised accuracy."""
        return self.estimated - self.realised


@dataclass(frozen=True, slots=True)
class EstimationStats:
    """For metrics: the last estimate, the reference, and how estimates fared."""

    ready: bool
    calibration_pairs: int
    reference: float
    last: WindowEstimate | None
    drifted: bool
    compared: int
    mean_abs_error: float
    recent: tuple[Comparison, ...]


# A window of estimated predictions waiting for labels: start time, first and last
# number, estimate, interval, count, labelled, right, end time.
_Window = list[float]
_START, _FIRST, _LAST, _EST, _LOW, _HIGH, _COUNT, _LABELLED, _RIGHT, _END = range(10)


class PerformanceEstimator:
    """Estimated accuracy of one (model, version) from its calibrated scores.

    Feed it every prediction (:meth:`observe_prediction`) and every labelled pair
    (:meth:`observe_label`), in order. It collects calibration pairs until it is
    :attr:`ready`, then estimates every ``test_every`` predictions and returns a
    :class:`EstimateSignal` when a drop is confirmed (see the module docstring).

    State is plain data (numbers, lists, numpy arrays and a :class:`Calibrator`).
    """

    def __init__(
        self,
        settings: EstimationSettings,
        test_every: int,
        expected_run_time: float,
        recovery_p_value: float,
    ) -> None:
        self.method: Method = settings.method
        self.bins = settings.bins
        self.calibration_size = settings.calibration_size
        self.window_size = settings.window_size
        self.level = settings.interval_level
        self.positive_class = settings.positive_class
        self.test_every = test_every
        self.expected_run_time = expected_run_time
        self.recovery_p_value = recovery_p_value
        self.classes: list[str] = []
        self.class_index: dict[str, int] = {}
        self.positive = 0
        self.pairs_scores: list[list[float]] = []
        self.pairs_predicted: list[int] = []
        self.pairs_labels: list[int] = []
        self.calibrator: Calibrator | None = None
        self.reference = math.nan
        self.reference_variance = math.nan
        self.calibration_accuracy = math.nan
        # Predictions since the last round: scores, predicted class index, event time.
        self.block_scores: list[Mapping[str, float]] = []
        self.block_predicted: list[int] = []
        self.block_times: list[float] = []
        w = self.window_size
        self.confidence = np.zeros(w)
        self.positive_probability = np.zeros(w)
        self.positive_score = np.zeros(w)
        self.predicted_positive = np.zeros(w, dtype=bool)
        self.times = np.zeros(w)
        self.position = 0
        self.estimated = 0
        self.unscored = 0
        self.drifted = False
        self.windows: list[_Window] = []
        self.compared = 0
        self.abs_error_sum = 0.0
        self.recent: list[Comparison] = []

    def __getstate__(self) -> dict[str, object]:
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)

    @property
    def ready(self) -> bool:
        """Whether the calibrator is fitted and predictions are estimated."""
        return self.calibrator is not None

    # ---- classes ---------------------------------------------------------------

    def _learn_classes(self, scores: Mapping[str, float]) -> None:
        self.classes = sorted(scores)
        self.class_index = {c: i for i, c in enumerate(self.classes)}
        if len(self.classes) == 2:
            wanted = self.positive_class
            self.positive = self.class_index.get(wanted or "", 1)

    def _index(self, value: object) -> int:
        """The class index of a prediction or label, -1 for a class without a score."""
        index = self.class_index.get(class_key(value), -1)
        if index < 0 and isinstance(value, bool):  # a Python-style key, "True"
            return self.class_index.get(str(value), -1)
        return index

    def _row(self, scores: Mapping[str, float] | None) -> list[float] | None:
        if not scores:
            return None
        if not self.classes:
            self._learn_classes(scores)
        row = [scores.get(c) for c in self.classes]
        if any(v is None for v in row):
            return None
        return [float(v) for v in row if v is not None]

    def _matrix(self, rows: Sequence[Mapping[str, float]]) -> FloatArray:
        """Scores as a (rows, classes) array; NaN for a class a row has no score for."""
        nan = math.nan
        classes = self.classes
        return np.array([[row.get(c, nan) for c in classes] for row in rows], dtype=np.float64)

    # ---- labelled pairs --------------------------------------------------------

    def observe_label(
        self, predicted: object, label: object, scores: Mapping[str, float] | None, time: float
    ) -> None:
        """A prediction met its label (``time``: the prediction's event time)."""
        if self.calibrator is None:
            row = self._row(scores)
            if row is None:
                return
            self.pairs_scores.append(row)
            self.pairs_predicted.append(self._index(predicted))
            self.pairs_labels.append(self._index(label))
            if len(self.pairs_labels) >= self.calibration_size:
                self._calibrate()
            return
        if scores is not None and self._index(predicted) >= 0:
            self._compare(predicted, label, time)

    def _calibrate(self) -> None:
        scores = np.array(self.pairs_scores, dtype=np.float64)
        labels = np.array(self.pairs_labels, dtype=np.int64)
        self.calibrator = Calibrator.fit(
            self.classes, scores, labels, self.method, self.bins, self.positive
        )
        probabilities = self.calibrator.probabilities(scores)
        predicted = np.array(self.pairs_predicted, dtype=np.int64)
        # A prediction of a class without a score is never right.
        known = predicted >= 0
        confidence = np.where(known, probabilities[np.arange(len(labels)), predicted], 0.0)
        self.reference = float(confidence.mean())
        self.reference_variance = float(confidence.var())
        self.calibration_accuracy = float(((predicted == labels) & known).mean())
        self.pairs_scores, self.pairs_predicted, self.pairs_labels = [], [], []

    def _compare(self, predicted: object, label: object, time: float) -> None:
        windows = self.windows
        if not windows or time < windows[0][_START]:
            return  # predicted before the calibrator was ready
        # Labels land in the oldest windows: a walk from there beats a bisection.
        i = 0
        while i + 1 < len(windows) and windows[i + 1][_START] <= time:
            i += 1
        windows[i][_LABELLED] += 1
        windows[i][_RIGHT] += class_key(predicted) == class_key(label)
        # Labels come about in prediction order: windows two before this one are done,
        # and so is a full window with all its labels.
        while i >= 2 or (len(windows) > 1 and windows[0][_LABELLED] >= windows[0][_COUNT]):
            self._close(windows.pop(0))
            i -= 1

    def _close(self, window: _Window) -> None:
        labelled = int(window[_LABELLED])
        if labelled * 2 < window[_COUNT]:
            return  # too few labels to say what the accuracy was
        comparison = Comparison(
            int(window[_FIRST]),
            int(window[_LAST]),
            window[_EST],
            window[_LOW],
            window[_HIGH],
            window[_RIGHT] / labelled,
            labelled,
            window[_START],
            window[_END],
        )
        self.compared += 1
        self.abs_error_sum += abs(comparison.error)
        self.recent = [*self.recent[1 - RECENT_COMPARISONS :], comparison]

    # ---- predictions -----------------------------------------------------------

    def observe_prediction(
        self,
        predicted: object,
        scores: Mapping[str, float] | None,
        time: float,
        other_tests: int,
    ) -> EstimateSignal | None:
        """A prediction arrived; every ``test_every`` of them, an estimate and its test.

        ``other_tests``: the version's other tests sharing the false-alarm budget."""
        if self.calibrator is None:
            return None
        index = self._index(predicted)
        if scores is None or index < 0:
            self.unscored += 1
            return None
        self.block_scores.append(scores)  # read at the round, all together
        self.block_predicted.append(index)
        self.block_times.append(time)
        if len(self.block_predicted) < self.test_every:
            return None
        return self._round(other_tests)

    def _round(self, other_tests: int) -> EstimateSignal | None:
        assert self.calibrator is not None
        scores = self._matrix(self.block_scores)
        predicted = np.array(self.block_predicted, dtype=np.int64)
        times = np.array(self.block_times)
        self.block_scores, self.block_predicted, self.block_times = [], [], []
        scored = ~np.isnan(scores).any(axis=1)
        if not scored.all():
            self.unscored += int((~scored).sum())
            scores, predicted, times = scores[scored], predicted[scored], times[scored]
            if not len(predicted):
                return None
        probabilities = self.calibrator.probabilities(scores)
        confidence = probabilities[np.arange(len(predicted)), predicted]
        self._into_windows(confidence, times)
        w = self.window_size
        where = (self.position + np.arange(len(predicted))) % w
        self.confidence[where] = confidence
        self.positive_probability[where] = probabilities[:, self.positive]
        self.positive_score[where] = scores[:, self.positive]
        self.predicted_positive[where] = predicted == self.positive
        self.times[where] = times
        self.position = int(where[-1] + 1) % w
        self.estimated += len(predicted)
        if self.estimated < w:
            return None
        return self._test(float(self.confidence.mean()), other_tests)

    def _into_windows(self, confidence: FloatArray, times: FloatArray) -> None:
        """Add a block to the open comparison window; a full one waits for its labels."""
        windows = self.windows
        if not windows or windows[-1][_COUNT] >= self.window_size:
            if len(windows) >= MAX_OPEN_WINDOWS:
                self._close(windows.pop(0))
            first = self.estimated + 1
            windows.append([float(times[0]), first, first, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
        window = windows[-1]
        count = window[_COUNT] + len(confidence)
        # Running sums until full, then the estimate and its interval in their place.
        window[_EST] += float(confidence.sum())
        window[_LOW] += float((confidence * (1.0 - confidence)).sum())
        window[_COUNT] = count
        window[_LAST] = self.estimated + len(confidence)
        window[_END] = float(times[-1])
        if count >= self.window_size:
            mean = window[_EST] / count
            half = _normal_quantile(self.level) * math.sqrt(window[_LOW]) / count
            window[_EST], window[_LOW], window[_HIGH] = (
                mean,
                max(mean - half, 0),
                min(mean + half, 1),
            )

    @property
    def last(self) -> WindowEstimate | None:
        """The estimate of the last ``window_size`` predictions, as of the last round."""
        if self.estimated < self.window_size:
            return None
        n = len(self.confidence)
        accuracy, low, high = accuracy_interval(self.confidence, self.level)
        first, last = self.estimated - n + 1, self.estimated
        start, end = float(self.times.min()), float(self.times.max())
        estimate = WindowEstimate(first, last, n, accuracy, low, high, start, end)
        if len(self.classes) != 2:
            return estimate
        precision, recall, f1 = _confusion_estimates(
            self.positive_probability, self.predicted_positive
        )
        auc = _roc_auc_estimate(self.positive_probability, self.positive_score)
        return dataclasses.replace(estimate, precision=precision, recall=recall, f1=f1, roc_auc=auc)

    def _test(self, accuracy: float, other_tests: int) -> EstimateSignal | None:
        # The window's own variance where larger: the same on a stationary stream, and
        # scores that were constant in the reference cannot make every drop infinite.
        variance = max(self.reference_variance, float(self.confidence.var()))
        scale = math.sqrt(variance * (1.0 / self.window_size + 1.0 / self.calibration_size))
        drop = self.reference - accuracy
        z = drop / scale if scale > 0 else (math.inf if drop > 0 else 0.0)
        alpha = dist.bonferroni_alpha(self.expected_run_time, self.test_every, other_tests + 1)
        threshold = float(special.ndtri(1.0 - alpha))
        if self.drifted:
            if z < float(special.ndtri(1.0 - self.recovery_p_value)):
                self.drifted = False
            return None
        if z <= threshold:
            return None
        self.drifted = True
        estimate = self.last
        assert estimate is not None
        return EstimateSignal(estimate, self.reference, drop, z, threshold, float(special.ndtr(-z)))

    def reset(self) -> None:
        """End the episode: a drop that persists is signalled again."""
        self.drifted = False

    def stats(self) -> EstimationStats:
        return EstimationStats(
            ready=self.ready,
            calibration_pairs=self.calibration_size if self.ready else len(self.pairs_labels),
            reference=self.reference,
            last=self.last,
            drifted=self.drifted,
            compared=self.compared,
            mean_abs_error=self.abs_error_sum / self.compared if self.compared else math.nan,
            recent=tuple(self.recent),
        )


def _normal_quantile(level: float) -> float:
    """``z`` with ``P(|Z| <= z) = level``."""
    return float(special.ndtri((1.0 + level) / 2.0))


def accuracy_interval(confidence: FloatArray, level: float) -> tuple[float, float, float]:
    r"""The expected accuracy of predictions right with probabilities ``confidence``,
    and the interval in which their realised accuracy lies with probability ``level``:
    $\bar p \pm z \sqrt{\sum p_i (1 - p_i)} / n$ (normal approximation of the
    Poisson-binomial), clipped to [0, 1].

    >>> [round(v, 4) for v in accuracy_interval(np.array([0.9, 0.8, 0.6, 0.5]), 0.95)]
    [0.7, 0.2785, 1.0]
    """
    n = len(confidence)
    mean = float(confidence.mean())
    half = _normal_quantile(level) * math.sqrt(float((confidence * (1 - confidence)).sum())) / n
    return mean, max(mean - half, 0.0), min(mean + half, 1.0)


def _confusion_estimates(
    probability: FloatArray, predicted_positive: NDArray[np.bool_]
) -> tuple[float | None, float | None, float | None]:
    """CBPE's expected confusion matrix: each prediction counts ``p`` as a positive
    label and ``1 - p`` as a negative one; precision, recall and F1 from its cells
    (None where a denominator is zero)."""
    tp = float(probability[predicted_positive].sum())
    fp = float((1.0 - probability[predicted_positive]).sum())
    fn = float(probability[~predicted_positive].sum())
    precision = tp / (tp + fp) if tp + fp > 0 else None
    recall = tp / (tp + fn) if tp + fn > 0 else None
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else None
    return precision, recall, f1


def _roc_auc_estimate(probability: FloatArray, score: Sequence[float] | FloatArray) -> float | None:
    r"""Expected ROC AUC as a ratio of expectations: over pairs $i \ne j$ ranked by the
    raw score, $\sum p_i (1 - p_j) [s_i > s_j] / \sum p_i (1 - p_j)$ (ties count half).

    >>> round(_roc_auc_estimate(np.array([1.0, 0.0, 1.0, 0.0]), np.array([.9, .1, .8, .2])), 3)
    1.0
    """
    s = np.asarray(score, dtype=np.float64)
    order = np.argsort(s, kind="stable")
    p, s = probability[order], s[order]
    negative = 1.0 - p
    _, first, counts = np.unique(s, return_index=True, return_counts=True)
    # Negative weight strictly below each tie group, and within it (the item itself out).
    below = np.concatenate(([0.0], np.cumsum(negative)))[first]
    group_negative = np.add.reduceat(negative, first)
    below_each = np.repeat(below, counts)
    tied_each = np.repeat(group_negative, counts) - negative
    numerator = float((p * (below_each + 0.5 * tied_each)).sum())
    denominator = float(p.sum() * negative.sum() - (p * negative).sum())
    return numerator / denominator if denominator > 0 else None
