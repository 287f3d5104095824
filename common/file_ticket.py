"""Per-user file-transfer tickets: the task ids the gateway hands out.

TeamTalk's file server trusts the ``user_id`` in ``IMFileLoginReq``, so
anyone who learns a task id can join the task as its receiver and download
the file. The message has no credential field, so the credential is the
task id itself: each participant gets its own, ``<task key>-<mac>``, where
the task key (32 hex digits) names the task and the mac binds it to that
user and role with a key only the file server holds. A ticket is useless to
anyone but the user it was made for, in the role it was made for, and a
file server can check one after a restart (offline files outlive it).

Pure functions on bytes; no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_HEX = 32  # the task key: 128 random bits
MAC_HEX = 24  # 96 bits of HMAC-SHA256
TICKET_LEN = KEY_HEX + 1 + MAC_HEX

# The roles a ticket may be for (imcluster.base.ClientFileRole values).
SENDER = 1
RECEIVER = 2
UPLOAD = 3
DOWNLOAD = 4


def new_task_key() -> str:
    return secrets.token_hex(KEY_HEX // 2)


def _mac(secret: bytes, task_key: str, user_id: int, role: int) -> str:
    msg = f"imcluster-file-ticket|{task_key}|{user_id}|{role}".encode()
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()[:MAC_HEX]


def mint(secret: bytes, task_key: str, user_id: int, role: int) -> str:
    """The ticket of ``user_id`` in ``role`` for the task ``task_key``."""
    return f"{task_key}-{_mac(secret, task_key, user_id, role)}"


def task_key_of(ticket: str) -> str | None:
    """The task a ticket names, or None if it is not shaped like one (not a proof of anything)."""
    if len(ticket) != TICKET_LEN or ticket[KEY_HEX] != "-":
        return None
    key = ticket[:KEY_HEX]
    try:
        int(key, 16)
        int(ticket[KEY_HEX + 1 :], 16)
    except ValueError:
        return None
    return key.lower() if key == key.lower() else None


def verify(secret: bytes, ticket: str, user_id: int, role: int) -> str | None:
    """The task key if ``ticket`` was minted for ``user_id`` in ``role``; None otherwise."""
    key = task_key_of(ticket)
    if key is None:
        return None
    if not hmac.compare_digest(ticket, mint(secret, key, user_id, role)):
        return None
    return key
