"""The audit trail of admin actions: who did what, when, from where.

Every change made through the admin API or the web console is recorded
once, by :meth:`AuditTrail.record`, after it is answered: the entry names
the operator (``who``), the way in (``via``: ``api`` or ``console``), the
peer address, the action (``"POST /admin/v1/users"`` or a console action
name), its target, the HTTP status it got and a few details (secrets
removed). Entries are stored by db_proxy (the directory database, table
``admin_audit``, admin methods ``audit.record`` and ``audit.list``) and
listed by ``GET /admin/v1/audit``, ``imctl audit`` and the console.

Recording never fails the action it records (that is done already): a
lost entry is logged at WARNING, with the entry, and counted in
``imcluster_admin_audit_failures_total``.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from prometheus_client import Counter

from common.errors import ImError
from login_server.admin.backends import DB_PROXY, Backends

log = logging.getLogger("login_server.audit")

AUDIT_FAILURES = Counter(
    "imcluster_admin_audit_failures", "Admin actions whose audit entry could not be stored."
)
AUDIT_RECORDED = Counter("imcluster_admin_audit_recorded", "Admin actions recorded in the audit trail.")

OPERATOR_HEADER = "X-Imcluster-Operator"  # who the API caller says it is (imctl sends user@host)
SECRET_KEYS = frozenset({"password", "token", "admin_token", "secret", "bind_password"})
REDACTED = "(redacted)"
_OPERATOR_OK = re.compile(r"[^A-Za-z0-9_.@+-]")
WHO_LIMIT = 64
RECORD_TIMEOUT = 3.0


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: the operator's name (as claimed: the token is the credential),
    the way in, and the peer address."""

    who: str
    via: str  # "api" or "console"
    remote: str


def operator_name(claimed: str | None, default: str = "api") -> str:
    """A claimed operator name made safe to store and show: at most 64 of
    ``[A-Za-z0-9_.@+-]``, others replaced by ``_``; empty: ``default``."""
    name = _OPERATOR_OK.sub("_", (claimed or "").strip())[:WHO_LIMIT]
    return name or default


def redact(detail: Any) -> Any:
    """``detail`` with the value of every secret-named key replaced (nested too)."""
    if isinstance(detail, dict):
        return {k: REDACTED if k in SECRET_KEYS else redact(v) for k, v in detail.items()}
    if isinstance(detail, list):
        return [redact(v) for v in detail]
    return detail


@dataclass(frozen=True, slots=True)
class AuditEntry:
    actor: Actor
    action: str
    target: str = ""
    status: int = 200
    detail: dict[str, Any] = field(default_factory=dict)
    at: float = 0.0  # epoch seconds; 0: now

    def args(self) -> dict[str, Any]:
        """The ``audit.record`` arguments."""
        return {
            "at_ms": int((self.at or time.time()) * 1000),
            **asdict(self.actor),
            "action": self.action,
            "target": self.target,
            "status": self.status,
            "detail": redact(self.detail),
        }


class AuditTrail:
    def __init__(self, backends: Backends) -> None:
        self.backends = backends

    async def record(self, entry: AuditEntry) -> None:
        """Store ``entry``; never raises (see the module's docstring)."""
        args = entry.args()
        log.info(
            "admin %s by %s via %s from %s on %s: %d",
            entry.action,
            entry.actor.who,
            entry.actor.via,
            entry.actor.remote,
            entry.target or "-",
            entry.status,
        )
        try:
            await self.backends.call(DB_PROXY, "audit.record", args, RECORD_TIMEOUT)
        except ImError as exc:
            AUDIT_FAILURES.inc()
            log.warning("audit entry not stored (%s): %s", exc, args)
            return
        AUDIT_RECORDED.inc()

    async def entries(self, args: dict[str, Any]) -> dict[str, Any]:
        """``audit.list``: ``{"entries": [...], "next_before_id": id or None}``."""
        return await self.backends.call(DB_PROXY, "audit.list", args)
