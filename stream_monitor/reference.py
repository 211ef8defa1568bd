"""Reading the configured reference files (the shell's side of ``reference_file``)."""

from __future__ import annotations

from stream_monitor.config import ConfigError, MonitorSettings
from stream_monitor.core.estimation import ReferenceEvent
from stream_monitor.core.events import InvalidRecordError, Prediction, parse_record


def load_references(settings: MonitorSettings) -> dict[str, list[Prediction]]:
    """The prediction events of each model's ``reference_file``, by model_id (with
    their ``label``, if given: calibration pairs of the estimated performance).

    Only per-model files count (a reference is a model's own). Raises
    :class:`ConfigError` naming the file and line of the first unusable event, or a file
    too short to fill the reference.
    """
    references = {}
    for model_id in settings.models:
        model = settings.for_model(model_id)
        path = model.reference_file
        if path is None:
            continue
        if not path.is_file():
            raise ConfigError(f"models.{model_id}.reference_file: {path} is not a file")
        events: list[Prediction] = []
        with path.open("rb") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    events.append(parse_record(ReferenceEvent, model_id.encode(), line))
                except InvalidRecordError as exc:
                    raise ConfigError(
                        f"models.{model_id}.reference_file: {path}:{number}: {exc}"
                    ) from None
        needed = model.features.reference_size
        if len(events) < needed:
            raise ConfigError(
                f"models.{model_id}.reference_file: {path} holds {len(events)} prediction "
                f"events, features.reference_size is {needed}"
            )
        references[model_id] = events
    return references
