"""The key file tickets are minted with (common.file_ticket).

With a cluster secret every file server derives the same key from it, so a
ticket minted by one is good at another sharing the store (an offline file
uploaded through one may be downloaded through any), and a restart changes
nothing. Without a secret (one machine, loopback) a random key is made once
and kept next to the files, mode 0600, so tickets outlive a restart too.
The first key mints; every key verifies (a secret rotation keeps the
tickets of the previous secret good).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from common.cluster_config import ClusterConfig
from common.config import ConfigError

KEY_FILE = ".ticket-key"
KEY_BYTES = 32


def store_root(store: str) -> Path | None:
    """The directory of a disk store URL; None for any other kind of store."""
    if store.startswith("file://"):
        return Path(store.removeprefix("file://"))
    return None if "://" in store else Path(store)


def ticket_keys(cluster: ClusterConfig, store: str) -> tuple[bytes, ...]:
    derived = tuple(hmac.new(s, b"file-ticket", hashlib.sha256).digest() for s in cluster.secrets())
    if derived:
        return derived
    root = store_root(store)
    if root is None:
        raise ConfigError("file_server.store: a store other than a directory needs the cluster secret")
    return (_kept_key(root / KEY_FILE),)


def _kept_key(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        key = bytes.fromhex(path.read_text().strip())
        if len(key) == KEY_BYTES:
            return key
        raise ConfigError(f"{path}: not a ticket key (delete it to make a new one)")
    except FileNotFoundError:
        pass
    except ValueError as exc:
        raise ConfigError(f"{path}: not a ticket key (delete it to make a new one)") from exc
    key = secrets.token_bytes(KEY_BYTES)
    tmp = path.with_name(f"{KEY_FILE}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key.hex())
    try:
        # Two servers starting on one store at once: the first link wins, both read it.
        os.link(tmp, path)
    except FileExistsError:
        return _kept_key(path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return key
