"""One frozen config object per server, built in one place.

Values come, each overriding the one before, from the dataclass defaults, a
TOML file (one section per server, e.g. ``[msg_server]``), the environment
(``IMCLUSTER_MSG_SERVER__PORT=8001``) and ``--set port=8001`` on the command
line. Every field has a ``doc`` so the README's reference and ``imctl config``
are generated from the same place. Errors name the key that is wrong.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

ENV_PREFIX = "IMCLUSTER_"

C = TypeVar("C")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type."""


def setting(default: Any, doc: str) -> Any:
    """A config field with its documentation attached."""
    if isinstance(default, list):
        default = tuple(default)
    return dataclasses.field(default=default, metadata={"doc": doc})


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin is tuple:
        (item_type, _ellipsis) = typing.get_args(annotation)
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(_coerce(key, item, item_type) for item in value)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None or value == "":
            return None
        return _coerce(key, value, args[0])
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
    if annotation is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if annotation is str:
        if not isinstance(value, str | int | float):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{key}: unsupported setting type {annotation!r}")


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None


def load_config(
    cls: type[C],
    section: str,
    path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> C:
    """Build ``cls`` from defaults, the TOML ``section``, env, then overrides."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    raw: dict[str, Any] = {}
    if path is not None:
        table = read_toml(path).get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{section}: expected a table in {path}")
        raw.update(table)
    env_prefix = f"{ENV_PREFIX}{section.upper()}__"
    for name, value in (environ if environ is not None else os.environ).items():
        if name.startswith(env_prefix):
            raw[name[len(env_prefix) :].lower()] = value
    raw.update(overrides or {})
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{section}.{key}: unknown setting (known: {known})")
        values[key] = _coerce(f"{section}.{key}", value, hints[key])
    try:
        config = cls(**values)
    except ValueError as exc:
        raise ConfigError(f"{section}: {exc}") from None
    return config


def parse_assignments(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """Turn ``["port=8001", ...]`` from the command line into a mapping."""
    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r}")
        result[key.strip()] = value.strip()
    return result


def describe(cls: type) -> list[tuple[str, str, Any, str]]:
    """(name, type, default, doc) for each field: the config reference."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if typing.get_origin(hint) is tuple:
            type_name = f"list of {typing.get_args(hint)[0].__name__}"
        else:
            type_name = getattr(hint, "__name__", str(hint))
        rows.append((f.name, type_name, f.default, f.metadata.get("doc", "")))
    return rows


def markdown_reference(sections: Mapping[str, type]) -> str:
    """The configuration reference as Markdown, one table per server."""
    lines = [
        "# Configuration reference",
        "",
        "Generated by `imctl config --markdown`; do not edit by hand.",
        "",
        "Every server reads its own table from one TOML file (`--config FILE`, `$IMCLUSTER_CONFIG`",
        "or `./imcluster.toml`). The environment overrides the file",
        "(`IMCLUSTER_MSG_SERVER__PORT=8001`), and `--set port=8001` overrides both.",
        "Lists are TOML arrays, or comma-separated in the environment and `--set`.",
    ]
    for section, cls in sections.items():
        lines += ["", f"## [{section}]", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        for name, type_name, default, doc in describe(cls):
            shown = list(default) if isinstance(default, tuple) else default
            lines.append(f"| `{name}` | {type_name} | `{shown!r}` | {doc} |")
    return "\n".join(lines) + "\n"


def split_address(key: str, address: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """Parse ``host:port`` (or ``:port``) into a tuple, naming the key on error."""
    host, sep, port = address.rpartition(":")
    if not sep:
        raise ConfigError(f"{key}: expected host:port, got {address!r}")
    try:
        port_number = int(port)
    except ValueError:
        raise ConfigError(f"{key}: bad port in {address!r}") from None
    if not 0 <= port_number <= 65535:
        raise ConfigError(f"{key}: port out of range in {address!r}")
    return (host.strip("[]") or default_host, port_number)
