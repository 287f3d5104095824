"""The audit trail of admin actions (table ``admin_audit``, migration 6).

Entries are appended, listed newest first by id (ids only grow: a page's
``before_id`` is the last id it showed), and pruned by age in bounded
batches (:mod:`db_proxy.retention`). Values arrive bounded by
:mod:`db_proxy.handlers.admin_audit`; they are checked again here so that
both engines refuse the same (MySQL's strict mode would, SQLite would store).
"""

from __future__ import annotations

from . import schema
from .model import AuditRecord
from .sql_base import I32, Database, Row, check_int, check_text, marks

_COLUMNS = "id, at_ms, who, via, remote, action, target, status, detail"
_I62 = 2**62
# LIKE's escape character: "!" rather than backslash, which MySQL's string
# literals would take as their own escape.
_LIKE_ESCAPE = "!"


def like_prefix(prefix: str) -> str:
    """A LIKE pattern matching the strings that start with ``prefix``."""
    escaped = "".join(_LIKE_ESCAPE + c if c in "%_" + _LIKE_ESCAPE else c for c in prefix)
    return escaped + "%"


def _record(row: Row) -> AuditRecord:
    return AuditRecord(
        id=int(row[0]),
        at_ms=int(row[1]),
        who=str(row[2]),
        via=str(row[3]),
        remote=str(row[4]),
        action=str(row[5]),
        target=str(row[6]),
        status=int(row[7]),
        detail=str(row[8]),
    )


class AuditQueries:
    """The audit part of :class:`~db_proxy.storage.sql.SqlStore`."""

    db: Database

    async def add_audit(self, record: AuditRecord) -> int:
        """See :meth:`Store.add_audit`."""
        limits = schema.AUDIT_TEXT_LIMITS
        values = (
            check_int("at_ms", record.at_ms, 0, _I62),
            *(
                check_text(key, getattr(record, key), limits[key])
                for key in ("who", "via", "remote", "action", "target")
            ),
            check_int("status", record.status, *I32),
            check_text("detail", record.detail, schema.AUDIT_DETAIL_LIMIT),
        )
        async with self.db.transaction() as tx:
            return await tx.insert(
                "INSERT INTO admin_audit (at_ms, who, via, remote, action, target, status, detail) "
                f"VALUES ({marks(len(values))})",
                values,
            )

    async def audit_entries(
        self,
        limit: int,
        before_id: int = 0,
        who: str = "",
        action_prefix: str = "",
        since_ms: int = 0,
        until_ms: int = 0,
    ) -> list[AuditRecord]:
        """See :meth:`Store.audit_entries`."""
        where: list[str] = []
        params: list[object] = []
        if before_id > 0:
            where.append("id < ?")
            params.append(min(before_id, _I62))
        if who:
            where.append("who = ?")
            params.append(who)
        if action_prefix:
            where.append(f"action LIKE ? ESCAPE '{_LIKE_ESCAPE}'")
            params.append(like_prefix(action_prefix))
        if since_ms > 0:
            where.append("at_ms >= ?")
            params.append(min(since_ms, _I62))
        if until_ms > 0:
            where.append("at_ms < ?")
            params.append(min(until_ms, _I62))
        sql = f"SELECT {_COLUMNS} FROM admin_audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        async with self.db.reading() as tx:
            rows = await tx.fetchall(f"{sql} ORDER BY id DESC LIMIT ?", (*params, max(0, limit)))
        return [_record(row) for row in rows]

    async def delete_audit_before(self, before_ms: int, limit: int) -> int:
        """See :meth:`Store.delete_audit_before`: the ids first (SQLite has no
        DELETE ... LIMIT), then those rows, by key."""
        async with self.db.reading() as tx:
            rows = await tx.fetchall(
                "SELECT id FROM admin_audit WHERE at_ms < ? ORDER BY at_ms LIMIT ?", (before_ms, limit)
            )
        ids = [int(row[0]) for row in rows]
        deleted = 0
        if ids:
            async with self.db.transaction() as tx:
                for start in range(0, len(ids), 500):
                    chunk = ids[start : start + 500]
                    deleted += await tx.execute(
                        f"DELETE FROM admin_audit WHERE id IN ({marks(len(chunk))})", chunk
                    )
        return deleted
