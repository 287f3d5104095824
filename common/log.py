"""Logging set-up shared by every server.

Connection-level lines carry the peer address through :class:`PeerLogger`,
so a bad frame in the log names who sent it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any


def setup_logging(node: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {node} %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class PeerLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every line with the peer, e.g. ``[127.0.0.1:53122 user 7]``."""

    def __init__(self, logger: logging.Logger, peer: str) -> None:
        super().__init__(logger, {"peer": peer})
        self.peer = peer

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
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
