"""Which users exist, as the message side needs to know: a bounded cache.

Users live in the directory database, perhaps another one than the
messages' (groups, messages): the message side never joins on ``users``, it
asks this cache, which asks the directory store for what it does not know.

A message to a user that does not exist is refused. Checking that with a
query *before* a message is queued let a later message of the same
connection, whose recipient was cached, overtake it (issue 8 measured ids
in reverse send order in 10 of 20 rounds). So the check runs inside the
ordered worker, once per batch, for the recipients the cache does not know.

A deleted user is no user. The db_proxy that deletes one forgets it here
and tells the others (DbInvalidate through the route servers), which forget
it too. An invalidation can be lost (no route server linked: counted in
imcluster_db_notices_dropped), so an entry is also trusted only for
``KNOWN_TTL`` seconds, then checked again: a lost one costs at most that long
of messages to a deleted user being stored, never a message to a real user
refused.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from db_proxy.storage.model import Store

#: Ids remembered. An OrderedDict entry for an int key costs about 100 bytes
#: (the key object, the hash table slot and the linked-list node), so at most
#: about 10 MB.
KNOWN_USERS = 100_000
#: Seconds an entry is trusted without asking the directory again (one query
#: per batch for the recipients past it: cheap next to the commit).
KNOWN_TTL = 300.0


class KnownUsers:
    def __init__(
        self,
        directory: Store,
        limit: int = KNOWN_USERS,
        ttl: float = KNOWN_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self.limit = limit
        self.ttl = ttl
        self.clock = clock
        # user id -> when the directory last said it exists; oldest first.
        self._ids: OrderedDict[int, float] = OrderedDict()

    def remember(self, user_id: int) -> None:
        self._ids[user_id] = self.clock()
        self._ids.move_to_end(user_id)
        if len(self._ids) > self.limit:
            self._ids.popitem(last=False)

    def _known(self, user_id: int, now: float) -> bool:
        learned = self._ids.get(user_id)
        return learned is not None and now - learned < self.ttl

    def forget(self, user_ids: Iterable[int]) -> None:
        """Those users are deleted (here or on another db_proxy)."""
        for user_id in user_ids:
            self._ids.pop(user_id, None)

    async def missing(self, user_ids: Iterable[int]) -> set[int]:
        """Those of ``user_ids`` that are not users, or deleted ones (one query for
        the ones not cached)."""
        now = self.clock()
        unknown = {u for u in user_ids if not self._known(u, now)}
        if not unknown:
            return set()
        for user in await self.directory.users_by_id(sorted(unknown)):
            if not user.deleted:
                self.remember(user.id)
                unknown.discard(user.id)
        self.forget(unknown)  # an expired entry of a user deleted meanwhile
        return unknown

    async def existing(self, user_ids: Iterable[int]) -> list[int]:
        """Those of ``user_ids`` that are users, each once, ascending."""
        wanted = {u for u in user_ids if u > 0}
        return sorted(wanted - await self.missing(wanted))
