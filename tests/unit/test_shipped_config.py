"""The shipped configuration documents the defaults; it must not drift from the code."""

from __future__ import annotations

from pathlib import Path

from stream_monitor.config import MonitorSettings, load_settings

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_monitor_yaml_is_exactly_the_defaults() -> None:
    assert load_settings(CONFIGS / "monitor.yaml") == MonitorSettings()
