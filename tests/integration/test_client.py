"""A serving app's events through stream_monitor.client, joined by the real monitor."""

from __future__ import annotations

import random
import time

import pytest
from kafka import KafkaProducer

from stream_monitor.client import InvalidEventError, LabelReporter, PredictionLogger
from tests.integration.helpers import (
    all_committed,
    assert_every_pair_counted_once,
    create_topics,
    running_monitor,
    settings_for,
    wait_until,
)

pytestmark = pytest.mark.integration

EVENTS = 1_000


def test_every_prediction_and_label_sent_through_the_client_is_joined(bootstrap: str) -> None:
    settings = settings_for(bootstrap)
    create_topics(settings)
    rng = random.Random(0)
    models = ["churn", "fraud"]
    with running_monitor(settings) as monitor:
        loggers = {m: PredictionLogger(settings, model_id=m, model_version="1") for m in models}
        # One producer for both writers of a model, as an app would share it.
        reporters = {
            m: LabelReporter(settings, model_id=m, producer=loggers[m].producer) for m in models
        }
        sent: list[tuple[str, str, bool]] = []
        for i in range(EVENTS):
            model = models[i % 2]
            x = rng.gauss(0, 1)
            prediction = x > 0
            prediction_id = loggers[model].log(
                {"x": x, "segment": rng.choice("abc")},
                prediction,
                scores={"true": 0.7, "false": 0.3},
            )
            sent.append(
                (model, prediction_id, prediction if rng.random() < 0.9 else not prediction)
            )
            if len(sent) > 50:  # labels arrive later than their predictions
                model, prediction_id, label = sent.pop(0)
                reporters[model].report(prediction_id, label)
        for model, prediction_id, label in sent:
            reporters[model].report(prediction_id, label)
        with pytest.raises(InvalidEventError, match="features"):
            loggers["churn"].log({"x": [1.0]}, True)
        # The monitor's input limits (settings.limits) too: it would dead-letter these.
        with pytest.raises(InvalidEventError, match=r"limits\.max_id_length"):
            loggers["churn"].log({"x": 1.0}, True, prediction_id="p" * 900_000)
        with pytest.raises(InvalidEventError, match=r"limits\.max_event_time_ahead_seconds"):
            reporters["fraud"].report("p", True, timestamp=time.time() + 7200)
        for logger in loggers.values():
            logger.close(timeout=30)
        for model in models:
            delivery = loggers[model].delivery
            assert delivery.sent == EVENTS // 2, "the invalid call sent nothing"
            assert (delivery.failed, delivery.dropped) == (0, 0)
            assert reporters[model].delivery.sent == EVENTS // 2
        wait_until(lambda: all_committed(settings, 2 * EVENTS), 60, "all committed", monitor)
    assert_every_pair_counted_once(settings, models, EVENTS // 2)


def test_an_apps_producer_with_serializers_is_refused(bootstrap: str) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, value_serializer=str.encode)
    try:
        with pytest.raises(ValueError, match="no key or value serializer"):
            PredictionLogger(
                settings_for(bootstrap), model_id="m", model_version="1", producer=producer
            )
    finally:
        producer.close()
