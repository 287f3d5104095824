"""Which users exist, as the message path needs to know: a bounded cache.

A message to a user that does not exist is refused. Checking that with a
query *before* a message is queued let a later message of the same
connection, whose recipient was cached, overtake it (issue 8 measured ids
in reverse send order in 10 of 20 rounds). So the check runs inside the
ordered worker, once per batch, for the recipients the cache does not know.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from db_proxy.storage.model import Store

KNOWN_USERS = 100_000  # ids: about 8 MB at most


class KnownUsers:
    def __init__(self, store: Store, limit: int = KNOWN_USERS) -> None:
        self.store = store
        self.limit = limit
        self._ids: OrderedDict[int, None] = OrderedDict()

    def remember(self, user_id: int) -> None:
        self._ids[user_id] = None
        self._ids.move_to_end(user_id)
        if len(self._ids) > self.limit:
            self._ids.popitem(last=False)

    async def missing(self, user_ids: Iterable[int]) -> set[int]:
        """Those of ``user_ids`` that are not users (one query for the ones not cached)."""
        unknown = {u for u in user_ids if u not in self._ids}
        if not unknown:
            return set()
        for user in await self.store.users_by_id(sorted(unknown)):
            self.remember(user.id)
            unknown.discard(user.id)
        return unknown
