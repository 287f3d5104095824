"""Offline files: the list of uploaded files waiting for their receivers.

Only the list lives here; the data is on a file server, under the task key,
and the file server removes it when the gateway deletes the row (or when it
expires). A row is the file server's word that the upload is complete: the
gateway adds one only after FILE_OFFLINE_READY. Adding is idempotent on the
task key (a client may repeat IMFileAddOfflineReq); only the file's receiver
or sender may delete it. An expired row is never listed, and adding a row
removes those expired by its ``created``, so no sweeper is needed.
"""

from __future__ import annotations

import time

from . import schema
from .model import InvalidValue, OfflineFile
from .sql_base import U32_MAX, Database, Row, check_int, check_text

_COLUMNS = "from_user_id, to_user_id, task_key, receiver_task_id, file_name, file_size, created, expires_at"
_U63 = 2**63 - 1


def _record(row: Row) -> OfflineFile:
    return OfflineFile(
        from_user_id=int(row[0]),
        to_user_id=int(row[1]),
        task_key=str(row[2]),
        receiver_task_id=str(row[3]),
        file_name=str(row[4]),
        file_size=int(row[5]),
        created=int(row[6]),
        expires_at=int(row[7]),
    )


def _check_task_key(task_key: object) -> str:
    key = check_text("task key", task_key, schema.TASK_KEY_LEN)
    if len(key) != schema.TASK_KEY_LEN or key.strip("0123456789abcdef"):
        raise InvalidValue("task key must be 32 lowercase hex digits")
    return key


class FileQueries:
    """The offline-file part of :class:`~db_proxy.storage.sql.SqlStore`."""

    db: Database

    async def add_offline_file(self, file: OfflineFile) -> bool:
        """See :meth:`Store.add_offline_file`."""
        check_int("from user id", file.from_user_id, 1, U32_MAX)
        check_int("to user id", file.to_user_id, 1, U32_MAX)
        key = _check_task_key(file.task_key)
        check_text("receiver task id", file.receiver_task_id, schema.TICKET_LIMIT)
        name = check_text("file name", file.file_name, schema.OFFLINE_FILE_NAME_LIMIT)
        if not name:
            raise InvalidValue("file name is empty")
        check_int("file size", file.file_size, 1, U32_MAX)
        check_int("expires at", file.expires_at, 0, _U63)
        created = file.created or int(time.time())
        async with self.db.transaction() as tx:
            # Looked up first rather than upserted: both engines then say the
            # same thing (rows-changed counts of an upsert differ), and the
            # writer of the row inserted first stays its owner.
            found = await tx.fetchall(
                f"SELECT id FROM offline_files WHERE task_key = ?{self.db.dialect.for_update}", (key,)
            )
            if found:
                return False
            # Expired rows go as new ones come: the table stays bounded
            # without a sweeper (the file server removes their data itself).
            await tx.execute("DELETE FROM offline_files WHERE expires_at <= ?", (created,))
            await tx.execute(
                f"INSERT INTO offline_files ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    file.from_user_id,
                    file.to_user_id,
                    key,
                    file.receiver_task_id,
                    name,
                    file.file_size,
                    created,
                    file.expires_at,
                ),
            )
        return True

    async def offline_files(self, user_id: int, now: int, limit: int) -> list[OfflineFile]:
        """See :meth:`Store.offline_files`."""
        if not 0 < user_id <= U32_MAX or limit <= 0:
            return []
        async with self.db.reading() as tx:
            rows = await tx.fetchall(
                f"SELECT {_COLUMNS} FROM offline_files WHERE to_user_id = ? AND expires_at > ? "
                "ORDER BY id DESC LIMIT ?",
                (user_id, now, limit),
            )
        return [_record(row) for row in rows]

    async def delete_offline_file(self, user_id: int, task_key: str) -> OfflineFile | None:
        """See :meth:`Store.delete_offline_file`."""
        if not 0 < user_id <= U32_MAX:
            return None
        try:
            key = _check_task_key(task_key)
        except InvalidValue:
            return None
        async with self.db.transaction() as tx:
            rows = await tx.fetchall(
                f"SELECT {_COLUMNS} FROM offline_files WHERE task_key = ? "
                f"AND (to_user_id = ? OR from_user_id = ?){self.db.dialect.for_update}",
                (key, user_id, user_id),
            )
            if not rows:
                return None
            await tx.execute("DELETE FROM offline_files WHERE task_key = ?", (key,))
        return _record(rows[0])
