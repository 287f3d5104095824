"""The login's user rows: a bounded in-process cache over the directory store.

A returning user's login needs its row (id, stored hash, disabled, profile)
and nothing else from the database; reading it was a fifth of db_proxy's
time per login. So rows read by name are kept here for ``ttl`` seconds
(``login_user_rows_ttl``), bounded in entries and in bytes (oldest used out
first). Names not found are never kept: a user created meanwhile is found at
once. Concurrent reads that miss are gathered: the names asked in one loop
turn are read with one query (``users_by_name``).

A change to a user must not be hidden behind a kept row:

* on the db_proxy where it is made (an admin's password change, disable,
  delete, a profile change from a gateway) :meth:`UserRows.drop` runs right
  after the store wrote it (db_proxy/services/users.py), so the next login
  there reads the new row: a disabled or deleted user is refused at once;
* the others drop it when the DbInvalidate the change sends (through the
  route servers) arrives (db_proxy/server.py ``invalidations``);
* an invalidation can be lost (no route server linked; counted in
  imcluster_db_notices_dropped): a row is trusted only ``ttl`` seconds, so a
  disabled or deleted user is refused everywhere within ``ttl`` of the change
  whatever happens to the notice, and a new password works everywhere within
  it (the old one keeps working there until then).

A read that started before a drop never fills the cache after it (the
generation check in :meth:`UserRows.by_name`): it might hold the old row.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from db_proxy.storage.model import Store, User

#: What one kept row costs in this process, counted generously, on top of its text
#: (the User object with its slots, the OrderedDict entry and node, the index entry).
ENTRY_BYTES = 640
TEXT_FIELDS = ("name", "password_hash", "nick", "avatar", "email", "real_name", "tel", "domain", "sign_info")
#: Names read in one query at most (the store splits it further into its own chunks).
BATCH_NAMES = 512


def row_bytes(name: str, user: User) -> int:
    """What keeping ``user`` under ``name`` costs, counted generously (every character as 4 bytes
    beyond the first, as CPython may store it; each string object's header in ENTRY_BYTES)."""
    text = len(name) + sum(len(getattr(user, f)) for f in TEXT_FIELDS)
    return ENTRY_BYTES + 12 * len(TEXT_FIELDS) + 4 * text


class _Row:
    __slots__ = ("expires", "size", "user")

    def __init__(self, user: User, expires: float, size: int) -> None:
        self.user = user
        self.expires = expires
        self.size = size


class UserRows:
    def __init__(
        self,
        directory: Store,
        ttl: float = 30.0,
        limit: int = 100_000,
        max_bytes: int = 64 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self.ttl = ttl
        self.limit = limit
        self.max_bytes = max_bytes
        self.clock = clock
        self._rows: OrderedDict[str, _Row] = OrderedDict()  # by login name, least recently used first
        self._names: dict[int, set[str]] = {}  # user id -> the names its rows are kept under
        self.bytes_used = 0
        # Bumped by every drop: a read that started before one does not fill the cache.
        self.generation = 0
        self._wanted: dict[str, asyncio.Future[User | None]] = {}
        self._flush_scheduled = False
        self._reads: set[asyncio.Task[None]] = set()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._rows)

    def cached(self, name: str) -> User | None:
        """The kept row for ``name`` if it is still fresh."""
        row = self._rows.get(name)
        if row is None:
            return None
        if row.expires <= self.clock():
            self._remove(name)
            return None
        self._rows.move_to_end(name)
        return row.user

    async def by_name(self, name: str) -> User | None:
        """The user logging in as ``name``, as the directory has it (at most ``ttl`` old)."""
        if self.ttl <= 0 or self.limit <= 0:
            return await self.directory.user_by_name(name)
        user = self.cached(name)
        if user is not None:
            self.hits += 1
            return user
        self.misses += 1
        waiting = self._wanted.get(name)
        if waiting is None:
            waiting = asyncio.get_running_loop().create_future()
            self._wanted[name] = waiting
            if not self._flush_scheduled:
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)
        return await asyncio.shield(waiting)

    def _flush(self) -> None:
        self._flush_scheduled = False
        wanted, self._wanted = self._wanted, {}
        names = list(wanted)
        for i in range(0, len(names), BATCH_NAMES):
            chunk = {n: wanted[n] for n in names[i : i + BATCH_NAMES]}
            task = asyncio.get_running_loop().create_task(self._read(chunk))
            self._reads.add(task)
            task.add_done_callback(self._reads.discard)

    async def _read(self, wanted: dict[str, asyncio.Future[User | None]]) -> None:
        generation = self.generation
        try:
            if len(wanted) == 1:
                (name,) = wanted
                one = await self.directory.user_by_name(name)
                found = {name: one} if one is not None else {}
            else:
                found = {u.name: u for u in await self.directory.users_by_name(list(wanted))}
        except asyncio.CancelledError:
            for future in wanted.values():
                future.cancel()
            raise
        except Exception as exc:
            for future in wanted.values():
                if not future.done():
                    future.set_exception(exc)
                    future.add_done_callback(_retrieved)  # its waiters may have gone
            return
        for name, future in wanted.items():
            user = found.get(name)
            if user is not None and generation == self.generation and not user.deleted:
                self._put(name, user)
            if not future.done():
                future.set_result(user)

    def _put(self, name: str, user: User) -> None:
        self._remove(name)
        size = row_bytes(name, user)
        if size > self.max_bytes:
            return
        self._rows[name] = _Row(user, self.clock() + self.ttl, size)
        self._names.setdefault(user.id, set()).add(name)
        self.bytes_used += size
        while self._rows and (len(self._rows) > self.limit or self.bytes_used > self.max_bytes):
            self._remove(next(iter(self._rows)))

    def _remove(self, name: str) -> None:
        row = self._rows.pop(name, None)
        if row is None:
            return
        self.bytes_used -= row.size
        names = self._names.get(row.user.id)
        if names is not None:
            names.discard(name)
            if not names:
                del self._names[row.user.id]

    def drop(self, user_ids: Iterable[int]) -> None:
        """Those users changed (here, or on another db_proxy): their rows are read again."""
        self.generation += 1
        for user_id in user_ids:
            for name in list(self._names.get(user_id, ())):
                self._remove(name)

    def clear(self) -> None:
        self.generation += 1
        self._rows.clear()
        self._names.clear()
        self.bytes_used = 0


def _retrieved(future: asyncio.Future[User | None]) -> None:
    if not future.cancelled():
        future.exception()
