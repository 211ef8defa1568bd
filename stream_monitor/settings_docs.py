"""The settings reference, ``docs/configuration.md``, generated from the settings models.

Every field of :class:`~stream_monitor.config.MonitorSettings` and
:class:`~stream_monitor.trainer.settings.TrainerSettings` becomes one row: its YAML
path, environment variable, type, default, constraints and description. A field's
description is its pydantic ``description``, or else the comment beside it in the
shipped ``configs/*.yaml`` (whose values a test keeps equal to the defaults), so the
reference cannot fall behind the code: ``tests/unit/test_settings_docs.py`` fails
when the file differs from what this module generates.

Regenerate after changing a setting::

    python3 -m stream_monitor.settings_docs            # writes docs/configuration.md
    python3 -m stream_monitor.settings_docs --check    # exit 1 if it is out of date

>>> from stream_monitor.config import JoinSettings
>>> [row.path for row in setting_rows(JoinSettings, ("join",))][:2]
['join.ttl_seconds', 'join.max_skew_seconds']
>>> yaml_comments("a:  # first\\n  b: 1  # second\\n        # more\\n")
{'a': 'first', 'a.b': 'second more'}
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from stream_monitor.config import ENV_PREFIX, MonitorSettings
from stream_monitor.trainer.settings import TRAINER_ENV_PREFIX, TrainerSettings

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "configuration.md"
CONFIGS = ROOT / "configs"

_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][A-Za-z0-9_]*):(?P<rest>.*)$")


@dataclass(frozen=True)
class SettingRow:
    path: str
    type: str
    default: str
    constraints: str
    description: str


def yaml_comments(text: str) -> dict[str, str]:
    """The comment beside each key of a YAML file, by dotted path (two-space indents).

    A comment-only line whose ``#`` stands in the column of the comment above
    continues it.
    """
    comments: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    last: tuple[str, int] | None = None  # (path, column of its '#')
    for line in text.splitlines():
        stripped = line.lstrip()
        if stripped.startswith("#"):
            column = len(line) - len(stripped)
            if last is not None and column == last[1]:
                comments[last[0]] += " " + stripped.lstrip("#").strip()
            else:
                last = None
            continue
        match = _KEY_LINE.match(line)
        if match is None:
            last = None
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        path = ".".join(key for _, key in stack)
        rest = match["rest"]
        last = None
        if "#" in rest:
            column = len(line) - len(rest) + rest.index("#")
            comments[path] = rest[rest.index("#") + 1 :].strip()
            last = (path, column)
    return comments


def type_name(annotation: Any) -> str:
    """A short, readable name of a field's type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(json.dumps(arg) for arg in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(type_name(arg) for arg in args)
    if origin is not None:
        return f"{origin.__name__}[{', '.join(type_name(arg) for arg in args)}]"
    if annotation is type(None):
        return "null"
    if annotation is SecretStr:
        return "secret"
    if annotation is Any:
        return "any"
    return str(getattr(annotation, "__name__", annotation))


def _plain(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, frozenset | set):
        return sorted(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def default_text(field: FieldInfo) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "(required)"
    value = field.get_default(call_default_factory=True)
    return f"`{json.dumps(_plain(value))}`"


def constraints_text(field: FieldInfo) -> str:
    words = {
        annotated_types.Gt: ("gt", "> "),
        annotated_types.Ge: ("ge", ">= "),
        annotated_types.Lt: ("lt", "< "),
        annotated_types.Le: ("le", "<= "),
        annotated_types.MinLen: ("min_length", "length >= "),
        annotated_types.MaxLen: ("max_length", "length <= "),
    }
    parts = []
    for item in field.metadata:
        for kind, (attribute, prefix) in words.items():
            if isinstance(item, kind):
                parts.append(f"{prefix}{getattr(item, attribute)}")
    return ", ".join(parts)


def _submodel(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def setting_rows(
    model: type[BaseModel], prefix: tuple[str, ...], comments: dict[str, str] | None = None
) -> Iterator[SettingRow]:
    """One row per leaf setting of ``model``, depth first, in declaration order."""
    for name, field in model.model_fields.items():
        path = (*prefix, name)
        nested = _submodel(field.annotation)
        if nested is not None:
            yield from setting_rows(nested, path, comments)
            continue
        dotted = ".".join(path)
        description = field.description or (comments or {}).get(dotted, "")
        yield SettingRow(
            path=dotted,
            type=type_name(field.annotation),
            default=default_text(field),
            constraints=constraints_text(field),
            description=" ".join(description.split()),
        )


def _groups(
    model: type[BaseModel], prefix: tuple[str, ...] = ()
) -> Iterator[tuple[str, type[BaseModel], list[str]]]:
    """Each (sub)model with leaf settings: its dotted path, class and leaf field names."""
    leaves = [n for n, f in model.model_fields.items() if _submodel(f.annotation) is None]
    if leaves:
        yield ".".join(prefix), model, leaves
    for name, field in model.model_fields.items():
        nested = _submodel(field.annotation)
        if nested is not None:
            yield from _groups(nested, (*prefix, name))


def _service_markdown(
    title: str, model: type[BaseModel], env_prefix: str, config_file: str
) -> list[str]:
    comments = yaml_comments((CONFIGS / config_file).read_text(encoding="utf-8"))
    lines = [
        f"## {title}",
        "",
        f"File: `configs/{config_file}` (every setting with its default). Environment "
        f"variable of a setting: `{env_prefix}` and its path in capitals with `__` between "
        f"the parts, e.g. `{env_prefix}KAFKA__BOOTSTRAP_SERVERS`.",
        "",
    ]
    rows = {row.path: row for row in setting_rows(model, (), comments)}
    for path, group, leaves in _groups(model):
        lines += [f"### {title}: {f'`{path}`' if path else 'top level'}", ""]
        doc = (group.__doc__ or "").strip().split("\n\n")[0] if path else ""
        if doc and not doc.startswith(group.__name__ + "("):
            lines += [" ".join(doc.split()), ""]
        lines += [
            "| setting | type | default | allowed | description |",
            "|---|---|---|---|---|",
        ]
        for leaf in leaves:
            row = rows[f"{path}.{leaf}" if path else leaf]
            description = row.description.replace("|", "\\|")
            lines.append(
                f"| `{row.path}` | {row.type} | {row.default} | {row.constraints} | {description} |"
            )
        lines.append("")
    return lines


def configuration_markdown() -> str:
    """The whole of ``docs/configuration.md``."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by `python3 -m stream_monitor.settings_docs` from the settings "
        "models; do not edit by hand (a test fails when this file is out of date). -->",
        "",
        "Settings are read from a YAML file (`--config`), then overridden by environment "
        "variables, and validated at start: a wrong or missing setting stops the start with "
        "one line per problem naming the setting and what it expects. Unknown keys are "
        "errors. Per-model overrides go under `models:` by model_id and need only what "
        "differs from `defaults`, e.g. `models: {fraud: {policy: {cooldown_seconds: "
        "86400}}}`; in the environment `models` is one JSON value.",
        "",
    ]
    lines += _service_markdown("Monitor", MonitorSettings, ENV_PREFIX, "monitor.yaml")
    lines += _service_markdown("Trainer", TrainerSettings, TRAINER_ENV_PREFIX, "trainer.yaml")
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m stream_monitor.settings_docs",
        description="Write docs/configuration.md from the settings models.",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    parser.add_argument("--output", type=Path, default=DOC, help=f"default: {DOC}")
    args = parser.parse_args(argv)
    text = configuration_markdown()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is out of date: python3 -m stream_monitor.settings_docs")
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
