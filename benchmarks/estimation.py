"""Estimated performance: how close the estimate is, and how far ahead of the labels.

Real tabular data that ships with scikit-learn (no download): breast cancer (binary),
wine (3 classes), digits (10 classes). Per (dataset, seed), a scaled logistic regression
is trained on half of the rows; the stream draws the other half with replacement, each
draw with Gaussian jitter of 0.1 standard deviation per feature, so the population is
smooth and no two events are the same row. The model's class probabilities go out as
``scores``; each label arrives ``delay`` predictions after its own.

Scenarios, covariate shift with labels 5,000, 10,000 and 50,000 events late, concept
drift with labels 10,000 late:

* ``covariate``: from the change on, half of the draws come from the quarter of the
  held-out rows where the model is least sure (the smallest margin between its two most
  likely classes), the other half from all rows as before; the relation from inputs to
  labels is the same;
* ``concept``: from the change on, the quarter of the rows nearest to a random row (in
  standardised features) get the label of their second most likely class, so inputs
  and scores do not change (the limit of the method: the estimate cannot see it).

The change comes 20,000 predictions after the calibrator is ready (its 2,000 pairs
arrive ``delay`` events late), and the stream goes on for ``delay`` + 15,000 events
after it, so the label-based detectors have labels of the new behaviour to work on.

Every event goes as a JSON record through :class:`MonitorCore` with default settings;
what it publishes on ``drift-events`` is read back. Printed per scenario and delay,
over the seeds:

* the mean absolute error of the estimate against the realised accuracy of each
  window of 1,000 predictions (``estimation.window_size``), as the core compares
  them when the labels arrive: before the change and after it (windows straddling the
  change left out);
* the delay from the change to the first ``estimated_performance`` event, and to the
  first ``performance`` event (label-based, any severity), in predictions; the lead
  of the first over the second;
* ``estimated_performance`` events before the change (the stationary part);
* the cost of the estimate: microseconds per prediction through the core with the
  estimate and without it (``estimation.enabled: false``), on the same records, in the
  same run (``--no-cost`` skips it).

    python benchmarks/estimation.py               # 10 seeds, about 10 minutes on 2 cores
    python benchmarks/estimation.py --quick       # 2 seeds, labels 10,000 late, about 2 minutes
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

import numpy as np
import orjson
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from stream_monitor.config import MonitorSettings
from stream_monitor.core.monitor import InputTopic, MonitorCore

EPOCH_MS = 1_700_000_000_000
Scenario = Literal["covariate", "concept"]
DATASETS: dict[str, Callable[..., Any]] = {
    "breast_cancer": load_breast_cancer,
    "wine": load_wine,
    "digits": load_digits,
}
STATIONARY = 20_000
AFTER = 15_000
JITTER = 0.1
SHARE_SHIFTED = 0.5


@dataclass(frozen=True)
class Run:
    dataset: str
    scenario: Scenario
    delay: int
    seed: int


@dataclass
class Result:
    run: Run
    change: int
    realised_before: float
    realised_after: float
    estimated_after: float
    errors_before: list[float] = field(default_factory=list)
    errors_after: list[float] = field(default_factory=list)
    estimated_delay: int | None = None
    label_delay: int | None = None
    stationary_events: int = 0
    stationary_predictions: int = 0
    seconds: float = 0.0


def _stream(run: Run, calibration: int) -> tuple[dict[str, Any], int]:
    """Features, predictions, scores and labels of every event, and the change index."""
    data = DATASETS[run.dataset]()
    x, y = data.data.astype(np.float64), data.target
    x_train, x_pool, y_train, y_pool = train_test_split(
        x, y, test_size=0.5, random_state=run.seed, stratify=y
    )
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
    model.fit(x_train, y_train)
    rng = np.random.default_rng(run.seed)
    change = run.delay + calibration + STATIONARY
    n = change + run.delay + AFTER
    spread = x_pool.std(axis=0) + 1e-12
    standard = (x_pool - x_pool.mean(axis=0)) / spread
    proba_pool = model.predict_proba(x_pool)
    top2 = np.sort(proba_pool, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    after = np.arange(n) >= change
    rows = rng.integers(len(y_pool), size=n)
    if run.scenario == "covariate":
        uncertain = np.flatnonzero(margin <= np.quantile(margin, 0.25))
        shifted = after & (rng.random(n) < SHARE_SHIFTED)
        rows[shifted] = rng.choice(uncertain, size=int(shifted.sum()))
    features = x_pool[rows] + rng.normal(0.0, JITTER, size=(n, x.shape[1])) * spread
    proba = model.predict_proba(features)
    classes = [str(c) for c in model.classes_]
    predicted = proba.argmax(axis=1)
    labels = y_pool[rows].astype(np.int64)
    if run.scenario == "concept":
        # The quarter of the rows nearest to a random one take the label of their second
        # most likely class; inputs and scores do not change.
        distance = np.linalg.norm(standard - standard[rng.integers(len(y_pool))], axis=1)
        relabelled = distance[rows] < np.quantile(distance, 0.25)
        second = np.argsort(proba, axis=1)[:, -2]
        flip = after & relabelled
        labels[flip] = second[flip]
    names = [f"f{j}" for j in range(x.shape[1])]
    return {
        "features": np.round(features, 4).tolist(),
        "names": names,
        "classes": classes,
        "proba": np.round(proba, 6).tolist(),
        "predicted": predicted.tolist(),
        "labels": labels.tolist(),
    }, change


def _records(
    stream: dict[str, Any], delay: int, n: int
) -> Iterator[tuple[InputTopic, dict[str, Any], int]]:
    """The first ``n`` predictions as records, each label ``delay`` predictions later."""
    names, classes = stream["names"], stream["classes"]
    for i in range(n):
        now = EPOCH_MS + i
        yield (
            "predictions",
            {
                "prediction_id": f"p{i}",
                "model_id": "m",
                "model_version": "1",
                "timestamp": now,
                "features": dict(zip(names, stream["features"][i], strict=True)),
                "prediction": classes[stream["predicted"][i]],
                "scores": dict(zip(classes, stream["proba"][i], strict=True)),
            },
            i,
        )
        j = i - delay
        if j >= 0:
            label = classes[stream["labels"][j]]
            yield (
                "ground_truth",
                {"prediction_id": f"p{j}", "model_id": "m", "label": label, "timestamp": now},
                i,
            )


def _cost(events: int = 12_000, repeats: int = 3) -> tuple[float, float]:
    """Microseconds per prediction (with its label) through the core, with the estimate
    and without it (``estimation.enabled: false``), on the same breast cancer records
    (labels 1,000 late: the estimate runs from prediction 3,000 on); best of ``repeats``."""
    stream, _ = _stream(Run("breast_cancer", "covariate", 1_000, 0), 2_000)
    records = [(t, orjson.dumps(r)) for t, r, _ in _records(stream, 1_000, events)]
    best = {True: float("inf"), False: float("inf")}
    for _ in range(repeats):
        for enabled in (True, False):
            core = MonitorCore(MonitorSettings(defaults={"estimation": {"enabled": enabled}}))
            started = time.perf_counter()
            for topic, value in records:
                core.process(topic, b"m", value)
            best[enabled] = min(best[enabled], time.perf_counter() - started)
    return best[True] / events * 1e6, best[False] / events * 1e6


def _task(run: Run) -> Result:
    started = time.perf_counter()
    settings = MonitorSettings()
    calibration = settings.defaults.estimation.calibration_size
    stream, change = _stream(run, calibration)
    core = MonitorCore(settings)
    n = len(stream["labels"])
    estimated_events: list[int] = []
    performance_events: list[int] = []
    comparisons: dict[int, Any] = {}

    def process(topic: InputTopic, record: dict[str, Any], index: int) -> None:
        for output in core.process(topic, b"m", orjson.dumps(record)):
            if output.topic != "drift_events":
                continue
            kind = orjson.loads(output.value)["data"]["kind"]
            if kind == "estimated_performance":
                estimated_events.append(index)
            elif kind == "performance":
                performance_events.append(index)

    def collect() -> None:
        stats = core.stats().versions["m", "1"].estimation
        for c in stats.recent if stats else ():
            comparisons[c.first] = c

    right = [p == y for p, y in zip(stream["predicted"], stream["labels"], strict=True)]
    for topic, record, i in _records(stream, run.delay, n):
        process(topic, record, i)
        if topic == "predictions" and i % 5000 == 0:
            collect()
    collect()
    # Window times are event times: EPOCH_MS + index milliseconds.
    result = Result(
        run,
        change,
        realised_before=float(np.mean(right[:change])),
        realised_after=float(np.mean(right[change:])),
        estimated_after=float("nan"),
    )
    after = []
    for c in comparisons.values():
        first, last = round(c.start * 1000) - EPOCH_MS, round(c.end * 1000) - EPOCH_MS
        if last < change:
            result.errors_before.append(c.error)
        elif first >= change:
            result.errors_after.append(c.error)
            after.append(c.estimated)
    result.estimated_after = float(np.mean(after)) if after else float("nan")
    ready = run.delay + calibration  # the calibrator is fitted then
    result.stationary_events = sum(ready <= i < change for i in estimated_events)
    result.stationary_predictions = change - ready
    result.estimated_delay = next((i - change for i in estimated_events if i >= change), None)
    result.label_delay = next((i - change for i in performance_events if i >= change), None)
    result.seconds = time.perf_counter() - started
    return result


def _fmt(values: list[float], digits: int = 4) -> str:
    return f"{statistics.fmean(values):.{digits}f}" if values else "-"


def _delays(values: list[int | None]) -> str:
    found = [v for v in values if v is not None]
    if not found:
        return f"none of {len(values)}"
    return f"{statistics.median(found):,.0f} ({len(found)}/{len(values)})"


def _table(results: list[Result]) -> list[str]:
    lines = [
        "| dataset | scenario | label delay | accuracy before -> after (realised) "
        "| estimated after | MAE before | MAE after | estimated signal delay "
        "| label signal delay | lead (median) | stationary estimated events |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str, int], list[Result]] = {}
    for r in results:
        groups.setdefault((r.run.dataset, r.run.scenario, r.run.delay), []).append(r)
    for (dataset, scenario, delay), rs in sorted(groups.items()):
        leads = [
            r.label_delay - r.estimated_delay
            for r in rs
            if r.label_delay is not None and r.estimated_delay is not None
        ]
        lines.append(
            f"| {dataset} | {scenario} | {delay:,} "
            f"| {_fmt([r.realised_before for r in rs], 3)} -> "
            f"{_fmt([r.realised_after for r in rs], 3)} "
            f"| {_fmt([r.estimated_after for r in rs], 3)} "
            f"| {_fmt([abs(e) for r in rs for e in r.errors_before])} "
            f"| {_fmt([abs(e) for r in rs for e in r.errors_after])} "
            f"| {_delays([r.estimated_delay for r in rs])} "
            f"| {_delays([r.label_delay for r in rs])} "
            f"| {f'{statistics.median(leads):,.0f}' if leads else '-'} "
            f"| {sum(r.stationary_events for r in rs)} in "
            f"{sum(r.stationary_predictions for r in rs):,} |"
        )
    return lines


def _targets(results: list[Result]) -> list[str]:
    covariate = [r for r in results if r.run.scenario == "covariate"]
    mae = statistics.fmean([abs(e) for r in covariate for e in r.errors_after] or [float("nan")])
    ten = [r for r in covariate if r.run.delay == 10_000]
    leads = [
        (r.label_delay if r.label_delay is not None else r.run.delay + AFTER)
        - (r.estimated_delay if r.estimated_delay is not None else r.run.delay + AFTER)
        for r in ten
    ]
    stationary = sum(r.stationary_events for r in results)
    lines = [
        f"- estimation error on covariate shift (windows after the change): MAE {mae:.4f} "
        f"(target < 0.02): {'met' if mae < 0.02 else 'NOT met'}",
    ]
    if ten:
        worst = min(leads)
        lines.append(
            f"- labels 10,000 late: estimated signal ahead of the label-based one by "
            f"{statistics.median(leads):,.0f} predictions (median), {worst:,} at worst "
            f"(target >= 5,000): {'met' if worst >= 5000 else 'NOT met'}"
        )
    lines.append(
        f"- estimated_performance events on the stationary parts: {stationary} in "
        f"{sum(r.stationary_predictions for r in results):,} predictions (target 0): "
        f"{'met' if stationary == 0 else 'NOT met'}"
    )
    concept = [r for r in results if r.run.scenario == "concept"]
    if concept:
        moved = statistics.fmean(
            [r.estimated_after - r.realised_before for r in concept if r.errors_after]
            or [float("nan")]
        )
        fell = statistics.fmean([r.realised_after - r.realised_before for r in concept])
        fired = sum(r.estimated_delay is not None for r in concept)
        lines.append(
            f"- concept drift (the limit): realised accuracy moved {fell:+.3f}, the estimate "
            f"{moved:+.3f} from the realised accuracy before; estimated signal in {fired} of "
            f"{len(concept)} runs"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--delays", type=int, nargs="+", default=[5_000, 10_000, 50_000])
    parser.add_argument(
        "--concept-delays", type=int, nargs="+", default=[10_000], help="label delays of concept"
    )
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument(
        "--scenarios", nargs="+", default=["covariate", "concept"], choices=["covariate", "concept"]
    )
    parser.add_argument("--quick", action="store_true", help="2 seeds, labels 10,000 late")
    parser.add_argument("--no-cost", action="store_true", help="skip the cost measurement")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()
    seeds, delays = (2, [10_000]) if args.quick else (args.seeds, args.delays)
    concept_delays = [10_000] if args.quick else args.concept_delays
    runs = [
        Run(dataset, scenario, delay, seed)
        for dataset in args.datasets
        for scenario in args.scenarios
        for delay in (delays if scenario == "covariate" else concept_delays)
        for seed in range(seeds)
    ]
    started = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(_task, runs))
    print(
        f"Estimated performance, {seeds} seeds, {len(runs)} runs, "
        f"{time.perf_counter() - started:.0f} s ({date.today().isoformat()})\n"
    )
    print("\n".join(_table(results)))
    print()
    print("\n".join(_targets(results)))
    if not args.no_cost:
        with_estimate, without = _cost()
        print(
            f"\nCost through MonitorCore.process, per prediction and its label (breast cancer, "
            f"best of 3): {with_estimate:.1f} µs with the estimate, {without:.1f} µs without "
            f"({with_estimate - without:+.1f} µs)"
        )


if __name__ == "__main__":
    main()
