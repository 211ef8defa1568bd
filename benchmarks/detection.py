"""Detection quality: how fast drift is caught, and how rarely a stationary stream cries wolf.

Streams nobody here wrote: river's synthetic generators, switched to another generator
at a known position (abrupt) or through the sigmoid transition of river's
``ConceptDriftStream`` over ``--width`` events (gradual), several seeds each, plus
stationary streams of the same generators. Two families:

* concept drift, inputs unchanged: SEA 0->3, Agrawal f0->f2, Hyperplane (new plane),
  STAGGER f0->f1. Only labels can reveal these;
* input drift: RandomRBF (new centroids), LED -> LEDDrift (4 attributes swapped),
  Agrawal with 20 % perturbation (noisy upstream data).

For each (generator, seed) a scikit-learn model is trained on the first 5,000 events of
the pre-drift generator, and each stream (drawn after those) becomes prediction events
(features, predicted class, class scores) in the contract of
``stream_monitor.core.events``; each label arrives ``--label-delay`` events after its
prediction. Every detector sees the same events:

* ``monitor ...``: the monitor's final decision. The events go, as JSON records, through
  :class:`MonitorCore` (join, detectors, policy) with default settings, and what it
  publishes on ``drift-events`` is read back: ``warning+`` counts every drift event of
  severity warning or above, ``action`` those that decided a retrain or an escalation;
* ``features`` and ``prediction``: the drift events of its :class:`FeatureDriftTracker`
  (any severity; ``prediction`` names the predicted class or a score: no label needed);
* ``performance``: the drift events of its :class:`PerformanceTracker` (ADWIN and
  Page-Hinkley on the error stream, any severity);
* baselines: river's ADWIN, PageHinkley and KSWIN with default parameters on the error
  stream, river's ADWIN (default) on every numeric feature (any fires), a detector that
  never fires and one that fires every ``--period`` events.

Detection: the first alarm at or after the drift starts (abrupt: the position; gradual:
the position minus half the width) within the horizon; delay in events from there.
False alarms: alarms on the stationary streams, as mean events between them. KSWIN
costs about 0.2 ms per update, so it sees only 500 events before a drift and 2,500 after
it (full: 1,000 and 10,000) and the first 3,000 (full: 20,000) events of each stationary
stream.

Sizes: ``--quick``: 2 seeds, drift after 5,000 events, 5,000 after it, 30,000 stationary
events per (generator, seed); full: 5 seeds, 10,000 and 10,000, 200,000.

    python benchmarks/detection.py --quick        # about 2 minutes on 2 idle cores
    python benchmarks/detection.py                # about 10 minutes
    python benchmarks/detection.py --quick --label-delay 1000 --family inputs
    python benchmarks/detection.py --quick --feature-setting window_size=300
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import statistics
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import orjson
from river import drift
from river.datasets import base, synth
from sklearn.ensemble import HistGradientBoostingClassifier

from stream_monitor.config import ModelSettings, MonitorSettings
from stream_monitor.core.features import (
    PREDICTION,
    SCORE_PREFIX,
    FeatureDriftSettings,
    FeatureDriftTracker,
    FeatureValue,
)
from stream_monitor.core.monitor import InputTopic, MonitorCore

Kind = Literal["abrupt", "gradual", "stationary"]
EPOCH_MS = 1_700_000_000_000
Sample = tuple[dict[Any, Any], Any]
Family = Literal["concept", "inputs"]
STAGGER_WORDS = {
    "size": ("small", "medium", "large"),
    "color": ("red", "green", "blue"),
    "shape": ("square", "circle", "triangle"),
}


@dataclass(frozen=True)
class Generator:
    name: str
    family: Family
    before: Callable[[int], base.SyntheticDataset]
    after: Callable[[int], base.SyntheticDataset]


GENERATORS = (
    Generator(
        "SEA 0->3",
        "concept",
        lambda s: synth.SEA(variant=0, seed=s),
        lambda s: synth.SEA(3, seed=s),
    ),
    Generator(
        "Agrawal f0->f2",
        "concept",
        lambda s: synth.Agrawal(0, seed=s),
        lambda s: synth.Agrawal(2, seed=s),
    ),
    Generator(
        "Hyperplane new plane",
        "concept",
        lambda s: synth.Hyperplane(seed=s, n_features=10),
        lambda s: synth.Hyperplane(seed=s + 7919, n_features=10),
    ),
    Generator(
        "STAGGER f0->f1",
        "concept",
        lambda s: synth.STAGGER(0, seed=s),
        lambda s: synth.STAGGER(1, seed=s),
    ),
    Generator(
        "RandomRBF new centroids",
        "inputs",
        lambda s: synth.RandomRBF(seed_model=s, seed_sample=s),
        lambda s: synth.RandomRBF(seed_model=s + 7919, seed_sample=s),
    ),
    Generator(
        "LED -> LEDDrift(4)",
        "inputs",
        lambda s: synth.LED(seed=s, noise_percentage=0.1, irrelevant_features=True),
        lambda s: synth.LEDDrift(
            seed=s, noise_percentage=0.1, irrelevant_features=True, n_drift_features=4
        ),
    ),
    Generator(
        "Agrawal perturbation 0->0.2",
        "inputs",
        lambda s: synth.Agrawal(0, seed=s),
        lambda s: synth.Agrawal(0, seed=s, perturbation=0.2),
    ),
)


@dataclass(frozen=True)
class Config:
    seeds: int
    drift_at: int
    horizon: int
    width: int
    stationary: int
    kswin_events: int
    kswin_span: tuple[int, int]
    """Events KSWIN sees before and after a drift position."""
    label_delay: int
    period: int
    events_per_second: float
    features: FeatureDriftSettings


@dataclass
class StreamResult:
    generator: str
    family: Family
    kind: Kind
    seed: int
    length: int
    start: int
    """Where the drift starts (0 for a stationary stream)."""
    alarms: dict[str, list[int]]
    fed: dict[str, int]
    """Events each detector saw, when not the whole stream (KSWIN)."""
    accuracy: tuple[float, float]
    """Model accuracy before and after the drift start."""
    monitor_seconds: float = 0.0


@dataclass
class _Events:
    features: list[dict[str, FeatureValue]] = field(default_factory=list)
    predictions: list[str] = field(default_factory=list)
    scores: list[dict[str, float]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    errors: list[float] = field(default_factory=list)


def _key(name: object) -> str:
    return f"x{name}" if isinstance(name, int) else str(name)


def _matrix(samples: list[dict[Any, Any]], keys: list[Any]) -> np.ndarray:
    return np.array([[float(x[k]) for k in keys] for x in samples])


def _events(
    samples: list[Sample],
    model: HistGradientBoostingClassifier,
    keys: list[Any],
    generator: str,
) -> _Events:
    xs = [x for x, _ in samples]
    proba = model.predict_proba(_matrix(xs, keys))
    classes = [str(c) for c in model.classes_]
    predicted = [classes[i] for i in proba.argmax(axis=1)]
    out = _Events()
    names = [_key(k) for k in keys]
    for x, (_, y), p, row in zip(xs, samples, predicted, proba.tolist(), strict=True):
        if generator.startswith("STAGGER"):
            features: dict[str, FeatureValue] = {k: STAGGER_WORDS[k][v] for k, v in x.items()}
        else:
            features = dict(zip(names, (x[k] for k in keys), strict=True))
        out.features.append(features)
        out.predictions.append(p)
        out.scores.append(dict(zip(classes, row, strict=True)))
        out.labels.append(str(y))
        out.errors.append(0.0 if p == str(y) else 1.0)
    return out


class _Monitor:
    """The monitor's core, fed JSON records as the Kafka shell would, read back through
    the drift events it publishes."""

    def __init__(self, config: Config, stream: str) -> None:
        settings = MonitorSettings(defaults=ModelSettings(features=config.features))
        self.core = MonitorCore(settings)
        self.stream = stream
        self.milliseconds = 1000.0 / config.events_per_second
        self.seconds = 0.0

    def prediction(self, i: int, events: _Events) -> dict[str, bool]:
        record = {
            "prediction_id": f"{self.stream}-{i}",
            "model_id": "m",
            "model_version": "1",
            "timestamp": EPOCH_MS + i * self.milliseconds,
            "features": events.features[i],
            "prediction": events.predictions[i],
            "scores": events.scores[i],
        }
        return self._process("predictions", record)

    def label(self, i: int, now: int, events: _Events) -> dict[str, bool]:
        record = {
            "prediction_id": f"{self.stream}-{i}",
            "model_id": "m",
            "label": events.labels[i],
            "timestamp": EPOCH_MS + now * self.milliseconds,
        }
        return self._process("ground_truth", record)

    def _process(self, topic: InputTopic, record: dict[str, Any]) -> dict[str, bool]:
        value = orjson.dumps(record)
        start = time.perf_counter()
        outputs = self.core.process(topic, b"m", value)
        self.seconds += time.perf_counter() - start
        flags: dict[str, bool] = {}
        for output in outputs:
            if output.topic != "drift_events":
                continue
            data = orjson.loads(output.value)["data"]
            flags["monitor warning+"] = data["severity"] in ("warning", "drift", "critical")
            flags["monitor action"] = data["action"] in ("retrain", "escalate")
            if data["kind"] == "performance":
                flags["performance"] = True
            elif data["kind"] in ("feature", "prediction"):
                names = [f["feature"] for f in data["evidence"]["features"]]
                flags["features"] = True
                flags["prediction"] = any(n.startswith((PREDICTION, SCORE_PREFIX)) for n in names)
        return flags


def _merge(flags: dict[str, bool], more: dict[str, bool]) -> None:
    for name, flag in more.items():
        flags[name] = flags.get(name, False) or flag


def _run(
    events: _Events, config: Config, seed: int, kswin_from: int, kswin_to: int, stream: str
) -> tuple[dict[str, list[int]], dict[str, int], float]:
    n = len(events.predictions)
    alarms: dict[str, list[int]] = defaultdict(list)
    monitor = _Monitor(config, stream)
    baselines: dict[str, Any] = {
        "river ADWIN (errors)": drift.ADWIN(),
        "river PageHinkley (errors)": drift.PageHinkley(),
    }
    kswin = drift.KSWIN(seed=seed)
    per_feature: dict[str, drift.ADWIN] = {}
    pending: deque[int] = deque()
    for i in range(n):
        features = events.features[i]
        flags = monitor.prediction(i, events)
        fired = False
        for name, value in features.items():
            if isinstance(value, int | float):
                detector = per_feature.get(name)
                if detector is None:
                    detector = per_feature[name] = drift.ADWIN()
                detector.update(value)
                fired |= detector.drift_detected
        flags["river ADWIN (each feature)"] = fired
        flags["periodic"] = (i + 1) % config.period == 0
        pending.append(i)
        while pending and pending[0] <= i - config.label_delay:
            j = pending.popleft()
            _merge(flags, monitor.label(j, i, events))
            error = events.errors[j]
            for name, detector in baselines.items():
                detector.update(error)
                _merge(flags, {name: detector.drift_detected})
            if kswin_from <= i < kswin_to:
                kswin.update(error)
                _merge(flags, {"river KSWIN (errors)": kswin.drift_detected})
        for name, flag in flags.items():
            if flag:
                alarms[name].append(i)
    fed = {"river KSWIN (errors)": min(kswin_to, n) - kswin_from}
    return alarms, fed, monitor.seconds


def _gradual(
    before: Iterator[Sample], after: Iterator[Sample], config: Config, seed: int
) -> list[Sample]:
    """River's ConceptDriftStream transition: the chance of a post-drift sample is
    ``1 / (1 + exp(-4 (t - position) / width))`` (written out: river's overflows)."""
    rng = np.random.default_rng(seed)
    out = []
    for t in range(config.drift_at + config.horizon):
        x = max(-50.0, min(50.0, -4.0 * (t - config.drift_at) / config.width))
        out.append(next(after) if rng.random() < 1.0 / (1.0 + math.exp(x)) else next(before))
    return out


def _task(generator_index: int, seed: int, config: Config) -> list[StreamResult]:
    generator = GENERATORS[generator_index]
    # One pre-drift source: the model learns the very concept the streams start with
    # (for Hyperplane and RandomRBF the seed also draws the concept).
    source: Iterator[Sample] = iter(generator.before(seed))
    train = list(itertools.islice(source, 5000))
    keys = list(train[0][0])
    model = HistGradientBoostingClassifier(max_iter=50, random_state=seed)
    model.fit(_matrix([x for x, _ in train], keys), [str(y) for _, y in train])
    results = []
    for kind in ("abrupt", "gradual", "stationary"):
        if kind == "stationary":
            samples = list(itertools.islice(source, config.stationary))
            start, kswin_from, kswin_to = 0, 0, config.kswin_events
        else:
            if kind == "abrupt":
                samples = list(itertools.islice(source, config.drift_at))
                samples += itertools.islice(generator.after(seed + 1), config.horizon)
                start = config.drift_at
            else:
                samples = _gradual(source, iter(generator.after(seed + 2)), config, seed)
                start = config.drift_at - config.width // 2
            before, after = config.kswin_span
            kswin_from, kswin_to = config.drift_at - before, config.drift_at + after
        events = _events(samples, model, keys, generator.name)
        stream = f"{generator.name}/{seed}/{kind}"
        alarms, fed, seconds = _run(events, config, seed, kswin_from, kswin_to, stream)
        errors = np.array(events.errors)
        cut = start or len(samples)
        accuracy = (
            1 - float(errors[:cut].mean()),
            1 - float(errors[cut:].mean()) if start else math.nan,
        )
        results.append(
            StreamResult(
                generator.name,
                generator.family,
                kind,
                seed,
                len(samples),
                start,
                dict(alarms),
                fed,
                accuracy,
                seconds,
            )
        )
    return results


DETECTORS = (
    "monitor warning+",
    "monitor action",
    "features",
    "prediction",
    "performance",
    "river ADWIN (errors)",
    "river PageHinkley (errors)",
    "river KSWIN (errors)",
    "river ADWIN (each feature)",
    "never",
    "periodic",
)


def _detection(result: StreamResult, detector: str) -> tuple[int | None, int]:
    """(delay of the first alarm after the drift start, alarms before it)."""
    alarms = result.alarms.get(detector, [])
    before = sum(1 for a in alarms if a < result.start)
    after = [a - result.start for a in alarms if a >= result.start]
    return (after[0] if after else None), before


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "never"
    return "-" if math.isnan(value) else f"{value:,.0f}"


def _table(results: list[StreamResult], family: Family | None, kind: Kind) -> list[str]:
    drifts = [r for r in results if r.kind == kind and (family is None or r.family == family)]
    stationary = [
        r for r in results if r.kind == "stationary" and (family is None or r.family == family)
    ]
    lines = [
        "| detector | detected | mean delay | median delay | p90 delay | events per false alarm |",
        "|---|---|---|---|---|---|",
    ]
    for detector in DETECTORS:
        delays = [d for d, _ in (_detection(r, detector) for r in drifts) if d is not None]
        detected = f"{len(delays)}/{len(drifts)}"
        fed = sum(r.fed.get(detector, r.length) for r in stationary)
        false = sum(len(r.alarms.get(detector, [])) for r in stationary)
        per_alarm = f"{fed / false:,.0f}" if false else f"> {fed:,}"
        if delays:
            mean, median = statistics.fmean(delays), statistics.median(delays)
            p90 = float(np.percentile(delays, 90))
        else:
            mean = median = p90 = math.nan
        delay = " | ".join(_fmt(v) for v in (mean, median, p90))
        lines.append(f"| {detector} | {detected} | {delay} | {per_alarm} |")
    return lines


def _summary(results: list[StreamResult], detector: str) -> tuple[int, int, float, float]:
    """(detected, drifts, median delay, stationary events per false alarm) on abrupt drift.

    For comparing detectors: a missed drift counts as an infinite delay, and a detector
    without false alarms is credited with the events it saw, not with infinity (KSWIN sees
    fewer)."""
    drifts = [r for r in results if r.kind == "abrupt"]
    stationary = [r for r in results if r.kind == "stationary"]
    delays = [d for d, _ in (_detection(r, detector) for r in drifts)]
    fed = sum(r.fed.get(detector, r.length) for r in stationary)
    false = sum(len(r.alarms.get(detector, [])) for r in stationary)
    finite = [d for d in delays if d is not None]
    median = statistics.median([math.inf if d is None else d for d in delays])
    return len(finite), len(drifts), float(median), fed / max(false, 1)


def _targets(results: list[StreamResult]) -> list[str]:
    """The issue's targets for the monitor's decision with default settings."""
    rivals = [d for d in DETECTORS if d.startswith("river")]
    lines = []
    for monitor in ("monitor warning+", "monitor action"):
        detected, drifts, median, run = _summary(results, monitor)
        fair = [r for r in rivals if _summary(results, r)[3] >= run]
        best = min((_summary(results, r)[2] for r in fair), default=math.nan)
        lines.append(
            f"- {monitor}: {detected}/{drifts} abrupt drifts detected; {run:,.0f} stationary "
            "events per false alarm (events seen when none; target: 100,000); median delay "
            f"{_fmt(median)} "
            f"(misses count as never) against {_fmt(best)} for the best river default with "
            "no more false alarms"
        )
    return lines


def _per_generator(results: list[StreamResult]) -> list[str]:
    lines = [
        "| stream | family | accuracy before -> after | features: detected (median delay) | "
        "performance: detected (median delay) | features: false alarms / stationary events |",
        "|---|---|---|---|---|---|",
    ]
    for generator in GENERATORS:
        rows = [r for r in results if r.generator == generator.name]
        if not rows:
            continue
        drifts = [r for r in rows if r.kind != "stationary"]
        stationary = [r for r in rows if r.kind == "stationary"]
        before = statistics.fmean(r.accuracy[0] for r in drifts)
        after = statistics.fmean(r.accuracy[1] for r in drifts)
        cells = []
        for detector in ("features", "performance"):
            delays = [d for d, _ in (_detection(r, detector) for r in drifts) if d is not None]
            median = _fmt(statistics.median(delays)) if delays else "-"
            cells.append(f"{len(delays)}/{len(drifts)} ({median})")
        false = sum(len(r.alarms.get("features", [])) for r in stationary)
        events = sum(r.length for r in stationary)
        lines.append(
            f"| {generator.name} | {generator.family} | {before:.3f} -> {after:.3f} | "
            f"{cells[0]} | {cells[1]} | {false} / {events:,} |"
        )
    return lines


def _mixed(seed: int, versions: int, length: int) -> tuple[int, int, int]:
    """Stationary events with every kind of column the tracker handles: normal, discrete,
    skewed, heavy-tailed (Student t, 2 degrees of freedom), binary and 5 % missing
    numbers, a categorical feature and a long-tailed one (Zipf ids), a class and its
    scores. A new version (new reference) every ``length`` events.
    Returns (events, signals, tests per round)."""
    rng = np.random.default_rng(seed)
    names = [f"f{j}" for j in range(8)]
    signals = tests = 0
    for _ in range(versions):
        tracker = FeatureDriftTracker(FeatureDriftSettings(), "classification")
        values = rng.normal(size=(length, 8))
        values[:, 3] = np.round(values[:, 3] * 2)
        values[:, 4] = rng.exponential(size=length)
        values[:, 5] = rng.standard_t(2, size=length)
        values[:, 6] = rng.integers(0, 2, size=length)
        missing = rng.random(length) < 0.05
        colours = rng.choice(["a", "b", "c", "d"], p=[0.5, 0.3, 0.15, 0.05], size=length)
        ids = rng.zipf(1.5, size=length)
        for i, row in enumerate(values.tolist()):
            features: dict[str, FeatureValue] = dict(zip(names, row, strict=True))
            if missing[i]:
                features["f7"] = None
            features["colour"], features["id"] = str(colours[i]), f"id{ids[i]}"
            score = 0.7 if row[2] > 0 else 0.4
            prediction = "yes" if row[0] + row[1] > 0 else "no"
            signals += len(tracker.update(features, prediction, {"yes": score, "no": 1 - score}))
        tests = tracker.tests
    return versions * length, signals, tests


def _cost(repeats: int = 3) -> float:
    """Microseconds per update of a tracker with 10 numeric features, a class and two scores."""
    rng = np.random.default_rng(0)
    values = rng.normal(size=(100_000, 10))
    names = [f"f{j}" for j in range(10)]
    events = [
        (
            dict(zip(names, row, strict=True)),
            "yes" if row[0] > 0 else "no",
            {"yes": 0.6, "no": 0.4},
        )
        for row in values.tolist()
    ]
    best = math.inf
    for _ in range(repeats):
        tracker = FeatureDriftTracker(FeatureDriftSettings(), "classification")
        for event in events[:1000]:
            tracker.update(*event)
        start = time.perf_counter()
        for event in events[1000:]:
            tracker.update(*event)
        best = min(best, (time.perf_counter() - start) / (len(events) - 1000))
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, shorter streams")
    parser.add_argument("--seeds", type=int, help="seeds per generator (default 5; quick 2)")
    parser.add_argument("--label-delay", type=int, default=0, help="events before a label")
    parser.add_argument("--width", type=int, default=1000, help="gradual transition, events")
    parser.add_argument("--period", type=int, default=5000, help="the periodic baseline")
    parser.add_argument("--events-per-second", type=float, default=10.0, help="event time")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--family", choices=("concept", "inputs"), help="only these streams")
    parser.add_argument(
        "--feature-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a FeatureDriftSettings field, e.g. window_size=300 (repeatable)",
    )
    args = parser.parse_args()
    overrides = dict(item.split("=", 1) for item in args.feature_setting)
    quick = args.quick
    config = Config(
        seeds=args.seeds or (2 if quick else 5),
        drift_at=5000 if quick else 10_000,
        horizon=5000 if quick else 10_000,
        width=args.width,
        stationary=30_000 if quick else 200_000,
        kswin_events=3_000 if quick else 20_000,
        kswin_span=(500, 2500) if quick else (1000, 10_000),
        label_delay=args.label_delay,
        period=args.period,
        events_per_second=args.events_per_second,
        features=FeatureDriftSettings.model_validate(overrides),
    )
    started = time.perf_counter()
    chosen = [i for i, g in enumerate(GENERATORS) if args.family in (None, g.family)]
    tasks = [(g, s, config) for g in chosen for s in range(config.seeds)]
    versions, length = (3, 100_000) if quick else (20, 100_000)
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        mixed = [pool.submit(_mixed, seed, versions, length) for seed in range(2)]
        chunks = pool.map(_task, *zip(*tasks, strict=True))
        results = [r for chunk in chunks for r in chunk]
        outcomes = [f.result() for f in mixed]
    mixed_events = sum(o[0] for o in outcomes)
    mixed_signals = sum(o[1] for o in outcomes)
    elapsed = time.perf_counter() - started
    monitor_seconds = sum(r.monitor_seconds for r in results)
    events = sum(r.length for r in results)

    stationary_events = sum(r.length for r in results if r.kind == "stationary")
    print(
        f"# Detection benchmark ({'quick' if quick else 'full'}): {len(chosen)} generators x "
        f"{config.seeds} seeds; drift at {config.drift_at:,}, horizon {config.horizon:,}, "
        f"gradual width {config.width:,}; {stationary_events:,} stationary events; "
        f"label delay {config.label_delay}; {elapsed:.0f} s on {args.workers} workers\n"
    )
    print(f"Feature settings: {config.features!r}\n")
    print("## All streams, abrupt drift\n")
    print("\n".join(_table(results, None, "abrupt")))
    print()
    print("\n".join(_targets(results)))
    families: tuple[tuple[Family, str], ...] = (
        ("concept", "concept drift, inputs unchanged"),
        ("inputs", "input drift"),
    )
    for kind in ("abrupt", "gradual"):
        for family, title in families:
            if args.family in (None, family):
                print(f"\n## {kind.capitalize()} {title}\n")
                print("\n".join(_table(results, family, kind)))
    print("\n## Per stream (abrupt and gradual)\n")
    print("\n".join(_per_generator(results)))
    run = f"{mixed_events / mixed_signals:,.0f}" if mixed_signals else f"> {mixed_events:,}"
    print(
        f"\nStationary, 13 mixed columns ({outcomes[0][2]} tests a round), "
        f"{2 * versions} references of {length:,} events: FeatureDriftTracker raised "
        f"{mixed_signals} signals in {mixed_events:,} events: {run} events per false alarm "
        f"(expected_run_time {FeatureDriftSettings().expected_run_time:,.0f})."
    )
    print(
        f"\nMonitorCore.process: {monitor_seconds / events * 1e6:.1f} us per prediction and its "
        f"label in these streams. FeatureDriftTracker.update: {_cost():.1f} us per event with "
        "10 numeric features, a class and 2 scores (best of 3, 100,000 events)."
    )


if __name__ == "__main__":
    main()
