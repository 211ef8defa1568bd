"""``replay`` and the ``stream-monitor`` command line, with no broker."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from stream_monitor.cli import main
from stream_monitor.config import MonitorSettings
from stream_monitor.replay import BadLine, replay
from stream_monitor.simulate import Scenario, stream

T0 = 1_767_225_600_000


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("STREAM_MONITOR_"):
            monkeypatch.delenv(name)


def _prediction(pid: str = "p1", prediction: object = "a") -> dict[str, Any]:
    return {
        "prediction_id": pid,
        "model_id": "m",
        "model_version": "1",
        "timestamp": T0,
        "features": {"x": 1.0},
        "prediction": prediction,
    }


def _label(pid: str = "p1", label: object = "a") -> dict[str, Any]:
    return {"prediction_id": pid, "model_id": "m", "label": label, "timestamp": T0 + 1000}


def _line(topic: str, value: object, key: str | None = "m") -> str:
    return json.dumps({"topic": topic, "key": key, "value": value})


def _file(tmp_path: Path, lines: list[str], name: str = "input.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _stdout_events(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


# ---- replay() ----------------------------------------------------------------------------


def test_replay_yields_events_with_configured_topic_names() -> None:
    settings = MonitorSettings(topics={"ground_truth": "labels", "labelled_examples": "examples"})
    lines = [_line("predictions", _prediction()), _line("labels", _label())]
    (event,) = list(replay(settings, lines))
    assert isinstance(event, dict)
    assert (event["topic"], event["key"]) == ("examples", "m")
    assert event["value"]["type"] == "stream_monitor.labelled_example"
    assert "headers" not in event


def test_replay_accepts_a_value_given_as_json_text() -> None:
    lines = [_line("predictions", json.dumps(_prediction())), _line("ground-truth", _label())]
    assert [e["topic"] for e in replay(MonitorSettings(), lines) if isinstance(e, dict)] == [
        "labelled-examples"
    ]


def test_replay_dead_letter_keeps_the_value_and_says_why_in_headers() -> None:
    (event,) = list(replay(MonitorSettings(), [_line("ground-truth", "not json")]))
    assert isinstance(event, dict)
    assert (event["topic"], event["key"], event["value"]) == ("dead-letter", "m", "not json")
    assert event["headers"]["error.reason"] == "invalid_json"
    assert event["headers"]["source.topic"] == "ground_truth"
    assert event["headers"]["error.detail"]


def test_replay_reports_unusable_lines_by_number_and_goes_on() -> None:
    lines = [
        "not json",
        "",
        _line("bogus-topic", _prediction()),
        json.dumps({"topic": "predictions"}),
        "[1, 2]",
        _line("predictions", _prediction()),
        _line("ground-truth", _label()),
    ]
    items = list(replay(MonitorSettings(), lines))
    bad = [i for i in items if isinstance(i, BadLine)]
    assert [b.line for b in bad] == [1, 3, 4, 5]  # the blank line 2 is skipped quietly
    assert "not JSON" in bad[0].reason
    assert "bogus-topic" in bad[1].reason
    assert [i["topic"] for i in items if isinstance(i, dict)] == ["labelled-examples"]


def test_replay_of_a_simulated_drop_asks_for_one_retrain() -> None:
    scenario = Scenario(events=6_000, drift_at=3_000, label_delay=50, features=3)
    topics = {"predictions": "predictions", "ground_truth": "ground-truth"}
    lines = [json.dumps({"topic": topics[t], "key": k, "value": v}) for t, k, v in stream(scenario)]
    topics_out = [e["topic"] for e in replay(MonitorSettings(), lines) if isinstance(e, dict)]
    assert topics_out.count("retrain-requests") == 1


# ---- the command ---------------------------------------------------------------------------


def test_cli_replay_prints_one_json_line_per_event(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _file(tmp_path, [_line("predictions", _prediction()), _line("ground-truth", _label())])
    assert main(["replay", str(path)]) == 0
    captured = capsys.readouterr()
    (event,) = _stdout_events(captured.out)
    assert set(event) == {"topic", "key", "value"}
    assert (event["topic"], event["key"]) == ("labelled-examples", "m")
    assert captured.err == ""


def test_cli_replay_uses_topic_names_from_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _file(tmp_path, ["topics:", "  dead_letter: dlq", "  predictions: preds"], "c.yaml")
    path = _file(tmp_path, [_line("preds", "{broken")])
    assert main(["replay", "--config", str(config), str(path)]) == 0
    (event,) = _stdout_events(capsys.readouterr().out)
    assert event["topic"] == "dlq"
    assert event["headers"]["error.reason"] == "invalid_json"


def test_cli_replay_reports_unusable_lines_on_stderr_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [_line("predictions", _prediction()), "oops", _line("ground-truth", _label())]
    path = _file(tmp_path, lines)
    assert main(["replay", str(path)]) == 1
    captured = capsys.readouterr()
    assert f"{path}:2: skipped: not JSON" in captured.err
    assert [e["topic"] for e in _stdout_events(captured.out)] == ["labelled-examples"]


def test_cli_replay_reports_a_line_that_is_not_utf8_and_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A recorded topic can hold any bytes; one stray byte must not end the whole replay
    # with a traceback.
    path = tmp_path / "input.jsonl"
    good = [_line("predictions", _prediction()).encode(), _line("ground-truth", _label()).encode()]
    path.write_bytes(good[0] + b"\n\xff\xfe oops\n" + good[1] + b"\n")
    assert main(["replay", str(path)]) == 1
    captured = capsys.readouterr()
    assert f"{path}:2: skipped" in captured.err
    assert [e["topic"] for e in _stdout_events(captured.out)] == ["labelled-examples"]


def test_cli_replay_with_a_bad_config_exits_2_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _file(tmp_path, ["join:", "  ttl_seconds: -1"], "bad.yaml")
    path = _file(tmp_path, [_line("predictions", _prediction())])
    assert main(["replay", "--config", str(config), str(path)]) == 2
    captured = capsys.readouterr()
    assert "join.ttl_seconds" in captured.err
    assert captured.out == ""


def test_cli_replay_of_a_missing_input_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", str(tmp_path / "absent.jsonl")]) == 2
    assert "absent.jsonl" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (["--help"], "usage: stream-monitor [-h] COMMAND"),
        (["monitor", "--help"], "usage: stream-monitor monitor [-h] [--config CONFIG]"),
        (["replay", "--help"], "usage: stream-monitor replay [-h] [--config CONFIG]"),
    ],
)
def test_help_exits_0(argv: list[str], usage: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 0
    assert capsys.readouterr().out.startswith(usage)


def test_top_level_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("monitor", "replay", "demo", "broker"):
        assert command in out
    assert "STREAM_MONITOR_KAFKA__BOOTSTRAP_SERVERS" in out


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main([])
    assert caught.value.code == 2
    assert "usage:" in capsys.readouterr().err
