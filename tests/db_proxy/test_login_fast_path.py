"""The returning login's fast path (issue 12): one Redis command, the user's row kept in process.

On a real Redis and real stores (SQLite, MariaDB); the clock of the kept rows is a fake one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from common.commands import OneWays
from common.delivery.memory import MemoryDeliveryLog
from common.pb import base_pb2, internal_pb2
from db_proxy.cache import CHECK_SCRIPT, SUCCESS_SCRIPT, LoginCache, ThrottleCounters
from db_proxy.handlers import login as handlers_module
from db_proxy.handlers.login import LoginHandlers
from db_proxy.login_throttle import KNOWN_SOURCES, KNOWN_TTL, Limits, LoginThrottle
from db_proxy.passwords import hash_password, md5_hex
from db_proxy.push import LogAppender
from db_proxy.server import connect_redis, invalidations
from db_proxy.services.outcome import UsersGone
from db_proxy.services.registry import Services
from db_proxy.storage import open_store
from db_proxy.storage.model import Store, User
from db_proxy.user_rows import ENTRY_BYTES, UserRows, row_bytes
from db_proxy.workers import MessageWorkers
from tests.db_proxy.conftest import ENGINES, LINK, database_url

REDIS_URL = os.environ.get("IMCLUSTER_TEST_REDIS", "redis://127.0.0.1:6379/0")
PASSWORD = "secret"
LIMITS = Limits(failure_limit=3, window=900, delay_max=60, source_limit=100, source_lock=300, user_limit=50)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeDirectory:
    """Just what UserRows reads, counting the queries."""

    def __init__(self, users: dict[str, User]) -> None:
        self.users = users
        self.queries: list[list[str]] = []
        self.gate: asyncio.Event | None = None  # when set, a read waits for it

    async def user_by_name(self, name: str) -> User | None:
        self.queries.append([name])
        found = self.users.get(name)  # read now, answered when the gate opens
        if self.gate is not None:
            await self.gate.wait()
        return found

    async def users_by_name(self, names: list[str]) -> list[User]:
        self.queries.append(sorted(names))
        found = [self.users[n] for n in names if n in self.users]
        if self.gate is not None:
            await self.gate.wait()
        return found


def user(user_id: int, name: str, **fields: Any) -> User:
    return User(id=user_id, name=name, password_hash="scrypt$x", **fields)


def rows_over(users: dict[str, User], clock: Clock, **limits: Any) -> tuple[UserRows, FakeDirectory]:
    directory = FakeDirectory(users)
    store: Any = directory
    return UserRows(store, clock=clock, **limits), directory


# -- the kept rows on their own ----------------------------------------------------------


async def test_a_row_is_kept_for_its_ttl_then_read_again() -> None:
    clock = Clock()
    rows, directory = rows_over({"alice": user(1, "alice")}, clock, ttl=30.0)
    assert (await rows.by_name("alice")) == user(1, "alice")
    assert (await rows.by_name("alice")) is not None and len(directory.queries) == 1
    clock.now += 29.9
    await rows.by_name("alice")
    assert len(directory.queries) == 1
    clock.now += 0.2  # past the ttl: read again, whatever any invalidation did
    await rows.by_name("alice")
    assert len(directory.queries) == 2


async def test_names_not_found_are_never_kept() -> None:
    clock = Clock()
    users: dict[str, User] = {}
    rows, _ = rows_over(users, clock)
    assert await rows.by_name("newcomer") is None
    users["newcomer"] = user(9, "newcomer")  # created meanwhile (through any db_proxy)
    assert await rows.by_name("newcomer") == user(9, "newcomer")
    assert len(rows) == 1


async def test_entries_and_bytes_are_bounded_least_used_first_out() -> None:
    clock = Clock()
    users = {f"u{i}": user(i, f"u{i}") for i in range(10)}
    rows, _ = rows_over(users, clock, limit=3)
    for name in ("u0", "u1", "u2"):
        await rows.by_name(name)
    await rows.by_name("u0")  # used: u1 is now the least recently used
    await rows.by_name("u3")
    assert len(rows) == 3 and rows.cached("u1") is None and rows.cached("u0") is not None

    one = row_bytes("u0", users["u0"])
    rows, _ = rows_over(users, clock, max_bytes=4 * one + one // 2)
    for i in range(10):
        await rows.by_name(f"u{i}")
    assert len(rows) == 4 and rows.bytes_used <= rows.max_bytes
    assert [n for n in (f"u{i}" for i in range(10)) if rows.cached(n)] == ["u6", "u7", "u8", "u9"]
    big = user(99, "big", sign_info="x" * 10_000)
    assert row_bytes("big", big) > ENTRY_BYTES + 40_000  # counted by its text
    rows, _ = rows_over({"big": big, **users}, clock, max_bytes=row_bytes("big", big) - 1)
    assert await rows.by_name("big") == big and len(rows) == 0  # larger than the budget: not kept
    rows.drop([99])
    assert rows.bytes_used == 0


async def test_misses_in_one_loop_turn_are_read_with_one_query() -> None:
    clock = Clock()
    users = {f"u{i}": user(i, f"u{i}") for i in range(50)}
    rows, directory = rows_over(users, clock)
    found = await asyncio.gather(*(rows.by_name(f"u{i % 25}") for i in range(50)), rows.by_name("ghost"))
    assert found[:50] == [users[f"u{i % 25}"] for i in range(50)] and found[50] is None
    assert directory.queries == [sorted([f"u{i}" for i in range(25)] + ["ghost"])]


async def test_a_read_started_before_a_drop_does_not_fill_the_cache() -> None:
    clock = Clock()
    users = {"alice": user(1, "alice")}
    rows, directory = rows_over(users, clock)
    directory.gate = asyncio.Event()
    reading = asyncio.create_task(rows.by_name("alice"))
    while not directory.queries:
        await asyncio.sleep(0)
    users["alice"] = user(1, "alice", disabled=True)  # the change lands while the old row is read
    rows.drop([1])
    directory.gate.set()
    assert (await reading) == user(1, "alice")  # that login saw the row as it was read
    directory.gate = None
    again = await rows.by_name("alice")
    assert again is not None and again.disabled  # but the old row was not kept


async def test_a_failed_read_fails_its_waiters_and_keeps_nothing() -> None:
    class Broken(FakeDirectory):
        async def users_by_name(self, names: list[str]) -> list[User]:
            raise RuntimeError("database down")

    store: Any = Broken({})
    rows = UserRows(store, clock=Clock())
    results = await asyncio.gather(rows.by_name("a"), rows.by_name("b"), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results) and len(rows) == 0


# -- db_proxy's login over a real store and a real Redis -------------------------------------------


class Counting:
    """Counts what a redis-py client sends: each command, and each pipeline as one round trip."""

    def __init__(self, client: Any) -> None:
        self.commands: list[str] = []
        real_execute, real_pipeline = client.execute_command, client.pipeline

        async def execute_command(*args: Any, **options: Any) -> Any:
            self.commands.append(str(args[0]).upper())
            return await real_execute(*args, **options)

        def pipeline(*args: Any, **kwargs: Any) -> Any:
            pipe = real_pipeline(*args, **kwargs)
            real_run = pipe.execute

            async def execute(*a: Any, **k: Any) -> Any:
                self.commands.append("PIPELINE")
                return await real_run(*a, **k)

            pipe.execute = execute
            return pipe

        client.execute_command = execute_command
        client.pipeline = pipeline

    def take(self) -> list[str]:
        taken, self.commands = self.commands, []
        return taken


@dataclass
class Login:
    store: Store
    services: Services
    handlers: LoginHandlers
    rows: UserRows
    alice: int
    forget: Callable[[internal_pb2.DbInvalidate], None]

    async def login(
        self, name: str = "alice", password: str = PASSWORD, peer: str = "10.9.0.1:5000"
    ) -> internal_pb2.DbLoginRes:
        req = internal_pb2.DbLoginReq(user_name=name, password_md5=md5_hex(password), peer=peer)
        return await self.handlers.login(LINK, req)


@contextlib.asynccontextmanager
async def login_on(url: str, redis: Any | None, clock: Clock | None = None) -> AsyncIterator[Login]:
    async with open_store(url) as store:
        await store.migrate()
        pool = ThreadPoolExecutor(2, thread_name_prefix="test-hash")
        workers = MessageWorkers(
            store, LogAppender(MemoryDeliveryLog(2)), workers=1, queue_size=8, batch_size=4
        )
        rows = UserRows(store, ttl=30.0, clock=clock or Clock())
        services = Services.over(store, store, workers, password_log2_n=4, rows=rows)
        throttle = ThrottleCounters(redis, LoginThrottle(LIMITS, secrets.token_bytes(32)))
        cache = LoginCache(redis, ttl=60)
        handlers = LoginHandlers(store, services.known, cache, pool, 64, throttle, rows)
        name = f"alice{secrets.token_hex(4)}"
        alice = await store.create_user(name, hash_password(md5_hex(PASSWORD), log2_n=4))
        route = invalidations(services.known, rows).get(OneWays.DB_INVALIDATE.command)
        assert route is not None

        def forget(msg: internal_pb2.DbInvalidate) -> None:
            route.handler(LINK, msg)

        try:
            yield Login(store, services, handlers, rows, alice, forget)
        finally:
            throttle.close()
            pool.shutdown(wait=True)


@pytest.fixture
async def redis() -> AsyncIterator[Any]:
    client = await connect_redis(REDIS_URL)
    assert client is not None, "these tests need the Redis at IMCLUSTER_TEST_REDIS"
    yield client
    await client.aclose()


def count_hashes(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """The stored hashes each password check ran against, from now on."""
    hashes: list[str | None] = []
    real = handlers_module.verify_or_waste

    def verify(md5: str, stored: str | None) -> bool:
        hashes.append(stored)
        return real(md5, stored)

    monkeypatch.setattr(handlers_module, "verify_or_waste", verify)
    return hashes


def ok(res: internal_pb2.DbLoginRes) -> bool:
    return res.result_code == base_pb2.REFUSE_REASON_NONE


async def test_a_returning_login_costs_one_redis_command_and_no_query(
    redis: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashes = count_hashes(monkeypatch)
    await redis.script_load(CHECK_SCRIPT)  # as any db_proxy before: no NOSCRIPT in the count
    await redis.script_load(SUCCESS_SCRIPT)
    counting = Counting(redis)
    async with database_url("mysql", tmp_path) as url, login_on(url, redis) as bed:
        pipe = bed.handlers.throttle.pipe
        assert pipe is not None  # plain TCP: the login's own pipelined connection

        before = [pipe.sent]

        def sent() -> list[str]:
            """Commands since the last call: redis-py's, then one "PIPE" per command on the pipe."""
            assert pipe is not None
            taken = counting.take() + ["PIPE"] * (pipe.sent - before[0])
            before[0] = pipe.sent
            return taken

        name = (await bed.services.users.get(bed.alice)).name
        assert ok(await bed.login(name))  # first time: the check, a hash, the success write
        assert sent() == ["PIPE", "PIPE"]
        assert len(hashes) == 1
        reads = bed.rows.misses
        for _ in range(3):
            assert ok(await bed.login(name))
            assert sent() == ["PIPE"]  # one round trip: nothing to clear, nothing to write
        assert len(hashes) == 1 and bed.rows.misses == reads  # no scrypt, no query

        # A wrong password is counted (and clears nothing); the next good one writes again, once.
        assert not ok(await bed.login(name, "wrong"))
        assert sent() == ["PIPELINE", "PIPELINE", "PIPE"]  # counted as before, through redis-py
        assert ok(await bed.login(name))
        assert sent() == ["PIPE", "PIPE"]
        assert ok(await bed.login(name))
        assert sent() == ["PIPE"]


async def test_the_scripts_are_loaded_again_after_a_script_flush(redis: Any, tmp_path: Path) -> None:
    async with database_url("sqlite", tmp_path) as url, login_on(url, redis) as bed:
        name = (await bed.services.users.get(bed.alice)).name
        assert ok(await bed.login(name))
        await redis.script_flush()  # as a restarted Redis: NOSCRIPT, then loaded and retried
        assert ok(await bed.login(name))
        assert ok(await bed.login(name, peer="10.9.0.2:1"))


async def test_throttle_on_redis_refuses_before_any_lookup_or_hash(
    redis: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashes = count_hashes(monkeypatch)
    async with database_url("sqlite", tmp_path) as url, login_on(url, redis) as bed:
        name = (await bed.services.users.get(bed.alice)).name
        attacker = "10.66.0.1:4000"
        for _ in range(LIMITS.failure_limit):
            assert not ok(await bed.login(name, "guess", attacker))
        assert len(hashes) == LIMITS.failure_limit  # each counted, each hashed
        reads = bed.rows.misses + bed.rows.hits
        refused = await bed.login(name, PASSWORD, attacker)  # even the right one: inside the wait
        assert not ok(refused) and "too many failed logins" in refused.result_string
        assert len(hashes) == LIMITS.failure_limit and bed.rows.misses + bed.rows.hits == reads
        assert ok(await bed.login(name, PASSWORD, "10.9.0.7:1"))  # another address is free
        await bed.handlers.throttle.unlock(name)


async def test_with_redis_down_logins_fall_back_to_the_process(tmp_path: Path) -> None:
    import redis.asyncio as aioredis

    down = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    try:
        async with database_url("sqlite", tmp_path) as url, login_on(url, down) as bed:
            name = (await bed.services.users.get(bed.alice)).name
            assert ok(await bed.login(name))
            assert ok(await bed.login(name))  # the in-process verified-password entry
            for _ in range(LIMITS.failure_limit):
                assert not ok(await bed.login(name, "guess", "10.66.0.2:1"))
            assert "too many" in (await bed.login(name, PASSWORD, "10.66.0.2:1")).result_string
    finally:
        await down.aclose()


@pytest.mark.parametrize("engine", ENGINES)
async def test_an_admin_change_here_is_seen_by_the_next_login(engine: str, tmp_path: Path) -> None:
    async with database_url(engine, tmp_path) as url, login_on(url, None) as bed:
        users = bed.services.users
        name = (await users.get(bed.alice)).name
        assert ok(await bed.login(name)) and bed.rows.cached(name) is not None
        disabled = await users.set_disabled(bed.alice, True)
        assert UsersGone((bed.alice,)) in disabled.notices  # the other db_proxies hear of it
        assert not ok(await bed.login(name))  # refused at once, no ttl to wait
        await users.set_disabled(bed.alice, False)
        assert ok(await bed.login(name))
        await users.set_password(bed.alice, "new secret")
        assert not ok(await bed.login(name))
        assert ok(await bed.login(name, "new secret"))
        await users.update_profile(bed.alice, nick="Al")
        assert (await bed.login(name, "new secret")).user_info.user_nick_name == "Al"
        await users.delete(bed.alice)
        assert not ok(await bed.login(name, "new secret"))


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_change_elsewhere_is_seen_when_its_invalidation_arrives_or_after_the_ttl(
    engine: str, tmp_path: Path
) -> None:
    clock = Clock()
    async with database_url(engine, tmp_path) as url, login_on(url, None, clock) as bed:
        name = (await bed.services.users.get(bed.alice)).name
        assert ok(await bed.login(name))
        # Another db_proxy disables alice: the row here is stale until told.
        await bed.store.update_user_profile(bed.alice, disabled=True)
        assert ok(await bed.login(name))  # the kept row (what the invalidation is for)
        bed.forget(internal_pb2.DbInvalidate(user_ids=[bed.alice], from_node="db-2"))
        assert not ok(await bed.login(name))  # dropped on DB_INVALIDATE: refused at once

        await bed.store.update_user_profile(bed.alice, disabled=False)
        bed.forget(internal_pb2.DbInvalidate(user_ids=[bed.alice], from_node="db-2"))
        assert ok(await bed.login(name))
        await bed.store.update_user_profile(bed.alice, disabled=True)  # and this invalidation is lost
        clock.now += bed.rows.ttl - 0.1
        assert ok(await bed.login(name))
        clock.now += 0.2
        assert not ok(await bed.login(name))  # refused within the ttl anyway


async def test_the_success_script_keeps_the_known_good_addresses_bounded(redis: Any, tmp_path: Path) -> None:
    async with database_url("sqlite", tmp_path) as url, login_on(url, redis) as bed:
        name = (await bed.services.users.get(bed.alice)).name
        for i in range(KNOWN_SOURCES + 4):
            assert ok(await bed.login(name, peer=f"10.8.0.{i}:1"))
        user = bed.handlers.throttle.throttle.user_key(name).hex()
        assert await redis.scard(f"imc:lt:k:{user}") == KNOWN_SOURCES
        assert 0 < await redis.ttl(f"imc:lt:k:{user}") <= KNOWN_TTL
        await redis.delete(f"imc:lt:k:{user}", f"imc:lt:u:{user}")
