"""Performance drift: detectors over the stream of a model's errors."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

from river import drift

from stream_monitor.config import PerformanceSettings
from stream_monitor.core.events import is_number

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
    """A detector fired. ``error_before`` / ``error_after`` are mean errors
    (misclassification rate or MAE) of the stable window before the change and of
    the recent window after it."""

    detector: Detector
    error_before: float
    error_after: float
    observations: int


class PerformanceTracker:
    """ADWIN and Page-Hinkley over one (model, version)'s error stream.

    ADWIN keeps a window of errors and drops its older part as soon as the means of
    the two parts differ by more than a Hoeffding-style bound set by ``adwin_delta``;
    Page-Hinkley accumulates ``m_t = sum(x_i - mean_i - delta)`` and fires when
    ``m_t - min(m)`` exceeds ``page_hinkley_threshold`` (only upward: more errors).
    Beside them a sliding window of the last ``window_size`` errors gives the
    windowed accuracy (classification) or MAE (regression).

    A signal reports the mean error before and after the change: for ADWIN the part
    of its window it dropped and the part it kept; for Page-Hinkley the mean since
    its last restart and the sliding window. ADWIN forgets the old part and Page-Hinkley
    restarts after a signal, so one change gives about one signal per detector.

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
        self._since_ph_reset_sum, self._since_ph_reset_count = 0.0, 0
        self._adwin = drift.ADWIN(delta=settings.adwin_delta)
        # ADWIN's window is every error since its last cut; its sum and width are kept
        # here too, because asking river for them at every update costs more than ADWIN.
        self._adwin_sum, self._adwin_width = 0.0, 0
        # river's Page-Hinkley restarts by itself on the update after it fires.
        self._page_hinkley = drift.PageHinkley(
            min_instances=settings.page_hinkley_min_instances,
            delta=settings.page_hinkley_delta,
            threshold=settings.page_hinkley_threshold,
            alpha=settings.page_hinkley_alpha,
            mode="up",
        )

    @property
    def adwin_error(self) -> float:
        """Mean error of ADWIN's current window (since its last cut)."""
        return float(self._adwin.estimation)

    @property
    def windowed_error(self) -> float:
        """Mean error over the sliding window (NaN before the first observation)."""
        return self._window_sum / len(self._window) if self._window else float("nan")

    @property
    def windowed_metric(self) -> float:
        """Accuracy for classification, MAE for regression, over the sliding window."""
        err = self.windowed_error
        return 1.0 - err if self.task == "classification" else err

    def update(self, error: float) -> list[PerformanceSignal]:
        self.observations += 1
        if len(self._window) == self._window.maxlen:
            self._window_sum -= self._window[0]
        self._window.append(error)
        self._window_sum += error

        self._since_ph_reset_sum += error
        self._since_ph_reset_count += 1
        signals = []
        self._adwin.update(error)
        self._adwin_sum += error
        self._adwin_width += 1
        if self._adwin.drift_detected:
            # ADWIN dropped its older part: compare the dropped part with the kept part.
            kept_mean, kept = self._adwin.estimation, int(self._adwin.width)
            dropped_mean = (self._adwin_sum - kept_mean * kept) / (self._adwin_width - kept)
            signals.append(PerformanceSignal("adwin", dropped_mean, kept_mean, self.observations))
            self._adwin_sum, self._adwin_width = kept_mean * kept, kept
        self._page_hinkley.update(error)
        if self._page_hinkley.drift_detected:
            signals.append(
                PerformanceSignal(
                    "page_hinkley",
                    self._since_ph_reset_sum / self._since_ph_reset_count,
                    self.windowed_error,
                    self.observations,
                )
            )
            self._since_ph_reset_sum, self._since_ph_reset_count = 0.0, 0
        return signals
