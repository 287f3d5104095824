"""What the offline push reads: registered device tokens, push shields, group shields.

Each lookup is one query per chunk of users (the offline recipients of a
message), never one per user. Devices and push shields are directory data;
group shields live with the group's members in the messages database: the
caller asks each store for its own part (no cross-database join). A device
row with an empty token is a client that unregistered: not listed.
"""

from __future__ import annotations

from collections.abc import Sequence

from .model import DeviceToken
from .sql_base import Database, chunks, marks, valid_ids


class PushQueries:
    """The offline-push part of :class:`~db_proxy.storage.sql.SqlStore`."""

    db: Database

    async def device_tokens(self, user_ids: list[int]) -> list[DeviceToken]:
        """See :meth:`Store.device_tokens`."""
        found: list[DeviceToken] = []
        async with self.db.reading() as tx:
            for chunk in chunks(valid_ids(user_ids)):
                rows = await tx.fetchall(
                    "SELECT user_id, client_type, token FROM devices "
                    f"WHERE user_id IN ({marks(len(chunk))}) AND token <> '' ORDER BY user_id, client_type",
                    chunk,
                )
                found += (DeviceToken(int(r[0]), int(r[1]), str(r[2])) for r in rows)
        return found

    async def push_shielded(self, user_ids: list[int]) -> set[int]:
        """See :meth:`Store.push_shielded`."""
        return await self._users_among("SELECT user_id FROM push_settings WHERE shield = 1", (), user_ids)

    async def group_shielded(self, group_id: int, user_ids: list[int]) -> set[int]:
        """See :meth:`Store.group_shielded`."""
        sql = "SELECT user_id FROM group_members WHERE group_id = ? AND removed = 0 AND shield = 1"
        return await self._users_among(sql, (group_id,), user_ids)

    async def _users_among(self, sql: str, params: tuple[object, ...], user_ids: list[int]) -> set[int]:
        """The user ids ``sql`` (with ``params``) selects among ``user_ids``, a chunk at a time."""
        found: set[int] = set()
        async with self.db.reading() as tx:
            for chunk in chunks(valid_ids(user_ids)):
                rows = await tx.fetchall(f"{sql} AND user_id IN ({marks(len(chunk))})", (*params, *chunk))
                found.update(int(r[0]) for r in rows)
        return found

    async def remove_device_tokens(self, devices: Sequence[DeviceToken]) -> int:
        """See :meth:`Store.remove_device_tokens`."""
        removed = 0
        async with self.db.transaction() as tx:
            for d in devices:
                removed += await tx.execute(
                    "DELETE FROM devices WHERE user_id = ? AND client_type = ? AND token = ?",
                    (d.user_id, d.client_type, d.token),
                )
        return removed
