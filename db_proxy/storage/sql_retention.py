"""Deleting old messages (db_proxy.retention): one bounded batch a call.

SQLite has no ``DELETE ... LIMIT`` (unless built with an option), so each
batch reads the keys of the oldest rows first (along index
idx_messages_type_time, or message_dedup's idx on created), outside any
transaction, then deletes those rows by primary key in one short
transaction: only the rows deleted are locked, never a range, so message
saves (whose rows are new) are not held up. Two db_proxies running at once
may pick the same keys; the second's delete finds them gone and counts 0.
"""

from __future__ import annotations

from .sql_base import Database, Row, chunks

_MESSAGE_KEY = "(conv_id = ? AND msg_id = ?)"
_DEDUP_KEY = "(from_user_id = ? AND to_id = ? AND client_msg_id = ? AND body_hash = ?)"


class RetentionQueries:
    """The retention part of :class:`~db_proxy.storage.sql.SqlStore`."""

    db: Database

    async def delete_messages_before(self, session_type: int, before: int, limit: int) -> int:
        """See :meth:`Store.delete_messages_before`."""
        async with self.db.reading() as tx:
            keys = await tx.fetchall(
                "SELECT conv_id, msg_id FROM messages WHERE session_type = ? AND create_time < ? "
                "ORDER BY create_time LIMIT ?",
                (session_type, before, max(0, limit)),
            )
        return await self._delete_keys("messages", session_type, _MESSAGE_KEY, keys)

    async def delete_dedup_before(self, session_type: int, before: int, limit: int) -> int:
        """See :meth:`Store.delete_dedup_before`."""
        async with self.db.reading() as tx:
            keys = await tx.fetchall(
                "SELECT from_user_id, to_id, client_msg_id, body_hash FROM message_dedup "
                "WHERE session_type = ? AND created < ? ORDER BY created LIMIT ?",
                (session_type, before, max(0, limit)),
            )
        return await self._delete_keys("message_dedup", session_type, _DEDUP_KEY, keys)

    async def _delete_keys(self, table: str, session_type: int, match: str, keys: list[Row]) -> int:
        if not keys:
            return 0
        # Sorted: two runs deleting the same rows lock them in the same order.
        keys = sorted(keys)
        deleted = 0
        async with self.db.transaction() as tx:
            if self.db.dialect.name == "mysql":
                # InnoDB reads an OR of whole keys as that many point ranges: a
                # hundred rows a statement (a round trip), only those rows locked.
                for chunk in chunks(keys):
                    where = " OR ".join([match] * len(chunk))
                    deleted += await tx.execute(
                        f"DELETE FROM {table} WHERE session_type = ? AND ({where})",
                        [session_type, *(value for key in chunk for value in key)],
                    )
                return deleted
            # SQLite: an OR of keys on a WITHOUT ROWID table scans the table;
            # one point delete per key is quick in process. The changes are
            # counted by the connection (this transaction is its only user).
            before = (await tx.fetchall("SELECT total_changes()"))[0][0]
            await tx.executemany(
                f"DELETE FROM {table} WHERE session_type = ? AND {match}",
                [(session_type, *key) for key in keys],
            )
            after = (await tx.fetchall("SELECT total_changes()"))[0][0]
            return int(after) - int(before)
