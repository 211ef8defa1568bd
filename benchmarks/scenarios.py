"""Realistic drift: does the monitor take the decision a person would, on real tabular data?

Real data that ships with scikit-learn and river (nothing is downloaded): breast cancer
(binary), Phishing (binary), wine (3 classes), image segments (7 classes), diabetes and
Trump approval (regression). Each dataset gets one categorical input (``segment``: the
quartile of its first feature, named). For each (scenario, seed) the rows are split in
half: a scikit-learn gradient-boosting model is trained on one half, the other half is
the population the stream samples from (with replacement). The first ``--before``
events sample it as it is; then the scenario changes it:

* ``covariate xM``: the rows with the top 30 % of one input are M times as likely;
* ``prior xM``: one class (regression: the top 30 % of the target) M times as likely;
* ``concept D``: the labels of a region (the rows with the lowest values of one input)
  are changed (classification: to another class; regression: moved by two MAEs), the
  region's size chosen so that the accuracy drops by D (regression: the MAE rises by D);
* ``breakage``: a unit change (x1000), nulls, renamed categories, a constant, a renamed
  input (a schema change); the model is fed the broken inputs too.

Because the population is finite, the change in accuracy (or MAE) each scenario causes is
known exactly, and the expected decision follows from it and the policy's defaults:
``escalate`` for every breakage and for drops beyond the critical range, ``retrain`` for
a drop of at least 3 points (a 20 % MAE increase) below it, ``none`` for at most 0.5
points (2 %), and either of ``none`` and ``retrain`` in between (never ``escalate``).
Labels arrive 0, 300, 3,000 or 10,000 events late (by seed).

Every event goes through :class:`MonitorCore` (join, detectors, policy) as a JSON record,
as the Kafka shell would feed it, with default settings; the decision is read from its
drift events. Printed: per scenario, how often the monitor took the expected decision,
its delay in events after the change, and river's ADWIN and Page-Hinkley with default
parameters on the same error stream (an alarm is all they give); then the stationary
parts (every event before a change, and the whole of ``stationary``): decisions taken
there, and feature warnings per event against ``expected_run_time``.

    python benchmarks/scenarios.py --quick          # a smoke run: 1 seed, short streams
    python benchmarks/scenarios.py --seeds 10       # the full suite (about 30 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import orjson
from river import datasets as river_datasets
from river import drift
from sklearn import datasets as sk_datasets
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from threadpoolctl import threadpool_limits

from stream_monitor.config import MonitorSettings, PolicySettings
from stream_monitor.core.intervals import wilson
from stream_monitor.core.monitor import MonitorCore

Task = Literal["classification", "regression"]
Decision = Literal["none", "retrain", "escalate"]
Kind = Literal["stationary", "covariate", "prior", "concept", "breakage"]
EPOCH_MS = 1_700_000_000_000
SEGMENTS = ("north", "east", "south", "west")
FloatArray = np.ndarray[Any, np.dtype[np.float64]]


@dataclass(frozen=True)
class Dataset:
    name: str
    task: Task
    load: Callable[[], tuple[FloatArray, np.ndarray[Any, Any], list[str]]]


def _sklearn(loader: Callable[..., Any]) -> tuple[FloatArray, np.ndarray[Any, Any], list[str]]:
    bunch = loader()
    names = [str(n).replace(" ", "_") for n in bunch.feature_names]
    return np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target), names


def _river(dataset: Iterable[tuple[dict[str, Any], Any]]) -> tuple[FloatArray, Any, list[str]]:
    rows = list(dataset)
    names = list(rows[0][0])
    x = np.array([[float(r[0][n]) for n in names] for r in rows])
    y = np.array([r[1] for r in rows])
    if y.dtype == bool:
        y = y.astype(int)
    return x, y, [n.replace("-", "_") for n in names]


DATASETS = (
    Dataset("breast cancer", "classification", lambda: _sklearn(sk_datasets.load_breast_cancer)),
    Dataset("phishing", "classification", lambda: _river(river_datasets.Phishing())),
    Dataset("wine (3 classes)", "classification", lambda: _sklearn(sk_datasets.load_wine)),
    Dataset("image segments (7)", "classification", lambda: _river(river_datasets.ImageSegments())),
    Dataset("diabetes", "regression", lambda: _sklearn(sk_datasets.load_diabetes)),
    Dataset("trump approval", "regression", lambda: _river(river_datasets.TrumpApproval())),
)


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: Kind
    task: Task
    magnitude: float = 0.0
    breakage: str = ""


def _scenarios() -> list[Scenario]:
    out = []
    for task in ("classification", "regression"):
        out.append(Scenario("stationary", "stationary", task))
        out += [Scenario(f"covariate x{m:g}", "covariate", task, m) for m in (3.0, 10.0)]
        out.append(Scenario("prior x4", "prior", task, 4.0))
        targets = (
            (0.01, 0.03, 0.05, 0.10, 0.40) if task == "classification" else (0.02, 0.25, 0.5, 3.0)
        )
        unit = "pts" if task == "classification" else "MAE"
        for d in targets:
            label = f"{d * 100:g} {unit}" if task == "classification" else f"+{d:.0%} {unit}"
            out.append(Scenario(f"concept {label}", "concept", task, d))
        for breakage in ("unit x1000", "nulls", "renamed categories", "constant", "renamed input"):
            out.append(Scenario(f"breakage: {breakage}", "breakage", task, breakage=breakage))
    return out


SCENARIOS = _scenarios()
DELAYS = (0, 300, 3000, 10_000)


def expected(task: Task, scenario: Scenario, change: float) -> frozenset[Decision]:
    """The decisions a person would accept, from the change the scenario causes (accuracy
    drop, or relative MAE increase) and the policy's default thresholds."""
    if scenario.kind == "breakage":
        return frozenset({"escalate"})
    policy = PolicySettings()
    if task == "classification":
        clear, small, critical = 0.03, 0.005, policy.critical_accuracy_drop
    else:
        clear, small, critical = 0.2, 0.02, policy.critical_mae_increase
    if change >= 1.5 * critical:
        return frozenset({"escalate"})
    if change >= critical:
        return frozenset({"retrain", "escalate"})
    if change >= clear:
        return frozenset({"retrain"})
    if change <= small:
        return frozenset({"none"})
    return frozenset({"none", "retrain"})


@dataclass
class Population:
    """A dataset's stream half: inputs as events, labels, and the model's verdicts."""

    task: Task
    features: list[dict[str, Any]]
    x: FloatArray
    y: np.ndarray[Any, Any]
    names: list[str]
    model: Any
    classes: list[str] = field(default_factory=list)


def _segment(x: FloatArray, column: FloatArray) -> FloatArray:
    edges = np.quantile(column, [0.25, 0.5, 0.75])
    return np.searchsorted(edges, x, side="right").astype(np.float64)


def _population(dataset: Dataset, seed: int) -> Population:
    # Many small fits in parallel workers: one thread each.
    with threadpool_limits(1):
        return _fit(dataset, seed)


def _fit(dataset: Dataset, seed: int) -> Population:
    x, y, names = dataset.load()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    train, pool = order[: len(x) // 2], order[len(x) // 2 :]
    segment = _segment(x[:, 0], x[train, 0])
    x = np.column_stack([x, segment])
    names = [*names, "segment"]
    if dataset.task == "classification":
        model: Any = HistGradientBoostingClassifier(max_iter=60, random_state=seed)
        labels = np.array([str(v) for v in y])
        model.fit(x[train], labels[train])
        classes = [str(c) for c in model.classes_]
        return Population(dataset.task, [], x[pool], labels[pool], names, model, classes)
    model = HistGradientBoostingRegressor(max_iter=60, random_state=seed)
    model.fit(x[train], y[train].astype(np.float64))
    return Population(dataset.task, [], x[pool], y[pool].astype(np.float64), names, model)


def _events(
    population: Population, x: FloatArray, broken: str, column: int
) -> list[dict[str, Any]]:
    """Rows as the serving app would send them (``broken``: after a breakage of
    ``column``)."""
    names = population.names
    out = []
    for row in x.tolist():
        event: dict[str, Any] = dict(zip(names[:-1], row[:-1], strict=True))
        event["segment"] = SEGMENTS[int(row[-1])]
        if broken == "nulls":
            event[names[column]] = None
        elif broken == "renamed categories":
            event["segment"] = event["segment"].upper()
        elif broken == "renamed input":
            event[names[column] + "_v2"] = event.pop(names[column])
        out.append(event)
    return out


def _model_inputs(x: FloatArray, broken: str, column: int) -> FloatArray:
    """What the model sees after a breakage (unknown categories and inputs: missing)."""
    out = x.copy()
    if broken == "unit x1000":
        out[:, column] *= 1000.0
    elif broken in ("nulls", "renamed input"):
        out[:, column] = np.nan
    elif broken == "renamed categories":
        out[:, -1] = np.nan
    elif broken == "constant":
        out[:, column] = np.median(x[:, column])
    return out


@dataclass
class Stream:
    """Everything one run needs, as lists the loop indexes."""

    features: list[dict[str, Any]]
    predictions: list[Any]
    scores: list[dict[str, float] | None]
    labels: list[Any]
    errors: FloatArray
    change_at: int
    change: float
    """The accuracy drop (relative MAE increase) the scenario causes, in expectation."""


def _verdicts(
    population: Population, x: FloatArray
) -> tuple[list[Any], list[dict[str, float] | None]]:
    model = population.model
    if population.task == "regression":
        return [float(v) for v in model.predict(x)], [None] * len(x)
    proba = model.predict_proba(x)
    classes = population.classes
    predicted = [classes[i] for i in proba.argmax(axis=1)]
    scores = [dict(zip(classes, (round(p, 4) for p in row), strict=True)) for row in proba.tolist()]
    return predicted, scores


def _error(task: Task, predictions: list[Any], labels: np.ndarray[Any, Any]) -> FloatArray:
    if task == "classification":
        return np.array([p != y for p, y in zip(predictions, labels.tolist(), strict=True)], float)
    return np.abs(np.array(predictions) - labels.astype(np.float64))


def _stream(
    scenario: Scenario, population: Population, seed: int, before: int, after: int
) -> Stream:
    rng = np.random.default_rng(seed + 1000)
    task, x, y = population.task, population.x, population.y
    n = len(x)
    column = _varied_column(x, rng)
    pre_predictions, pre_scores = _verdicts(population, x)
    pre_errors = _error(task, pre_predictions, y)
    weights = np.ones(n)
    post_y = y.copy()
    broken = scenario.breakage
    post_predictions, post_scores = pre_predictions, pre_scores
    if scenario.kind == "covariate":
        weights[x[:, column] >= np.quantile(x[:, column], 0.7)] = scenario.magnitude
    elif scenario.kind == "prior":
        if task == "classification":
            chosen = rng.choice(sorted(set(y.tolist())))
            weights[y == chosen] = scenario.magnitude
        else:
            weights[y >= np.quantile(y, 0.7)] = scenario.magnitude
    elif scenario.kind == "concept":
        post_y = _relabel(
            task, population, x[:, column], pre_predictions, pre_errors, scenario.magnitude
        )
    elif scenario.kind == "breakage":
        post_predictions, post_scores = _verdicts(population, _model_inputs(x, broken, column))
    post_errors = _error(task, post_predictions, post_y)
    p = weights / weights.sum()
    pre_mean, post_mean = float(pre_errors.mean()), float(p @ post_errors)
    change = post_mean - pre_mean if task == "classification" else post_mean / pre_mean - 1.0

    pre_rows = rng.integers(0, n, size=before)
    post_rows = rng.choice(n, size=after, p=p)
    pre_events = _events(population, x, "", column)
    post_events = _events(population, x, broken, column) if broken else pre_events
    if broken == "constant":
        value = float(np.median(x[:, column]))
        post_events = [{**e, population.names[column]: value} for e in pre_events]
    if broken == "unit x1000":
        name = population.names[column]
        post_events = [{**e, name: e[name] * 1000.0} for e in pre_events]
    features = [pre_events[i] for i in pre_rows] + [post_events[i] for i in post_rows]
    predictions = [pre_predictions[i] for i in pre_rows] + [post_predictions[i] for i in post_rows]
    scores = [pre_scores[i] for i in pre_rows] + [post_scores[i] for i in post_rows]
    labels = [y[i] for i in pre_rows.tolist()] + [post_y[i] for i in post_rows.tolist()]
    labels = [v.item() if hasattr(v, "item") else v for v in labels]
    errors = np.concatenate([pre_errors[pre_rows], post_errors[post_rows]])
    change_at = before if scenario.kind != "stationary" else before + after
    return Stream(features, predictions, scores, labels, errors, change_at, change)


def _varied_column(x: FloatArray, rng: np.random.Generator) -> int:
    """An input (not the segment) with at least 3 values, none of them in 80 % of rows."""
    varied = []
    for j in range(x.shape[1] - 1):
        _, counts = np.unique(x[:, j], return_counts=True)
        if len(counts) >= 3 and counts.max() <= 0.8 * len(x):
            varied.append(j)
    return int(rng.choice(varied))


def _relabel(
    task: Task,
    population: Population,
    column: FloatArray,
    predictions: list[Any],
    errors: FloatArray,
    target: float,
) -> np.ndarray[Any, Any]:
    """New labels for the rows with the lowest values of ``column``: as many rows as it
    takes for the accuracy to drop (the MAE to rise) by ``target``."""
    y = population.y
    order = np.argsort(column, kind="stable")
    if task == "classification":
        classes = population.classes
        moved = np.array([classes[(classes.index(v) + 1) % len(classes)] for v in y.tolist()])
        gain = (
            np.array([p != v for p, v in zip(predictions, moved.tolist(), strict=True)], float)
            - errors
        ) / len(y)
        total = errors.mean()
    else:
        shift = max(2.0, 2.0 * target) * float(errors.mean())
        moved = y + shift
        gain = (np.abs(np.array(predictions) - moved) - errors) / len(y)
        total = errors.mean()
    cumulative = np.cumsum(gain[order])
    scale = 1.0 if task == "classification" else float(total)
    reached = np.flatnonzero(cumulative >= target * scale)
    count = int(reached[0]) + 1 if len(reached) else len(y)
    out = y.copy()
    out[order[:count]] = moved[order[:count]]
    return out


@dataclass
class RunResult:
    scenario: str
    task: Task
    dataset: str
    seed: int
    delay: int
    change: float
    expected: frozenset[Decision]
    decision: Decision
    decision_delay: int | None
    stationary_events: int
    false_decisions: int
    feature_warnings: int
    river: dict[str, tuple[int, int | None]]
    """By detector: (false alarms before the change, delay of its first alarm after it)."""
    seconds: float


def _run(scenario_index: int, seed: int, before: int, after: int) -> RunResult:
    scenario = SCENARIOS[scenario_index]
    chosen = [d for d in DATASETS if d.task == scenario.task]
    dataset = chosen[seed % len(chosen)]
    population = _population(dataset, seed)
    delay = DELAYS[seed % len(DELAYS)]
    stream = _stream(scenario, population, seed, before, after + delay)
    started = time.perf_counter()
    core = MonitorCore(MonitorSettings())
    change_at, total = stream.change_at, len(stream.features)
    decisions: list[tuple[int, Decision]] = []
    feature_warnings = 0
    river: dict[str, Any] = {"river ADWIN": drift.ADWIN(), "river PageHinkley": drift.PageHinkley()}
    alarms: dict[str, list[int]] = defaultdict(list)
    errors = stream.errors.tolist()

    def feed(
        topic: Literal["predictions", "ground_truth"], record: dict[str, Any], at: int
    ) -> None:
        nonlocal feature_warnings
        for output in core.process(topic, b"m", orjson.dumps(record)):
            if output.topic != "drift_events":
                continue
            data = orjson.loads(output.value)["data"]
            if data["action"] != "none":
                decisions.append((at, data["action"]))
            elif data["kind"] != "performance" and at < change_at:
                feature_warnings += 1

    for i in range(total):
        now = EPOCH_MS + i * 100
        feed(
            "predictions",
            {
                "prediction_id": str(i),
                "model_id": "m",
                "model_version": "1",
                "timestamp": now,
                "features": stream.features[i],
                "prediction": stream.predictions[i],
                "scores": stream.scores[i],
            },
            i,
        )
        j = i - delay
        if j >= 0:
            feed(
                "ground_truth",
                {
                    "prediction_id": str(j),
                    "model_id": "m",
                    "label": stream.labels[j],
                    "timestamp": now,
                },
                i,
            )
            for name, detector in river.items():
                detector.update(errors[j])
                if detector.drift_detected:
                    alarms[name].append(i)
    seconds = time.perf_counter() - started
    after_change = [(i, d) for i, d in decisions if i >= change_at]
    taken: Decision = "none"
    if any(d == "escalate" for _, d in after_change):
        taken = "escalate"
    elif after_change:
        taken = "retrain"
    first = next((i - change_at for i, d in after_change if d == taken), None)
    river_result = {
        name: (
            sum(a < change_at for a in alarms[name]),
            next((a - change_at for a in alarms[name] if a >= change_at), None),
        )
        for name in river
    }
    return RunResult(
        scenario.name,
        scenario.task,
        dataset.name,
        seed,
        delay,
        stream.change,
        expected(scenario.task, scenario, stream.change),
        taken,
        first,
        min(change_at, total),
        sum(i < change_at for i, _ in decisions),
        feature_warnings,
        river_result,
        seconds,
    )


def _fmt(values: list[int]) -> str:
    return f"{statistics.median(values):,.0f}" if values else "-"


def report(results: list[RunResult]) -> list[str]:
    lines = [
        "| task | scenario | change (mean) | expected | took it | monitor delay (median) | "
        "river ADWIN: fired (median delay) | river PageHinkley: fired (median delay) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    by_scenario: dict[tuple[str, str], list[RunResult]] = defaultdict(list)
    for r in results:
        by_scenario[r.task, r.scenario].append(r)
    for (task, name), runs in by_scenario.items():
        took = sum(r.decision in r.expected for r in runs)
        expectations = Counter("/".join(sorted(r.expected)) for r in runs)
        shown = ", ".join(
            f"{e} ({c})" if len(expectations) > 1 else e for e, c in expectations.items()
        )
        delays = [
            r.decision_delay
            for r in runs
            if r.decision_delay is not None and r.decision in r.expected
        ]
        cells = []
        for detector in ("river ADWIN", "river PageHinkley"):
            fired = [r.river[detector][1] for r in runs if r.river[detector][1] is not None]
            cells.append(f"{len(fired)}/{len(runs)} ({_fmt(fired)})")
        change = statistics.fmean(r.change for r in runs)
        lines.append(
            f"| {task} | {name} | {change:+.3f} | {shown} | {took}/{len(runs)} | "
            f"{_fmt(delays)} | {cells[0]} | {cells[1]} |"
        )
    return lines


def summary(results: list[RunResult]) -> list[str]:
    took = sum(r.decision in r.expected for r in results)
    low, high = wilson(took, len(results), 0.95)
    plain = [r for r in results if r.scenario.startswith(("covariate", "prior", "concept"))]
    wrongly_escalated = sum(
        r.decision == "escalate" and "escalate" not in r.expected for r in plain
    )
    broken = [r for r in results if r.scenario.startswith("breakage")]
    escalated = sum(r.decision == "escalate" for r in broken)
    stationary = sum(r.stationary_events for r in results)
    false = sum(r.false_decisions for r in results)
    warnings = sum(r.feature_warnings for r in results)
    budget = MonitorSettings().defaults.features.expected_run_time
    per_warning = f"{stationary / warnings:,.0f}" if warnings else f"> {stationary:,}"
    river = []
    for detector in ("river ADWIN", "river PageHinkley"):
        false_alarms = sum(r.river[detector][0] for r in results)
        river.append(f"{detector} {false_alarms}")
    return [
        f"- expected decision taken in {took}/{len(results)} runs "
        f"({took / len(results):.1%}, 95 % interval {low:.1%}..{high:.1%}); target >= 95 %",
        f"- plain covariate, prior or concept shift escalated without a critical drop: "
        f"{wrongly_escalated} of {len(plain)} runs",
        f"- pipeline breakages escalated: {escalated}/{len(broken)}",
        f"- stationary parts: {stationary:,} events, {false} retrain or escalation decisions; "
        f"feature warnings: {warnings} ({per_warning} events per warning; expected_run_time "
        f"{budget:,.0f}); false alarms there: {', '.join(river)}",
    ]


def misses(results: list[RunResult]) -> list[str]:
    return [
        f"- {r.task} / {r.scenario} / {r.dataset} / seed {r.seed} / label delay {r.delay}: "
        f"change {r.change:+.3f}, expected {'/'.join(sorted(r.expected))}, took {r.decision}"
        for r in results
        if r.decision not in r.expected
    ]


def run(
    seeds: int, before: int, after: int, workers: int, only: Iterable[str] | None = None
) -> list[RunResult]:
    chosen = [i for i, s in enumerate(SCENARIOS) if only is None or s.name in set(only)]
    tasks = [(i, seed) for seed in range(seeds) for i in chosen]
    if workers <= 1:
        return [_run(i, seed, before, after) for i, seed in tasks]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_run, i, seed, before, after) for i, seed in tasks]
        return [f.result() for f in futures]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, short streams")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--before", type=int, help="events before the change (default 20,000)")
    parser.add_argument("--after", type=int, help="labels after the change (default 20,000)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    seeds = 1 if args.quick else args.seeds
    before = args.before or (5000 if args.quick else 20_000)
    after = args.after or (10_000 if args.quick else 20_000)
    started = time.perf_counter()
    results = run(seeds, before, after, args.workers)
    elapsed = time.perf_counter() - started
    print(
        f"# Realistic scenarios: {len(SCENARIOS)} scenarios x {seeds} seeds, {before:,} events "
        f"before the change and {after:,} labels after it, label delays {DELAYS}; "
        f"{elapsed:.0f} s on {args.workers} workers\n"
    )
    print("\n".join(report(results)))
    print()
    print("\n".join(summary(results)))
    wrong = misses(results)
    if wrong:
        print("\nRuns that missed:\n")
        print("\n".join(wrong))
    monitor = sum(r.seconds for r in results)
    print(f"\nMonitorCore.process and river's detectors: {monitor:.0f} s in all the runs.")


if __name__ == "__main__":
    main()
