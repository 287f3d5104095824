"""Reading messages out for an export (db_proxy method ``messages.export``).

An export walks conversations in key order, (session_type, conv_id), and
each conversation's messages by id, so a page ends at a position
(session_type, conv_id, msg_id) the next one starts after: no offset, and a
message stored meanwhile is either in a later page or after the end. Each
query reads one conversation along the messages' primary key.
"""

from __future__ import annotations

from .model import SESSION_GROUP, ExportedMessage
from .sql_base import I64_MAX, Database

_COLUMNS = "session_type, conv_id, msg_id, from_user_id, to_id, msg_type, msg_data, create_time"


class ExportQueries:
    """The export part of :class:`~db_proxy.storage.sql.SqlStore`."""

    db: Database

    def conversation_id(self, session_type: int, a: int, b: int) -> int:
        """See :meth:`Store.conversation_id`."""
        if session_type == SESSION_GROUP:
            return b
        low, high = sorted((a, b))
        return self.db.dialect.u64(low << 32 | high)

    async def user_conversations(
        self, user_id: int, after: tuple[int, int], limit: int
    ) -> list[tuple[int, int]]:
        """See :meth:`Store.user_conversations`."""
        session_type, conv_id = after
        async with self.db.reading() as tx:
            rows = await tx.fetchall(
                "SELECT DISTINCT session_type, conv_id FROM sessions WHERE user_id = ? "
                "AND (session_type > ? OR (session_type = ? AND conv_id > ?)) "
                "ORDER BY session_type, conv_id LIMIT ?",
                (user_id, session_type, session_type, conv_id, max(0, limit)),
            )
        return [(int(row[0]), int(row[1])) for row in rows]

    async def export_messages(
        self, session_type: int, conv_id: int, after_msg_id: int, since: int, until: int, limit: int
    ) -> list[ExportedMessage]:
        """See :meth:`Store.export_messages`."""
        sql = f"SELECT {_COLUMNS} FROM messages WHERE session_type = ? AND conv_id = ? AND msg_id > ?"
        params: list[object] = [session_type, conv_id, min(max(after_msg_id, 0), I64_MAX)]
        if since > 0:
            sql += " AND create_time >= ?"
            params.append(min(since, I64_MAX))
        if until > 0:
            sql += " AND create_time < ?"
            params.append(min(until, I64_MAX))
        async with self.db.reading() as tx:
            rows = await tx.fetchall(f"{sql} ORDER BY msg_id LIMIT ?", (*params, max(0, limit)))
        return [
            ExportedMessage(
                int(st), int(conv), int(msg_id), int(sender), int(to_id), int(msg_type), bytes(data), int(at)
            )
            for st, conv, msg_id, sender, to_id, msg_type, data, at in rows
        ]
