"""Messages and sessions: saving batches (1:1 and group), reading them back, unread
counts and the recent-session list."""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import dataclass
from functools import cache

from .model import (
    SESSION_GROUP,
    SESSION_SINGLE,
    InvalidValue,
    NewMessage,
    NotMember,
    RecentSession,
    SavedMessage,
    StoredMessage,
    UnreadSession,
)
from .sql_base import (
    BUMP_UPDATED,
    I64_MAX,
    U32_MAX,
    U64_MAX,
    Database,
    Dialect,
    Row,
    TransientError,
    Tx,
    UniqueViolation,
    chunks,
    marks,
    values_steps,
)
from .sql_groups import current_members

_ATTEMPTS = 3  # tries of a message batch that lost a race to another transaction
_MSG_COLUMNS = "msg_id, from_user_id, create_time, msg_type, msg_data"
_DEDUP_MATCH = "(from_user_id = ? AND session_type = ? AND to_id = ? AND client_msg_id = ? AND body_hash = ?)"
_CONV_MATCH = "(session_type = ? AND conv_id = ?)"
# A group member sees the messages after the point it (last) joined at; for
# anyone else the subquery is NULL and the comparison matches nothing.
_AFTER_JOINING = (
    " AND {column} > (SELECT joined_msg_id FROM group_members "
    "WHERE group_id = ? AND user_id = ? AND removed = 0)"
)
# A session with its latest message (the columns after the session's own).
_SESSION_WITH_LATEST = (
    "s.latest_msg_id, m.msg_type, m.msg_data, m.from_user_id FROM sessions s LEFT JOIN messages m "
    "ON m.session_type = s.session_type AND m.conv_id = s.conv_id AND m.msg_id = s.latest_msg_id "
)


_ALLOCATE_HEAD = "INSERT INTO conversations (session_type, conv_id, last_msg_id)"


@cache
def _allocate_tail(d: Dialect) -> str:
    # Adds n to the counter (creating it at n) in one statement, so
    # concurrent allocators queue on the row lock instead of racing.
    return f"{d.upsert('session_type, conv_id')} last_msg_id = last_msg_id + {d.new('last_msg_id')}"


_TOUCH_SESSION_HEAD = (
    "INSERT INTO sessions (user_id, session_type, peer_id, conv_id, updated, latest_msg_id, unread_cnt, "
    "removed)"
)


@cache
def _touch_session_tail(d: Dialect) -> str:
    # updated never goes back (create times come from several gateways), and
    # moves on by at least a second when a removed session reappears, so that
    # an incremental recent-session sync sees the reappearance. It comes first:
    # MySQL's later assignments would see the new "removed".
    new = d.new("updated")
    return (
        f"{d.upsert('user_id, session_type, peer_id')} "
        f"updated = CASE WHEN updated < {new} THEN {new} WHEN removed = 1 THEN updated + 1 "
        f"ELSE updated END, latest_msg_id = {d.new('latest_msg_id')}, "
        f"unread_cnt = unread_cnt + {d.new('unread_cnt')}, removed = 0"
    )


@dataclass(slots=True)
class _Pending:
    """A message of a batch on its way into the store."""

    msg: NewMessage
    conv: tuple[int, int]  # (session_type, conv_id as stored)
    dedup: Row | None  # the message_dedup key, None for client_msg_id 0
    msg_id: int = 0
    recipients: tuple[int, ...] = ()


class MessageQueries:
    """The message and session part of :class:`~db_proxy.storage.sql.SqlStore`."""

    db: Database

    # writing

    async def save_messages(self, batch: list[NewMessage]) -> list[SavedMessage]:
        """See :meth:`Store.save_messages`.

        A group message whose sender is not a member when the batch commits
        fails the whole batch with :class:`NotMember` (nothing is written).

        Two round trips on MySQL for a batch of new 1:1 messages: the ids
        (allocated and read back), then the rows with the COMMIT. A batch is
        first tried as if none of it were a resend; the dedup table's key
        refuses one that is (the batch rolls back whole) and the batch runs
        again, looking its resends up first.
        """
        pending = [self._pending(m) for m in batch]
        if not pending:
            return []
        look_up = False  # read message_dedup first (after a resend was refused)
        attempt = 1
        while True:
            try:
                async with self.db.transaction() as tx:
                    return await self._save(tx, pending, look_up, commit=True)
            except UniqueViolation as exc:
                if not look_up:
                    look_up = True  # a resend, most likely: no race lost
                    continue
                if attempt >= _ATTEMPTS:
                    raise TransientError(f"the batch lost {attempt} races: {exc}") from exc
                attempt += 1
            except TransientError as exc:
                # A concurrent identical send committed first (its dedup row
                # now exists) or the engine broke a deadlock: the batch was
                # rolled back whole, so running it again is safe.
                if attempt >= _ATTEMPTS:
                    # Still losing races: the sender may try again later.
                    raise TransientError(f"the batch lost {attempt} races: {exc}") from exc
                attempt += 1

    def _pending(self, m: NewMessage) -> _Pending:
        conv_id = self._conv_id(m.from_user_id, m.session_type, m.to_id)
        if not isinstance(m.msg_data, bytes):
            raise InvalidValue(f"msg_data must be bytes, not {type(m.msg_data).__name__}")
        if not 0 <= m.msg_type <= U32_MAX or not 0 <= m.client_msg_id <= U64_MAX:
            raise InvalidValue("msg_type or client_msg_id out of range")
        dedup: Row | None = None
        if m.client_msg_id:
            body_hash = int.from_bytes(hashlib.sha256(m.msg_data).digest()[:8], "big")
            u64 = self.db.dialect.u64
            dedup = (m.from_user_id, m.session_type, m.to_id, u64(m.client_msg_id), u64(body_hash))
        return _Pending(m, (m.session_type, conv_id), dedup)

    async def _save(
        self, tx: Tx, batch: list[_Pending], look_up: bool = False, *, commit: bool = False
    ) -> list[SavedMessage]:
        """``look_up``: find resends in message_dedup first; ``commit``: the last
        script commits (nothing else may run in ``tx``)."""
        keys = [p.dedup for p in batch if p.dedup]
        stored = await self._find_duplicates(tx, keys) if look_up and keys else {}
        first: dict[Row, _Pending] = {}  # the batch's own first send of each dedup key
        fresh: list[_Pending] = []
        for p in batch:
            if p.dedup is None or (p.dedup not in stored and p.dedup not in first):
                fresh.append(p)
                if p.dedup is not None:
                    first[p.dedup] = p
        fresh_ids = {id(p) for p in fresh}
        if fresh:
            # Ids first: the counter's row lock is what a member change of
            # the same group waits on, so the members read next are the ones
            # at commit.
            await self._allocate(tx, fresh)
            await self._address(tx, fresh)
        # A duplicate is pushed again (its first push may never have happened):
        # to the pair, or to the group's members as they are now.
        again = sorted(
            {p.msg.to_id for p in batch if id(p) not in fresh_ids and p.msg.session_type == SESSION_GROUP}
        )
        members_now = await current_members(tx, self.db.dialect, again) if again else {}
        if fresh:
            d = self.db.dialect
            steps = values_steps(
                "INSERT INTO messages (session_type, conv_id, msg_id, from_user_id, to_id, "
                "msg_type, msg_data, create_time)",
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
            steps += values_steps(
                "INSERT INTO message_dedup (from_user_id, session_type, to_id, "
                "client_msg_id, body_hash, msg_id, created)",
                [(*p.dedup, p.msg_id, p.msg.create_time) for p in fresh if p.dedup],
            )
            steps += values_steps(_TOUCH_SESSION_HEAD, _session_rows(fresh), _touch_session_tail(d))
            await tx.script(steps, commit=commit)
        results: list[SavedMessage] = []
        for p in batch:
            if id(p) in fresh_ids:
                results.append(SavedMessage(p.msg_id, p.msg.create_time, False, p.recipients))
                continue
            m = p.msg
            recipients = (
                members_now.get(m.to_id, ())
                if m.session_type == SESSION_GROUP
                else tuple(sorted({m.from_user_id, m.to_id}))
            )
            assert p.dedup is not None  # only a message with a dedup key is ever not fresh
            if p.dedup in stored:
                msg_id, created = stored[p.dedup]
            else:
                original = first[p.dedup]
                msg_id, created = original.msg_id, original.msg.create_time
            results.append(SavedMessage(msg_id, created, True, recipients))
        return results

    async def _find_duplicates(self, tx: Tx, keys: list[Row]) -> dict[Row, tuple[int, int]]:
        """msg_id and create_time of the already stored sends among ``keys``."""
        found: dict[Row, tuple[int, int]] = {}
        for chunk in chunks(sorted(set(keys))):
            rows = await tx.fetchall(
                "SELECT from_user_id, session_type, to_id, client_msg_id, body_hash, msg_id, "
                f"created FROM message_dedup WHERE {' OR '.join([_DEDUP_MATCH] * len(chunk))}",
                [value for key in chunk for value in key],
            )
            for row in rows:
                found[tuple(row[:5])] = (row[5], row[6])
        return found

    async def _allocate(self, tx: Tx, fresh: list[_Pending]) -> None:
        """Give each message the next ids of its conversation, in batch order.

        The counters are moved on and read back in one script (one round trip).
        """
        counts = Counter(p.conv for p in fresh)
        # Sorted, so two batches lock the counters they share in the same order.
        convs = sorted(counts)
        steps = values_steps(
            _ALLOCATE_HEAD, [(*c, counts[c]) for c in convs], _allocate_tail(self.db.dialect)
        )
        reads = len(steps)
        for chunk in chunks(convs):
            steps.append(
                (
                    "SELECT session_type, conv_id, last_msg_id FROM conversations "
                    f"WHERE {' OR '.join([_CONV_MATCH] * len(chunk))}",
                    [value for conv in chunk for value in conv],
                )
            )
        next_id: dict[tuple[int, int], int] = {}
        for rows in (await tx.script(steps))[reads:]:
            for session_type, conv_id, last in rows:
                conv = (session_type, conv_id)
                next_id[conv] = last - counts[conv] + 1
        for p in fresh:
            p.msg_id = next_id[p.conv]
            next_id[p.conv] += 1

    async def _address(self, tx: Tx, fresh: list[_Pending]) -> None:
        """Set each message's recipients; NotMember for a sender outside its group
        (unless the message is trusted: then the members alone get it)."""
        group_ids = sorted({p.msg.to_id for p in fresh if p.msg.session_type == SESSION_GROUP})
        members = await current_members(tx, self.db.dialect, group_ids, lock=True) if group_ids else {}
        for p in fresh:
            m = p.msg
            if m.session_type == SESSION_SINGLE:
                p.recipients = tuple(sorted({m.from_user_id, m.to_id}))
                continue
            p.recipients = members.get(m.to_id, ())
            if m.from_user_id not in p.recipients and not m.trusted:
                raise NotMember(f"user {m.from_user_id} is not a member of group {m.to_id}")

    # reading

    async def message_list(
        self, user_id: int, session_type: int, peer_id: int, msg_id_begin: int, count: int
    ) -> list[StoredMessage]:
        """Newest first; of a group, only what came after the user joined."""
        where, params = self._visible(user_id, session_type, peer_id)
        if count <= 0:
            return []
        begin = min(msg_id_begin, I64_MAX) if msg_id_begin > 0 else I64_MAX
        async with self.db.reading() as tx:
            rows = await tx.fetchall(
                f"SELECT {_MSG_COLUMNS} FROM messages WHERE {where} "
                "AND msg_id <= ? ORDER BY msg_id DESC LIMIT ?",
                (*params, begin, count),
            )
        return [_stored(row) for row in rows]

    async def messages_by_id(
        self, user_id: int, session_type: int, peer_id: int, msg_ids: list[int]
    ) -> list[StoredMessage]:
        """The visible stored messages among ``msg_ids``, each once, in ascending id order."""
        where, params = self._visible(user_id, session_type, peer_id)
        ids = sorted({i for i in msg_ids if 0 < i <= I64_MAX})
        messages: list[StoredMessage] = []
        async with self.db.reading() as tx:
            for chunk in chunks(ids):
                rows = await tx.fetchall(
                    f"SELECT {_MSG_COLUMNS} FROM messages WHERE {where} "
                    f"AND msg_id IN ({marks(len(chunk))}) ORDER BY msg_id",
                    (*params, *chunk),
                )
                messages += map(_stored, rows)
        return messages

    async def latest_msg_id(self, user_id: int, session_type: int, peer_id: int) -> int:
        """The newest id the user can see in that session, 0 if none."""
        conv_id = self._conv_id(user_id, session_type, peer_id)
        sql = "SELECT last_msg_id FROM conversations WHERE session_type = ? AND conv_id = ?"
        params: tuple[int, ...] = (session_type, conv_id)
        if session_type == SESSION_GROUP:
            sql += _AFTER_JOINING.format(column="last_msg_id")
            params += (conv_id, user_id)
        async with self.db.reading() as tx:
            rows = await tx.fetchall(sql, params)
        return int(rows[0][0]) if rows else 0

    async def unread_sessions(self, user_id: int) -> list[UnreadSession]:
        """Sessions with unread messages, the most recently active first."""
        async with self.db.reading() as tx:
            rows = await tx.fetchall(
                f"SELECT s.session_type, s.peer_id, s.unread_cnt, {_SESSION_WITH_LATEST}"
                "WHERE s.user_id = ? AND s.unread_cnt > 0 "
                "ORDER BY s.updated DESC, s.session_type, s.peer_id",
                (user_id,),
            )
        return [
            UnreadSession(
                session_type, peer_id, unread, latest, msg_type or 0, bytes(data or b""), sender or 0
            )
            for session_type, peer_id, unread, latest, msg_type, data, sender in rows
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

    # recent sessions

    async def recent_sessions(self, user_id: int, since: int) -> list[RecentSession]:
        async with self.db.reading() as tx:
            rows = await tx.fetchall(
                f"SELECT s.session_type, s.peer_id, s.updated, s.removed, {_SESSION_WITH_LATEST}"
                "WHERE s.user_id = ? AND s.updated > ? "
                "ORDER BY s.updated DESC, s.session_type, s.peer_id",
                (user_id, since),
            )
        return [
            RecentSession(
                session_type,
                peer_id,
                updated,
                bool(removed),
                latest,
                msg_type or 0,
                bytes(data or b""),
                sender or 0,
            )
            for session_type, peer_id, updated, removed, latest, msg_type, data, sender in rows
        ]

    async def remove_session(self, user_id: int, session_type: int, peer_id: int) -> bool:
        now = int(time.time())
        async with self.db.transaction() as tx:
            # BUMP_UPDATED always changes the row, so the count is the match
            # count on MySQL too (which counts changed rows only).
            changed = await tx.execute(
                f"UPDATE sessions SET {BUMP_UPDATED}, removed = 1 "
                "WHERE user_id = ? AND session_type = ? AND peer_id = ?",
                (now, now, user_id, session_type, peer_id),
            )
        return changed > 0

    def _visible(self, user_id: int, session_type: int, peer_id: int) -> tuple[str, tuple[int, ...]]:
        """A WHERE condition on messages: those of the session the user may read."""
        conv_id = self._conv_id(user_id, session_type, peer_id)
        if session_type == SESSION_GROUP:
            where = "session_type = ? AND conv_id = ?" + _AFTER_JOINING.format(column="msg_id")
            return where, (session_type, conv_id, conv_id, user_id)
        return "session_type = ? AND conv_id = ?", (session_type, conv_id)

    def _conv_id(self, user_id: int, session_type: int, peer_id: int) -> int:
        """The conversation id, as stored, of a session seen from ``user_id``.

        A 1:1 conversation is the unordered user pair, so both directions
        share one id space; the user is one side of it by construction. A
        group's conversation is the group (whether the user may see it is
        checked against its membership).
        """
        if session_type not in (SESSION_SINGLE, SESSION_GROUP):
            raise InvalidValue(f"unknown session type {session_type}")
        if not (0 < user_id <= U32_MAX and 0 < peer_id <= U32_MAX):
            raise InvalidValue(f"id out of range in ({user_id}, {peer_id})")
        if session_type == SESSION_GROUP:
            return peer_id
        low, high = sorted((user_id, peer_id))
        return self.db.dialect.u64(low << 32 | high)


def _session_rows(fresh: list[_Pending]) -> list[Row]:
    """One upsert row per touched session: both sides of a 1:1 message, every
    member of a group's.

    Rows are merged per session within the batch (last message wins, unread
    increments add up); the sender's own copy (a message to oneself too)
    counts as already read.
    """
    merged: dict[tuple[int, int, int], list[int]] = {}
    for p in fresh:
        m = p.msg
        for user_id in p.recipients:
            if m.session_type == SESSION_GROUP or user_id == m.from_user_id:
                peer_id = m.to_id
            else:
                peer_id = m.from_user_id
            unread = 0 if user_id == m.from_user_id else 1
            key = (user_id, m.session_type, peer_id)
            row = merged.get(key)
            if row is None:
                merged[key] = [p.conv[1], m.create_time, p.msg_id, unread]
            else:
                row[1], row[2], row[3] = m.create_time, p.msg_id, row[3] + unread
    return [(*key, *values, 0) for key, values in sorted(merged.items())]


def _stored(row: Row) -> StoredMessage:
    msg_id, from_user_id, create_time, msg_type, data = row
    return StoredMessage(msg_id, from_user_id, create_time, msg_type, bytes(data))
