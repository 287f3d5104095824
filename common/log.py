"""Logging set-up shared by every server.

Connection-level lines carry the peer address through :class:`PeerLogger`,
so a bad frame in the log names who sent it.

The ``[log]`` table (:class:`LogConfig`, shared by every server) picks the
format, ``text`` (one line per record, as read by people) or ``json`` (one
object per line: ``ts``, ``level``, ``node``, ``logger``, ``msg``, ``peer``
on connection lines, ``exc`` with the traceback, for a log shipper), and
where lines go: stderr, or a file rotated by size. Each process needs a
file of its own (``{node}`` in ``file`` is replaced by the node id):
two processes rotating one file would lose lines.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
import threading
from collections.abc import MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from common.config import setting

FORMATS = ("text", "json")


@dataclass(frozen=True)
class LogConfig:
    """Where and how every server logs (its level is the server's own ``log_level``)."""

    format: str = setting("text", "Log line format: text (for people) or json (one JSON object per line).")
    file: str = setting(
        "",
        "Log file ('' = stderr); {node} becomes the node id. Rotated at max_bytes; one file per process.",
    )
    max_bytes: int = setting(10 * 1024 * 1024, "Rotate the log file when it would pass this size (0: never).")
    backups: int = setting(5, "Rotated files kept (FILE.1 ... FILE.N, oldest dropped).")

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"log.format: expected one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.max_bytes < 0:
            raise ValueError(f"log.max_bytes: must be >= 0, got {self.max_bytes}")
        if self.backups < 0:
            raise ValueError(f"log.backups: must be >= 0, got {self.backups}")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in a message or traceback are escaped)."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        peer = getattr(record, "peer", None)
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
            "level": record.levelname,
            "node": self.node,
            "logger": record.name,
            # PeerLogger prefixes the text form; here the peer has a key of its own.
            "msg": message.removeprefix(f"[{peer}] ") if peer is not None else message,
        }
        if peer is not None:
            line["peer"] = peer
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def text_formatter(node: str) -> logging.Formatter:
    return logging.Formatter(f"%(asctime)s %(levelname)s {node} %(name)s: %(message)s")


def make_handler(node: str, config: LogConfig) -> logging.Handler:
    handler: logging.Handler
    if config.file:
        path = Path(config.file.replace("{node}", node))
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=config.max_bytes, backupCount=config.backups, encoding="utf-8"
        )
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(node) if config.format == "json" else text_formatter(node))
    return handler


def setup_logging(node: str, level: str = "INFO", config: LogConfig | None = None) -> None:
    root = logging.getLogger()
    for old in root.handlers:
        old.close()
    root.handlers[:] = [make_handler(node, config or LogConfig())]
    root.setLevel(level.upper())
    logging.captureWarnings(True)
    # A crash outside the event loop's handlers goes to the log too (in its
    # format, to its file), not only to a stderr nobody keeps.
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_thread_uncaught


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    logging.getLogger("crash").critical("uncaught exception; exiting", exc_info=(kind, exc, tb))


def _log_thread_uncaught(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None:
        return
    logging.getLogger("crash").critical(
        "uncaught exception in thread %s",
        args.thread.name if args.thread else "?",
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )


class PeerLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every line with the peer, e.g. ``[127.0.0.1:53122 user 7]``
    (in JSON, the peer is a key of its own)."""

    def __init__(self, logger: logging.Logger, peer: str) -> None:
        super().__init__(logger, {"peer": peer})
        self.peer = peer

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**kwargs.get("extra", {}), "peer": self.peer}
        return f"[{self.peer}] {msg}", kwargs


def format_peer(peername: Any) -> str:
    if isinstance(peername, tuple) and len(peername) >= 2:
        host, port = peername[0], peername[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(peername or "?")


def address_of(peer: str) -> str:
    """The address part of a peer as :func:`format_peer` writes it (``host:port``, ``[v6]:port``),
    or a bare host as it is: what limits and counters per source address key on."""
    if peer.startswith("["):
        return peer[1:].partition("]")[0]
    return peer.rpartition(":")[0] if peer.count(":") == 1 else peer
