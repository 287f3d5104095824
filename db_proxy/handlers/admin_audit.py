"""Admin methods of the audit trail, message export and retention
(docs/admin-api.md): ``audit.record``, ``audit.list``, ``messages.export``,
``retention.run``, ``retention.policy``.

``audit.record`` is called by login_server after every admin change
(login_server/admin/audit.py) and must not lose an entry over a long value:
texts are cut to their columns (schema.AUDIT_TEXT_LIMITS) and a detail
whose JSON is too long is kept as a cut string. Entries live in the
directory database (this db_proxy serves the admin role).
"""

from __future__ import annotations

import json
import time
from typing import Any

from common.admin import AdminMethod
from common.errors import InvalidArgument
from db_proxy.config import DbProxyConfig
from db_proxy.handlers import admin_args as a
from db_proxy.handlers.admin_export import MessageExport
from db_proxy.retention import Policy, Retention
from db_proxy.services.registry import Services
from db_proxy.storage import schema
from db_proxy.storage.model import AuditRecord
from db_proxy.storage.sql_base import I32

LIST_MAX = 500
LIST_DEFAULT = 100
RUN_SECONDS = 50.0  # an admin's retention run: the API waits 60 s; the rest is for the next run
_MS_MAX = 2**62
_ID_MAX = 2**62


def bounded_text(value: object, key: str) -> str:
    """A text field cut to its column; not text: InvalidArgument."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(f"{key} must be a string")
    # A lone surrogate cannot be stored by either engine: replaced, not refused.
    clean = value.encode("utf-8", "replace").decode("utf-8")
    return clean[: schema.AUDIT_TEXT_LIMITS[key]]


def bounded_detail(value: object) -> str:
    """``detail`` as JSON of at most AUDIT_DETAIL_LIMIT characters: as it is if it
    fits, else ``{"truncated": "<the start of its JSON>"}``."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise InvalidArgument("detail must be an object")
    limit = schema.AUDIT_DETAIL_LIMIT
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    text = text.encode("utf-8", "replace").decode("utf-8")
    if len(text) <= limit:
        return text
    keep = limit - 20
    for _ in range(8):  # each pass cuts at least the excess: a few passes at most
        cut = json.dumps({"truncated": text[:keep]}, ensure_ascii=False, separators=(",", ":"))
        if len(cut) <= limit:
            return cut
        keep -= len(cut) - limit
    return '{"truncated":""}'


def entry_json(record: AuditRecord) -> dict[str, Any]:
    try:
        detail = json.loads(record.detail)
    except ValueError:
        detail = {"raw": record.detail}
    return {
        "id": record.id,
        "at_ms": record.at_ms,
        "who": record.who,
        "via": record.via,
        "remote": record.remote,
        "action": record.action,
        "target": record.target,
        "status": record.status,
        "detail": detail,
    }


class AuditAdmin:
    def __init__(self, config: DbProxyConfig, services: Services) -> None:
        self.config = config
        self.directory = services.directory
        self.export = MessageExport(services.directory, services.store)
        self.retention = Retention(Policy.of(config), services.directory, services.store)

    def methods(self) -> dict[str, AdminMethod]:
        return {
            "audit.record": self.record,
            "audit.list": self.list,
            "messages.export": self.export.export,
            "retention.run": self.run_retention,
            "retention.policy": self.policy,
        }

    async def record(self, args: dict[str, Any]) -> dict[str, Any]:
        keys = {"at_ms", "who", "via", "remote", "action", "target", "status", "detail"}
        a.check_keys(args, keys, "audit.record")
        at_ms = a.optional_int(args, "at_ms", 0, 0, _MS_MAX) or int(time.time() * 1000)
        status = a.optional_int(args, "status", 0, *I32)
        texts = {
            key: bounded_text(args.get(key), key) for key in ("who", "via", "remote", "action", "target")
        }
        if not texts["action"]:
            raise InvalidArgument("action is required")
        record = AuditRecord(0, at_ms, status=status, detail=bounded_detail(args.get("detail")), **texts)
        return {"id": await self.directory.add_audit(record)}

    async def list(self, args: dict[str, Any]) -> dict[str, Any]:
        a.check_keys(args, {"limit", "before_id", "who", "action", "since_ms", "until_ms"}, "audit.list")
        limit = min(a.optional_int(args, "limit", LIST_DEFAULT, 1, 2**62), LIST_MAX)
        before_id = a.optional_int(args, "before_id", 0, 0, _ID_MAX)
        who = a.text(args.get("who", ""), "who", schema.AUDIT_TEXT_LIMITS["who"])
        action = a.text(args.get("action", ""), "action", schema.AUDIT_TEXT_LIMITS["action"])
        since_ms = a.optional_int(args, "since_ms", 0, 0, _MS_MAX)
        until_ms = a.optional_int(args, "until_ms", 0, 0, _MS_MAX)
        # One more than asked for: whether there is a next page.
        records = await self.directory.audit_entries(limit + 1, before_id, who, action, since_ms, until_ms)
        page = records[:limit]
        more = len(records) > limit
        return {"entries": [entry_json(r) for r in page], "next_before_id": page[-1].id if more else None}

    async def run_retention(self, args: dict[str, Any]) -> dict[str, Any]:
        a.check_keys(args, set(), "retention.run")
        plan = await self.retention.run(deadline=time.monotonic() + RUN_SECONDS)
        return {"deleted": plan.deleted, "batches": plan.batches, "more": plan.more}

    async def policy(self, args: dict[str, Any]) -> dict[str, Any]:
        a.check_keys(args, set(), "retention.policy")
        return {"node_id": self.config.node_id, "policy": self.retention.policy.as_json()}


def audit_methods(config: DbProxyConfig, services: Services) -> dict[str, AdminMethod]:
    """The methods of this module, for DbAdmin.methods."""
    return AuditAdmin(config, services).methods()
