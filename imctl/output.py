"""Human-readable tables and key/value listings; ``--json`` bypasses them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

import click

Column = tuple[str, str]  # (key in the row, header)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ",".join(cell(v) for v in value)
    return str(value)


def table(rows: Iterable[dict[str, Any]], columns: Sequence[Column]) -> str:
    """Left-aligned columns, headers in capitals, two spaces between columns."""
    lines = [[header.upper() for _, header in columns]]
    lines += [[cell(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def key_values(record: dict[str, Any], keys: Sequence[str] | None = None) -> str:
    shown = list(keys) if keys is not None else list(record)
    width = max((len(k) for k in shown), default=0)
    return "\n".join(f"{k.ljust(width)}  {cell(record.get(k))}" for k in shown)


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False))


def duration(seconds: Any) -> str:
    """3d4h, 2h05m, 4m03s, 12s."""
    if not isinstance(seconds, int | float):
        return cell(seconds)
    s = int(seconds)
    if s >= 86400:
        return f"{s // 86400}d{s % 86400 // 3600}h"
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def timestamp(value: Any) -> str:
    """Unix seconds as local time; anything else as it is."""
    if isinstance(value, int | float) and value > 0:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
    return cell(value)
