"""docs/configuration.md is generated from the settings models and must be current."""

from __future__ import annotations

from stream_monitor.config import MonitorSettings
from stream_monitor.settings_docs import DOC, configuration_markdown, main, setting_rows
from stream_monitor.trainer.settings import TrainerSettings


def test_the_configuration_reference_is_current() -> None:
    assert DOC.read_text(encoding="utf-8") == configuration_markdown(), (
        "docs/configuration.md is out of date: run python3 -m stream_monitor.settings_docs"
    )


def test_every_setting_of_both_services_has_a_row() -> None:
    text = configuration_markdown()
    for model in (MonitorSettings, TrainerSettings):
        rows = list(setting_rows(model, ()))
        assert len(rows) > 30
        for row in rows:
            assert f"| `{row.path}` |" in text


def test_check_mode_reports_a_stale_file(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    stale = tmp_path / "configuration.md"
    stale.write_text("# old\n", encoding="utf-8")
    assert main(["--check", "--output", str(stale)]) == 1
    assert main(["--output", str(stale)]) == 0
    assert main(["--check", "--output", str(stale)]) == 0
