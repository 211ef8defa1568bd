"""Liveness and readiness of a service, for ``/healthz`` and ``/readyz``.

The service's thread tells a :class:`Health` what happens (its loop turned, partitions
were assigned, state was restored, how much lag it measured); the HTTP server's thread
asks it for a verdict. Each update is one attribute assignment, so the two threads
need no lock, and the service's loop pays nothing measurable.

* **Alive** (``/healthz``): the loop turned within ``max_loop_seconds``. A process that
  fails this is hung: restarting it is the cure.
* **Ready** (``/readyz``): alive, in its consumer group and talking to the broker (the
  last group heartbeat within ``max_heartbeat_age_seconds``), the state of its partitions
  restored since their last assignment, and its lag at most ``max_lag_records`` (when
  the service measures lag). An instance without partitions (more instances than
  partitions) is ready: it is a standby.

>>> from stream_monitor.config import MonitorHealthSettings
>>> now = [0.0]
>>> health = Health(MonitorHealthSettings(), restores_state=True, clock=lambda: now[0])
>>> health.watch_group(lambda: 1.0)
>>> health.restored(); health.lag(0); now[0] = 5.0
>>> health.readiness().ok
True
>>> now[0] = 100.0
>>> health.liveness().reasons, health.readiness().ok
(['the loop has not turned for 100.0 s (max_loop_seconds 60.0)'], False)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stream_monitor.config import HealthSettings, MonitorHealthSettings


@dataclass(frozen=True)
class Verdict:
    """The answer of a probe: ``ok``, what failed, and what was seen."""

    ok: bool
    reasons: list[str] = field(default_factory=list)
    seen: dict[str, Any] = field(default_factory=dict)


def assess_liveness(loop_age: float, max_loop_seconds: float) -> Verdict:
    """Alive when the loop turned within ``max_loop_seconds``.

    >>> assess_liveness(2.0, 60.0).ok, assess_liveness(61.0, 60.0).reasons
    (True, ['the loop has not turned for 61.0 s (max_loop_seconds 60.0)'])
    """
    seen = {"loop_age_seconds": round(loop_age, 3)}
    if loop_age > max_loop_seconds:
        return Verdict(
            False,
            [f"the loop has not turned for {loop_age:.1f} s (max_loop_seconds {max_loop_seconds})"],
            seen,
        )
    return Verdict(True, [], seen)


def assess_readiness(
    liveness: Verdict,
    heartbeat_age: float | None,
    restored: bool,
    lag: int | None,
    settings: HealthSettings,
) -> Verdict:
    """Ready when alive, heartbeating, restored and within the lag bound.

    ``heartbeat_age``: seconds since the consumer's last group heartbeat (None or
    infinite: none yet); ``lag``: records waiting on this instance's partitions (None:
    not measured, or the last measure failed).

    >>> from stream_monitor.config import MonitorHealthSettings
    >>> s = MonitorHealthSettings(max_lag_records=10)
    >>> alive = Verdict(True)
    >>> assess_readiness(alive, 1.0, True, 3, s).ok
    True
    >>> assess_readiness(alive, 40.0, True, 11, s).reasons  # doctest: +NORMALIZE_WHITESPACE
    ['last group heartbeat 40.0 s ago (max_heartbeat_age_seconds 15.0)',
     'lag 11 records (max_lag_records 10)']
    """
    reasons = list(liveness.reasons)
    seen = dict(liveness.seen)
    if heartbeat_age is None or math.isinf(heartbeat_age):
        reasons.append("no group heartbeat yet")
    else:
        seen["heartbeat_age_seconds"] = round(heartbeat_age, 3)
        if heartbeat_age > settings.max_heartbeat_age_seconds:
            reasons.append(
                f"last group heartbeat {heartbeat_age:.1f} s ago "
                f"(max_heartbeat_age_seconds {settings.max_heartbeat_age_seconds})"
            )
    seen["state_restored"] = restored
    if not restored:
        reasons.append("state not restored since the last assignment")
    if isinstance(settings, MonitorHealthSettings):  # a service that measures its lag
        bound = settings.max_lag_records
        seen["lag_records"] = lag
        if lag is None:
            reasons.append("lag not measured (the broker may be away)")
        elif bound is not None and lag > bound:
            reasons.append(f"lag {lag} records (max_lag_records {bound})")
    return Verdict(not reasons, reasons, seen)


class Health:
    """What a service's thread reports, and the verdicts the probes read."""

    def __init__(
        self,
        settings: HealthSettings,
        restores_state: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._last_turn = clock()  # starting counts as a turn: the start has its grace
        self._restored = not restores_state
        self._lag: int | None = None
        self._partitions = 0
        self._heartbeat_age: Callable[[], float | None] = lambda: None

    # ---- told by the service's thread ----------------------------------------------

    def loop_turned(self) -> None:
        self._last_turn = self._clock()

    def watch_group(self, heartbeat_age: Callable[[], float | None]) -> None:
        """How to read the age of the consumer's last group heartbeat (see
        :func:`heartbeat_age_of`)."""
        self._heartbeat_age = heartbeat_age

    def assigned(self, partitions: int) -> None:
        """Partitions were assigned; a service with state restores it next."""
        self._partitions = partitions

    def restoring(self) -> None:
        self._restored = False

    def restored(self) -> None:
        self._restored = True

    def lag(self, records: int | None) -> None:
        """Records waiting on this instance's partitions; None when it could not be
        measured (the broker is away)."""
        self._lag = records

    # ---- asked by the HTTP thread ----------------------------------------------------

    def liveness(self) -> Verdict:
        return assess_liveness(self._clock() - self._last_turn, self.settings.max_loop_seconds)

    def readiness(self) -> Verdict:
        verdict = assess_readiness(
            self.liveness(), self._heartbeat_age(), self._restored, self._lag, self.settings
        )
        verdict.seen["partitions"] = self._partitions
        return verdict


def heartbeat_age_of(consumer: Any) -> Callable[[], float | None]:
    """Seconds since a kafka-python consumer's last group heartbeat, read from its
    metrics (``consumer-coordinator-metrics``, ``last-heartbeat-seconds-ago``).

    kafka-python sends heartbeats from its own thread only while the consumer is a
    member of a stable group and the coordinator is reachable: the age stays below the
    heartbeat interval (3 s) while all is well, and grows while the broker is away or
    the group rebalances. Reading metrics does not touch the consumer's state, so it is
    safe from another thread.
    """

    def age() -> float | None:
        metrics = consumer.metrics() or {}
        value = metrics.get("consumer-coordinator-metrics", {}).get("last-heartbeat-seconds-ago")
        return None if value is None else float(value)

    return age
