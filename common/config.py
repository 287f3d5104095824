"""One frozen config object per server, built in one place.

Values come, each overriding the one before, from the dataclass defaults, a
TOML file (one section per server, e.g. ``[msg_server]``), the environment
(``IMCLUSTER_MSG_SERVER__PORT=8001``) and ``--set port=8001`` on the command
line. Every field has a ``doc`` so the README's reference and ``imctl config``
are generated from the same place. Errors name the key that is wrong.

A field made with :func:`subsection` holds a config of its own, read from a
table every server shares (``[cluster]``): the same file's table, the
environment (``IMCLUSTER_CLUSTER__SECRET_FILE``) and ``--set
cluster.secret_file=...``. A field made with ``setting(..., secret=True)``
is never shown: not in ``repr``, not in errors, not in the reference.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
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


# scheme://user:password@ -- the user is kept, the password replaced.
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/@:]*):[^\s/@]*@")


def redact_urls(text: str) -> str:
    """``text`` with the password of every URL in it shown as ``***``.

    For every message and log line that may quote a database, Redis or NATS
    URL: ``mysql://root:pw@db/im`` becomes ``mysql://root:***@db/im``.
    """
    return _URL_PASSWORD.sub(r"\g<head>:***@", text)


# Every top-level table a config file may have, and the class that reads it
# ("module:Class", imported only by who needs the class: `imctl config`).
# A table added to the file format is one line here; any other name in a
# file is refused (a misspelt [msg_srever] would otherwise be ignored).
SECTIONS: dict[str, str] = {
    "login_server": "login_server.config:LoginServerConfig",
    "msg_server": "msg_server.config:MsgServerConfig",
    "route_server": "route_server.config:RouteServerConfig",
    "db_proxy": "db_proxy.config:DbProxyConfig",
    "file_server": "file_server.config:FileServerConfig",
    "msfs": "msfs.config:MsfsConfig",
    "cluster": "common.cluster_config:ClusterConfig",
    "log": "common.log:LogConfig",
    "imctl": "imctl.settings:ImctlConfig",
    "ldap": "imctl.ldap_sync.config:LdapConfig",
}


def section_classes() -> dict[str, type]:
    """Each known section's config class, in the order of :data:`SECTIONS`."""
    import importlib

    classes = {}
    for name, where in SECTIONS.items():
        module, _, attr = where.partition(":")
        classes[name] = getattr(importlib.import_module(module), attr)
    return classes


def check_sections(document: Mapping[str, Any], path: Path | None) -> None:
    """ConfigError for a top-level table of ``document`` no server reads."""
    for name in document:
        if name in SECTIONS:
            continue
        close = difflib.get_close_matches(name, list(SECTIONS), n=1)
        hint = f"did you mean [{close[0]}]?" if close else f"known: {', '.join(sorted(SECTIONS))}"
        raise ConfigError(f"config file {path}: unknown section [{name}]; {hint}")


def setting(default: Any, doc: str, *, secret: bool = False) -> Any:
    """A config field with its documentation attached; ``secret``: never shown."""
    if isinstance(default, list):
        default = tuple(default)
    return dataclasses.field(default=default, repr=not secret, metadata={"doc": doc, "secret": secret})


def subsection(cls: type, section: str, doc: str) -> Any:
    """A field holding the config ``cls``, loaded from the shared TOML table ``[section]``."""
    return dataclasses.field(default_factory=cls, metadata={"doc": doc, "section": section})


def _settings(cls: type) -> list[dataclasses.Field[Any]]:
    """The fields a user sets (not the ones a config computes for itself)."""
    return [f for f in dataclasses.fields(cls) if f.init]


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
    """Build ``cls`` from defaults, the TOML ``section``, env, then overrides.

    Subsection fields come from their own table of the same file, their own
    environment prefix and the overrides named ``FIELD.KEY``.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    document = read_toml(path) if path is not None else {}
    check_sections(document, path)
    env = environ if environ is not None else os.environ
    return _build(cls, section, document, path, env, overrides or {})


def _table(document: Mapping[str, Any], section: str, path: Path | None) -> dict[str, Any]:
    table = document.get(section, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{section}: expected a table in {path}")
    return dict(table)


def _build(
    cls: Any,
    section: str,
    document: Mapping[str, Any],
    path: Path | None,
    environ: Mapping[str, str],
    overrides: Mapping[str, Any],
) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in _settings(cls)}
    raw = _table(document, section, path)
    env_prefix = f"{ENV_PREFIX}{section.upper()}__"
    for name, value in environ.items():
        if name.startswith(env_prefix):
            raw[name[len(env_prefix) :].lower()] = value
    nested: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        head, dot, rest = key.partition(".")
        if dot:
            nested.setdefault(head, {})[rest] = value
        else:
            raw[key] = value
    for key in [*raw, *nested]:
        f = fields.get(key)
        if f is None:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{section}.{key}: unknown setting (known: {known})")
        if "section" in f.metadata and key in raw:
            table = f.metadata["section"]
            raise ConfigError(f"{section}.{key}: set it in the [{table}] table, or as {key}.KEY with --set")
        if "section" not in f.metadata and key in nested:
            raise ConfigError(f"{section}.{key}: not a table")
    values = {
        key: _coerce_field(f"{section}.{key}", value, hints[key], fields[key]) for key, value in raw.items()
    }
    for f in fields.values():
        if "section" in f.metadata:
            values[f.name] = _build(
                hints[f.name], f.metadata["section"], document, path, environ, nested.get(f.name, {})
            )
    try:
        return cls(**values)
    except ValueError as exc:
        message = str(exc)
        # Most checks already name their key ("db_proxy.workers ..."); the rest get the section.
        named = message.startswith((f"{section}.", f"{section}:"))
        raise ConfigError(message if named else f"{section}: {message}") from None


def _coerce_field(key: str, value: Any, annotation: Any, f: dataclasses.Field[Any]) -> Any:
    if not f.metadata.get("secret"):
        return _coerce(key, value, annotation)
    try:
        return _coerce(key, value, annotation)
    except ConfigError:
        # The usual message quotes the value; this one is a secret.
        raise ConfigError(f"{key}: expected a string (value not shown)") from None


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
    """(name, type, default, doc) for each field: the config reference.

    A subsection's type is ``table [NAME]`` and its default None; a secret's
    default is shown empty whatever it is.
    """
    hints = typing.get_type_hints(cls)
    rows = []
    for f in _settings(cls):
        hint = hints[f.name]
        default: Any = f.default
        if "section" in f.metadata:
            type_name, default = f"table [{f.metadata['section']}]", None
        elif typing.get_origin(hint) is tuple:
            type_name = f"list of {typing.get_args(hint)[0].__name__}"
        else:
            type_name = getattr(hint, "__name__", str(hint))
        if f.metadata.get("secret"):
            default = ""
        rows.append((f.name, type_name, default, f.metadata.get("doc", "")))
    return rows


def shown_default(default: Any) -> str:
    """A default as the reference prints it (lists as lists)."""
    return repr(list(default) if isinstance(default, tuple) else default)


def markdown_reference(sections: Mapping[str, type]) -> str:
    """The configuration reference as Markdown, one table per section."""
    lines = [
        "# Configuration reference",
        "",
        "Generated by `imctl config --markdown`; do not edit by hand.",
        "",
        "Every server reads its own table from one TOML file (`--config FILE`, `$IMCLUSTER_CONFIG`",
        "or `./imcluster.toml`). The environment overrides the file",
        "(`IMCLUSTER_MSG_SERVER__PORT=8001`), and `--set port=8001` overrides both.",
        "Lists are TOML arrays, or comma-separated in the environment and `--set`.",
        "",
        "Every server also reads the shared `[cluster]` table (the cluster secret, TLS, heartbeats),",
        "overridden by `IMCLUSTER_CLUSTER__SECRET_FILE=...` and `--set cluster.secret_file=...`;",
        "see [link-security.md](link-security.md).",
    ]
    for section, cls in sections.items():
        lines += ["", f"## [{section}]", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        for name, type_name, default, doc in describe(cls):
            shown = "see below" if default is None else f"`{shown_default(default)}`"
            lines.append(f"| `{name}` | {type_name} | {shown} | {doc} |")
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
