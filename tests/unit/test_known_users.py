"""The message side's cache of which users exist (db_proxy/recipients.py), on a fake clock.

The directory here is an in-memory stand-in: what is tested is the cache's
policy (bounded, forgotten on invalidation, trusted only for its TTL), not a
database; the real stores are behind it in tests/services.
"""

from __future__ import annotations

import dataclasses

from db_proxy.recipients import KnownUsers
from db_proxy.storage.model import Store, User


class Directory:
    def __init__(self, ids: list[int]) -> None:
        self.users = {i: User(i, f"u{i}", "!") for i in ids}
        self.queries = 0

    async def users_by_id(self, user_ids: list[int]) -> list[User]:
        self.queries += 1
        return [self.users[i] for i in user_ids if i in self.users]

    def delete(self, user_id: int) -> None:
        self.users[user_id] = dataclasses.replace(self.users[user_id], deleted=True)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def cache(directory: Directory, clock: Clock, limit: int = 100) -> KnownUsers:
    store: Store = directory  # type: ignore[assignment]  # only users_by_id is used
    return KnownUsers(store, limit=limit, ttl=60.0, clock=clock)


async def test_known_users_are_not_asked_again_within_the_ttl() -> None:
    directory, clock = Directory([1, 2]), Clock()
    known = cache(directory, clock)
    assert await known.missing([1, 2, 3]) == {3}
    clock.now = 59.0
    assert await known.missing([1, 2]) == set()
    assert directory.queries == 1


async def test_a_lost_invalidation_costs_at_most_the_ttl() -> None:
    directory, clock = Directory([1, 2]), Clock()
    known = cache(directory, clock)
    assert await known.missing([1]) == set()
    directory.delete(1)  # and the DB_INVALIDATE never arrives
    clock.now = 30.0
    assert await known.missing([1]) == set()  # still trusted
    clock.now = 60.0
    assert await known.missing([1]) == {1}  # checked again: deleted
    assert await known.missing([1]) == {1}


async def test_an_invalidation_is_seen_at_once() -> None:
    directory, clock = Directory([1]), Clock()
    known = cache(directory, clock)
    assert await known.existing([1, 0, 1]) == [1]
    directory.delete(1)
    known.forget([1])
    assert await known.existing([1]) == []


async def test_the_cache_is_bounded() -> None:
    directory, clock = Directory(list(range(1, 11))), Clock()
    known = cache(directory, clock, limit=4)
    assert await known.missing(range(1, 11)) == set()
    assert len(known._ids) == 4  # the four learned last
    directory.queries = 0
    assert await known.missing([10]) == set()
    assert directory.queries == 0
