"""The SQL store: every business query, written once for both engines.

An engine adapter (:mod:`.sqlite`, :mod:`.mysql`) supplies a :class:`Database`:
transactions, a :class:`Dialect` for the few spellings that differ, and the
translation of its driver's errors into :class:`StoreError`. SQL here uses
``?`` placeholders; the MySQL adapter rewrites them to ``%s``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from . import schema
from .model import (
    SESSION_GROUP,
    SESSION_SINGLE,
    DuplicateName,
    NewMessage,
    SavedMessage,
    StoredMessage,
    StoreError,
    UnreadSession,
    User,
)

U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1
I64_MAX = 2**63 - 1  # the largest msg id both engines can compare against
_CHUNK = 100  # rows per IN/OR lookup: far below SQLite's bound-variable limit
_ATTEMPTS = 3  # tries of a message batch that lost a race to another transaction

T = TypeVar("T")
Row = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Dialect:
    """The spellings that differ between engines; everything else is shared."""

    name: str
    autoinc_pk: str  # column type of an auto-increment primary key
    blob: str  # a column holding a message body
    table_options: str  # appended to CREATE TABLE
    clustered_options: str  # appended to CREATE TABLE of a table with a composite key
    upsert_clause: str  # "INSERT ... VALUES (...) <this> col = expr"; {keys} is the key
    new_value: str  # the value an upsert tried to insert into {column}
    signed_u64: bool  # integers are signed 64-bit (SQLite)

    def upsert(self, keys: str) -> str:
        return self.upsert_clause.format(keys=keys)

    def new(self, column: str) -> str:
        return self.new_value.format(column=column)

    def u64(self, value: int) -> int:
        """An unsigned 64-bit key in the form the engine stores.

        SQLite's INTEGER is signed, so the upper half is stored as its two's
        complement; keys are only ever compared for equality, which survives.
        """
        if self.signed_u64 and value > I64_MAX:
            return value - 2**64
        return value


class Tx(Protocol):
    """Statements inside one transaction (or one read) of an engine."""

    async def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        """Run a statement; returns the number of rows it changed."""
        ...

    async def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None: ...
    async def fetchall(self, sql: str, params: Sequence[object] = ()) -> list[Row]: ...
    async def insert(self, sql: str, params: Sequence[object]) -> int:
        """Run an INSERT; returns the auto-increment id it assigned."""
        ...


class Database(Protocol):
    """What an engine adapter provides. Driver errors leave it as StoreError."""

    engine: str
    dialect: Dialect

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    def transaction(self) -> AbstractAsyncContextManager[Tx]:
        """A write transaction: committed when the block ends, rolled back on error."""
        ...

    def reading(self) -> AbstractAsyncContextManager[Tx]:
        """Reads of committed data only; never sees another transaction half-done."""
        ...


class UniqueViolation(StoreError):
    """An insert hit an existing unique key."""


class TransientError(StoreError):
    """The engine gave up on a transaction (deadlock); running it again may succeed."""


@dataclass(slots=True)
class _Pending:
    """A message of a batch on its way into the store."""

    msg: NewMessage
    conv: tuple[int, int]  # (session_type, conv_id as stored)
    dedup: Row | None  # the message_dedup key, None for client_msg_id 0
    msg_id: int = 0


_USER_FIELDS = tuple(f.name for f in dataclasses.fields(User))
_USER_COLUMNS = ", ".join(_USER_FIELDS)
# Integer profile fields and their column's range (MySQL rejects values
# outside it, SQLite would store them).
_PROFILE_INTS = {
    "gender": (-(2**31), 2**31 - 1),
    "department_id": (0, U32_MAX),
    "status": (-(2**31), 2**31 - 1),
}
_PROFILE_TEXTS = frozenset(schema.USER_TEXT_LIMITS) - {"name", "password_hash"}
_MSG_COLUMNS = "msg_id, from_user_id, create_time, msg_type, msg_data"
_DEDUP_MATCH = "(from_user_id = ? AND session_type = ? AND to_id = ? AND client_msg_id = ? AND body_hash = ?)"
_CONV_MATCH = "(session_type = ? AND conv_id = ?)"


class SqlStore:
    """The :class:`~db_proxy.storage.model.Store` over any :class:`Database`.

    Usable as ``async with open_store(url) as store:`` (opens and closes).
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self.engine = db.engine
        d = db.dialect
        self._u64 = d.u64
        # Adds n to the counter (creating it at n) in one statement, so
        # concurrent allocators queue on the row lock instead of racing.
        self._sql_allocate = (
            "INSERT INTO conversations (session_type, conv_id, last_msg_id) VALUES (?, ?, ?) "
            f"{d.upsert('session_type, conv_id')} "
            f"last_msg_id = last_msg_id + {d.new('last_msg_id')}"
        )
        self._sql_touch_session = (
            "INSERT INTO sessions (user_id, session_type, peer_id, conv_id, updated, "
            "latest_msg_id, unread_cnt, removed) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            f"{d.upsert('user_id, session_type, peer_id')} "
            f"updated = {d.new('updated')}, latest_msg_id = {d.new('latest_msg_id')}, "
            f"unread_cnt = unread_cnt + {d.new('unread_cnt')}, removed = 0"
        )

    async def __aenter__(self) -> SqlStore:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    async def migrate(self) -> int:
        return await schema.migrate(self.db)

    async def ping(self) -> bool:
        try:
            async with self.db.reading() as tx:
                await tx.fetchall("SELECT 1")
        except StoreError:
            return False
        return True

    # users

    async def create_user(self, name: str, password_hash: str, **profile: object) -> int:
        values = {"name": name, "password_hash": password_hash, **_profile_values(profile)}
        if not name:
            raise StoreError("a user name must not be empty")
        for column, limit in schema.USER_TEXT_LIMITS.items():
            text = values.get(column, "")
            if not isinstance(text, str):
                raise TypeError(f"user {column} must be a str, not {type(text).__name__}")
            if len(text) > limit:
                raise StoreError(f"user {column} is longer than {limit} characters")
        values["created"] = values["updated"] = int(time.time())
        # Column names come from the fixed lists above, never from the caller.
        sql = f"INSERT INTO users ({', '.join(values)}) VALUES ({_marks(len(values))})"
        try:
            async with self.db.transaction() as tx:
                return await tx.insert(sql, list(values.values()))
        except UniqueViolation as exc:
            raise DuplicateName(f"a user named {name!r} exists") from exc

    async def user_by_name(self, name: str) -> User | None:
        async with self.db.reading() as tx:
            rows = await tx.fetchall(f"SELECT {_USER_COLUMNS} FROM users WHERE name = ?", (name,))
        return _user(rows[0]) if rows else None

    async def users_by_id(self, user_ids: list[int]) -> list[User]:
        """The users that exist among ``user_ids``, each once, in ascending id order."""
        ids = sorted({i for i in user_ids if 0 < i <= U32_MAX})
        users: list[User] = []
        async with self.db.reading() as tx:
            for chunk in _chunks(ids):
                rows = await tx.fetchall(
                    f"SELECT {_USER_COLUMNS} FROM users WHERE id IN ({_marks(len(chunk))}) ORDER BY id",
                    chunk,
                )
                users += map(_user, rows)
        return users

    # messages: writing

    async def save_messages(self, batch: list[NewMessage]) -> list[SavedMessage]:
        pending = [self._pending(m) for m in batch]
        if not pending:
            return []
        attempt = 1
        while True:
            try:
                async with self.db.transaction() as tx:
                    return await self._save(tx, pending)
            except (UniqueViolation, TransientError):
                # A concurrent identical send committed first (its dedup row
                # now exists) or the engine broke a deadlock: the batch was
                # rolled back whole, so running it again is safe.
                if attempt >= _ATTEMPTS:
                    raise
                attempt += 1

    def _pending(self, m: NewMessage) -> _Pending:
        conv_id = self._conv_id(m.from_user_id, m.session_type, m.to_id)
        if not isinstance(m.msg_data, bytes):
            raise StoreError(f"msg_data must be bytes, not {type(m.msg_data).__name__}")
        if not 0 <= m.msg_type <= U32_MAX or not 0 <= m.client_msg_id <= U64_MAX:
            raise StoreError("msg_type or client_msg_id out of range")
        dedup: Row | None = None
        if m.client_msg_id:
            body_hash = int.from_bytes(hashlib.sha256(m.msg_data).digest()[:8], "big")
            dedup = (
                m.from_user_id,
                m.session_type,
                m.to_id,
                self._u64(m.client_msg_id),
                self._u64(body_hash),
            )
        return _Pending(m, (m.session_type, conv_id), dedup)

    async def _save(self, tx: Tx, batch: list[_Pending]) -> list[SavedMessage]:
        stored = await self._find_duplicates(tx, [p.dedup for p in batch if p.dedup])
        first: dict[Row, _Pending] = {}  # the batch's own first send of each dedup key
        fresh: list[_Pending] = []
        for p in batch:
            if p.dedup is None or (p.dedup not in stored and p.dedup not in first):
                fresh.append(p)
                if p.dedup is not None:
                    first[p.dedup] = p
        if fresh:
            await self._allocate(tx, fresh)
            await tx.executemany(
                "INSERT INTO messages (session_type, conv_id, msg_id, from_user_id, to_id, "
                "msg_type, msg_data, create_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        *p.conv,
                        p.msg_id,
                        p.msg.from_user_id,
                        p.msg.to_id,
                        p.msg.msg_type,
                        p.msg.msg_data,
                        p.msg.create_time,
                    )
                    for p in fresh
                ],
            )
            dedup_rows = [(*p.dedup, p.msg_id, p.msg.create_time) for p in fresh if p.dedup]
            if dedup_rows:
                await tx.executemany(
                    "INSERT INTO message_dedup (from_user_id, session_type, to_id, "
                    "client_msg_id, body_hash, msg_id, created) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    dedup_rows,
                )
            await tx.executemany(self._sql_touch_session, _session_rows(fresh))
        results: list[SavedMessage] = []
        for p in batch:
            if p.dedup is not None and p.dedup in stored:
                msg_id, created = stored[p.dedup]
                results.append(SavedMessage(msg_id, created, duplicate=True))
            elif p.dedup is not None and first[p.dedup] is not p:
                original = first[p.dedup]
                results.append(SavedMessage(original.msg_id, original.msg.create_time, True))
            else:
                results.append(SavedMessage(p.msg_id, p.msg.create_time, duplicate=False))
        return results

    async def _find_duplicates(self, tx: Tx, keys: list[Row]) -> dict[Row, tuple[int, int]]:
        """msg_id and create_time of the already stored sends among ``keys``."""
        found: dict[Row, tuple[int, int]] = {}
        for chunk in _chunks(sorted(set(keys))):
            rows = await tx.fetchall(
                "SELECT from_user_id, session_type, to_id, client_msg_id, body_hash, msg_id, "
                f"created FROM message_dedup WHERE {' OR '.join([_DEDUP_MATCH] * len(chunk))}",
                [value for key in chunk for value in key],
            )
            for row in rows:
                found[tuple(row[:5])] = (row[5], row[6])
        return found

    async def _allocate(self, tx: Tx, fresh: list[_Pending]) -> None:
        """Give each message the next ids of its conversation, in batch order."""
        counts = Counter(p.conv for p in fresh)
        # Sorted, so two batches lock the counters they share in the same order.
        convs = sorted(counts)
        await tx.executemany(self._sql_allocate, [(*c, counts[c]) for c in convs])
        next_id: dict[tuple[int, int], int] = {}
        for chunk in _chunks(convs):
            rows = await tx.fetchall(
                "SELECT session_type, conv_id, last_msg_id FROM conversations "
                f"WHERE {' OR '.join([_CONV_MATCH] * len(chunk))}",
                [value for conv in chunk for value in conv],
            )
            for session_type, conv_id, last in rows:
                conv = (session_type, conv_id)
                next_id[conv] = last - counts[conv] + 1
        for p in fresh:
            p.msg_id = next_id[p.conv]
            next_id[p.conv] += 1

    # messages: reading

    async def message_list(
        self, user_id: int, session_type: int, peer_id: int, msg_id_begin: int, count: int
    ) -> list[StoredMessage]:
        conv_id = self._conv_id(user_id, session_type, peer_id)
        if count <= 0:
            return []
        begin = min(msg_id_begin, I64_MAX) if msg_id_begin > 0 else I64_MAX
        async with self.db.reading() as tx:
            rows = await tx.fetchall(
                f"SELECT {_MSG_COLUMNS} FROM messages WHERE session_type = ? AND conv_id = ? "
                "AND msg_id <= ? ORDER BY msg_id DESC LIMIT ?",
                (session_type, conv_id, begin, count),
            )
        return [_stored(row) for row in rows]

    async def messages_by_id(
        self, user_id: int, session_type: int, peer_id: int, msg_ids: list[int]
    ) -> list[StoredMessage]:
        """The stored messages among ``msg_ids``, each once, in ascending id order."""
        conv_id = self._conv_id(user_id, session_type, peer_id)
        ids = sorted({i for i in msg_ids if 0 < i <= I64_MAX})
        messages: list[StoredMessage] = []
        async with self.db.reading() as tx:
            for chunk in _chunks(ids):
                rows = await tx.fetchall(
                    f"SELECT {_MSG_COLUMNS} FROM messages WHERE session_type = ? "
                    f"AND conv_id = ? AND msg_id IN ({_marks(len(chunk))}) ORDER BY msg_id",
                    (session_type, conv_id, *chunk),
                )
                messages += map(_stored, rows)
        return messages

    async def latest_msg_id(self, user_id: int, session_type: int, peer_id: int) -> int:
        conv_id = self._conv_id(user_id, session_type, peer_id)
        async with self.db.reading() as tx:
            rows = await tx.fetchall(
                "SELECT last_msg_id FROM conversations WHERE session_type = ? AND conv_id = ?",
                (session_type, conv_id),
            )
        return int(rows[0][0]) if rows else 0

    async def unread_sessions(self, user_id: int) -> list[UnreadSession]:
        """Sessions with unread messages, the most recently active first."""
        async with self.db.reading() as tx:
            rows = await tx.fetchall(
                "SELECT s.session_type, s.peer_id, s.unread_cnt, s.latest_msg_id, m.msg_type, "
                "m.msg_data, m.from_user_id FROM sessions s LEFT JOIN messages m "
                "ON m.session_type = s.session_type AND m.conv_id = s.conv_id "
                "AND m.msg_id = s.latest_msg_id "
                "WHERE s.user_id = ? AND s.unread_cnt > 0 "
                "ORDER BY s.updated DESC, s.session_type, s.peer_id",
                (user_id,),
            )
        return [
            UnreadSession(
                session_type,
                peer_id,
                unread,
                latest,
                msg_type or 0,
                bytes(data or b""),
                from_user_id or 0,
            )
            for session_type, peer_id, unread, latest, msg_type, data, from_user_id in rows
        ]

    async def mark_read(self, user_id: int, session_type: int, peer_id: int, msg_id: int) -> None:
        # Clears the whole count, as TeamTalk does; msg_id is not consulted.
        # Only an existing session row changes: reading never creates one.
        async with self.db.transaction() as tx:
            await tx.execute(
                "UPDATE sessions SET unread_cnt = 0 WHERE user_id = ? AND session_type = ? "
                "AND peer_id = ? AND unread_cnt > 0",
                (user_id, session_type, peer_id),
            )

    def _conv_id(self, user_id: int, session_type: int, peer_id: int) -> int:
        """The conversation id, as stored, of a session seen from ``user_id``.

        A 1:1 conversation is the unordered user pair, so both directions
        share one id space; the user is one side of it by construction.
        """
        if session_type == SESSION_GROUP:
            raise StoreError("group messages are not supported yet")
        if session_type != SESSION_SINGLE:
            raise StoreError(f"unknown session type {session_type}")
        if not (0 < user_id <= U32_MAX and 0 < peer_id <= U32_MAX):
            raise StoreError(f"user id out of range in ({user_id}, {peer_id})")
        low, high = sorted((user_id, peer_id))
        return self._u64(low << 32 | high)


def _session_rows(fresh: list[_Pending]) -> list[Row]:
    """One upsert row per touched session: both sides of each 1:1 message.

    Rows are merged per session within the batch (last message wins, unread
    increments add up); a message to oneself counts as already read.
    """
    merged: dict[tuple[int, int, int], list[int]] = {}
    for p in fresh:
        m = p.msg
        sides = [(m.from_user_id, m.to_id, 0)]
        if m.to_id != m.from_user_id:
            sides.append((m.to_id, m.from_user_id, 1))
        for user_id, peer_id, unread in sides:
            key = (user_id, m.session_type, peer_id)
            row = merged.get(key)
            if row is None:
                merged[key] = [p.conv[1], m.create_time, p.msg_id, unread]
            else:
                row[1], row[2], row[3] = m.create_time, p.msg_id, row[3] + unread
    return [(*key, *values, 0) for key, values in sorted(merged.items())]


def _profile_values(profile: dict[str, object]) -> dict[str, object]:
    values: dict[str, object] = {}
    for key, value in profile.items():
        if key in _PROFILE_TEXTS:
            values[key] = value  # type and length are checked with the name
        elif key in _PROFILE_INTS:
            if type(value) is not int:
                raise TypeError(f"user {key} must be an int, not {type(value).__name__}")
            low, high = _PROFILE_INTS[key]
            if not low <= value <= high:
                raise StoreError(f"user {key} {value} is out of range")
            values[key] = value
        elif key == "disabled":
            if not isinstance(value, bool):
                raise TypeError(f"user disabled must be a bool, not {type(value).__name__}")
            values[key] = int(value)
        else:
            raise TypeError(f"unknown user profile field {key!r}")
    return values


def _user(row: Row) -> User:
    fields = dict(zip(_USER_FIELDS, row, strict=True))
    fields["disabled"] = bool(fields["disabled"])
    return User(**fields)


def _stored(row: Row) -> StoredMessage:
    msg_id, from_user_id, create_time, msg_type, data = row
    return StoredMessage(msg_id, from_user_id, create_time, msg_type, bytes(data))


def _marks(n: int) -> str:
    return ", ".join(["?"] * n)


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]
