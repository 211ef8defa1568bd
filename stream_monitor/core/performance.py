r"""Performance drift: detectors over the stream of a model's errors.

The error of a labelled prediction is 0/1 (classification) or absolute (regression).
ADWIN and Page-Hinkley watch that stream and say *when* it changed; the figures a
decision rests on (the mean error before and after the change, each with its count and
standard deviation) come from the raw errors, see :class:`PerformanceSignal`.

**Scale-free regression.** ADWIN's bound is written for values in [0, 1] and
Page-Hinkley's ``delta`` and ``threshold`` are in the units of what it is fed, so raw
absolute errors would make both depend on the target's units: errors around 1,000 cried
wolf, errors around 0.0001 hid a tripling. A regression tracker therefore takes its
first ``reference_size`` errors as a reference and feeds the detectors

$$x = \min\left(\frac{|e|}{c \cdot MAE_{ref}}, 1\right)$$

with $c$ = ``error_clip``: the error in reference MAEs, clipped and mapped into [0, 1].
Multiplying every error by any factor multiplies $MAE_{ref}$ by the same factor and leaves
$x$ unchanged, so false-alarm rate and detection delay are the same at every scale.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from itertools import islice
from typing import Literal

import numpy as np
from river import drift

from stream_monitor.config import PerformanceSettings
from stream_monitor.core.events import is_number
from stream_monitor.core.intervals import ErrorSample

Task = Literal["classification", "regression"]
Detector = Literal["adwin", "page_hinkley"]


def infer_task(prediction: object, has_scores: bool) -> Task:
    """Classification unless the prediction is a float (JSON ``0.7``, not ``1``)."""
    return "regression" if isinstance(prediction, float) and not has_scores else "classification"


def error_of(task: Task, prediction: object, label: object) -> float:
    """0/1 misclassification, or absolute error for regression."""
    if task == "classification":
        return 0.0 if prediction == label else 1.0
    for name, value in (("prediction", prediction), ("label", label)):
        if not is_number(value):
            raise TypeError(f"regression needs a numeric {name}, got {value!r}")
    return abs(float(prediction) - float(label))  # type: ignore[arg-type]  # checked above


@dataclass(frozen=True, slots=True)
class PerformanceSignal:
    """A detector fired, or a signal being followed up got more labels.

    ``before`` is the stretch of errors before the change (for ADWIN the part of its
    window it dropped), ``after`` the stretch since the change (the part it kept, at
    most the last ``window_size`` errors, plus every error since the signal while it is
    followed up); both in the errors' own units."""

    detector: Detector
    before: ErrorSample
    after: ErrorSample
    observations: int

    @property
    def error_before(self) -> float:
        return self.before.mean

    @property
    def error_after(self) -> float:
        return self.after.mean


Sums = list[float]
"""Count, sum and sum of squares of a stretch of errors."""


def _sample(sums: Sums) -> ErrorSample:
    return ErrorSample.from_sums(int(sums[0]), sums[1], sums[2])


class PerformanceTracker:
    """ADWIN and Page-Hinkley over one (model, version)'s error stream.

    ADWIN keeps a window of errors and drops its older part as soon as the means of
    the two parts differ by more than a Hoeffding-style bound set by ``adwin_delta``;
    Page-Hinkley accumulates ``m_t = sum(x_i - mean_i - delta)`` and fires when
    ``m_t - min(m)`` exceeds ``page_hinkley_threshold`` (only upward: more errors).
    Regression errors reach them scale-free (see the module). Beside them a sliding
    window of the last ``window_size`` errors gives the windowed accuracy
    (classification) or MAE (regression).

    A signal compares the errors since the last ADWIN cut (the *baseline*) before the
    change with those after it, from a change point estimated within what the detector
    blames: for ADWIN the part of its window it kept, for Page-Hinkley the sliding
    window. ADWIN forgets the old part (the baseline starts again at the change point)
    and Page-Hinkley restarts after a signal, so one change gives about one signal per
    detector. :meth:`follow` keeps a signal's ``before`` and adds every later error
    to its ``after``, so that a decision can wait for more labels (:meth:`followed`).

    >>> import random
    >>> tracker = PerformanceTracker(PerformanceSettings(), "classification")
    >>> rng = random.Random(7)
    >>> signals = [s for i in range(6000)
    ...            for s in tracker.update(float(rng.random() < (0.1 if i < 3000 else 0.4)))]
    >>> sorted({s.detector for s in signals})
    ['adwin', 'page_hinkley']
    >>> all(s.error_after > s.error_before for s in signals)
    True
    """

    def __init__(self, settings: PerformanceSettings, task: Task) -> None:
        self.settings = settings
        self.task = task
        self.observations = 0
        self._window: deque[float] = deque(maxlen=settings.window_size)
        self._window_sum = 0.0
        self._baseline: Sums = [0.0, 0.0, 0.0]
        self._adwin = drift.ADWIN(delta=settings.adwin_delta)
        # river's Page-Hinkley restarts by itself on the update after it fires.
        self._page_hinkley = drift.PageHinkley(
            min_instances=settings.page_hinkley_min_instances,
            delta=settings.page_hinkley_delta,
            threshold=settings.page_hinkley_threshold,
            alpha=settings.page_hinkley_alpha,
            mode="up",
        )
        # Regression: the reference errors until they are complete, then the scale.
        self._reference: list[float] | None = [] if task == "regression" else None
        self.scale = 1.0
        """What one error is divided by before the detectors: ``error_clip`` reference
        MAEs for regression, 1 for classification."""
        # A signal being followed up: its detector, before (count, mean, sd), after sums.
        self._followed: tuple[Detector, tuple[int, float, float], Sums] | None = None

    @property
    def adwin_error(self) -> float:
        """Mean error of ADWIN's current window (since its last cut), in error units."""
        return float(self._adwin.estimation) * self.scale

    @property
    def windowed_error(self) -> float:
        """Mean error over the sliding window (NaN before the first observation)."""
        return self._window_sum / len(self._window) if self._window else float("nan")

    @property
    def windowed_metric(self) -> float:
        """Accuracy for classification, MAE for regression, over the sliding window."""
        err = self.windowed_error
        return 1.0 - err if self.task == "classification" else err

    @property
    def following(self) -> bool:
        return self._followed is not None

    def update(self, error: float) -> list[PerformanceSignal]:
        self.observations += 1
        if len(self._window) == self._window.maxlen:
            self._window_sum -= self._window[0]
        self._window.append(error)
        self._window_sum += error
        for sums in (self._baseline, self._followed[2] if self._followed else None):
            if sums is not None:
                sums[0] += 1
                sums[1] += error
                sums[2] += error * error
        if self._reference is not None:
            return self._add_reference(error)
        return self._detect(min(error / self.scale, 1.0))

    def _add_reference(self, error: float) -> list[PerformanceSignal]:
        """Collect regression errors until the scale is known, then replay them."""
        reference = self._reference
        assert reference is not None
        reference.append(error)
        if len(reference) < self.settings.reference_size:
            return []
        mae = math.fsum(reference) / len(reference)
        # A perfect reference has no scale: any error is then a whole clip of change.
        self.scale = self.settings.error_clip * mae if mae > 0 else math.ulp(1.0)
        self._reference = None
        # Signals on the reference itself would compare it with itself: none are kept.
        for value in reference:
            self._detect(min(value / self.scale, 1.0))
        return []

    def _detect(self, value: float) -> list[PerformanceSignal]:
        signals = []
        self._adwin.update(value)
        if self._adwin.drift_detected:
            signal = self._signal("adwin", int(self._adwin.width))
            signals.append(signal)
            # ADWIN forgot the older part: the baseline starts again at the change.
            self._baseline = self._recent(signal.after.count)
        self._page_hinkley.update(value)
        if self._page_hinkley.drift_detected:
            signals.append(self._signal("page_hinkley", len(self._window)))
        return signals

    def _recent(self, count: int) -> Sums:
        """Sums of the last ``count`` errors (at most the sliding window)."""
        values = list(islice(reversed(self._window), count))
        return [float(len(values)), math.fsum(values), math.fsum(v * v for v in values)]

    def _signal(self, detector: Detector, after_count: int) -> PerformanceSignal:
        r"""Before: the baseline up to the change; after: the errors since the change
        point, estimated among the last ``after_count`` (at most the window, never the
        whole baseline).

        A detector fires as soon as the change is significant, when the part it blames
        still holds old errors: ADWIN keeps whatever it cannot yet tell apart. Those
        would dilute the "after" figure, so the change point is estimated as the start
        $s$ that maximises $\sum_{i \ge s} (x_i - \bar x_{before} - k)$, Page's CUSUM
        estimate, with the allowance $k$ half the mean rise of the errors considered
        (without it, noise before the change pulls the start far back; divided by
        $\sqrt{n_s}$ instead, it favours a short bad stretch)."""
        count = max(min(after_count, len(self._window), int(self._baseline[0]) - 1), 0)
        if count > 1:
            recent = np.array(list(islice(reversed(self._window), count)))[::-1]
            older = self._baseline[1] - float(recent.sum())
            before_mean = older / max(self._baseline[0] - count, 1.0)
            # Page's allowance: half the rise the recent errors show on average.
            allowance = max(float(recent.mean()) - before_mean, 0.0) / 2.0
            excess = np.cumsum((recent - before_mean - allowance)[::-1])[::-1]
            count -= int(np.argmax(excess))
        after = self._recent(count)
        before = [b - a for b, a in zip(self._baseline, after, strict=True)]
        return PerformanceSignal(detector, _sample(before), _sample(after), self.observations)

    def follow(self, signal: PerformanceSignal) -> None:
        """Keep ``signal``'s before and grow its after with every later error."""
        a = signal.after
        sums = [float(a.count), a.count * a.mean, (a.count - 1) * a.sd**2 + a.count * a.mean**2]
        if a.count == 0:
            sums = [0.0, 0.0, 0.0]
        b = signal.before
        self._followed = (signal.detector, (b.count, b.mean, b.sd), sums)

    def followed(self) -> PerformanceSignal | None:
        """The signal being followed up, with its after grown to now."""
        if self._followed is None:
            return None
        detector, before, after = self._followed
        return PerformanceSignal(detector, ErrorSample(*before), _sample(after), self.observations)

    def stop_following(self) -> None:
        self._followed = None
