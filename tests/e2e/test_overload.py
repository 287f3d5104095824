"""Overload answers fast, and one conversation's flood cannot take another's capacity (issue 10).

Measured on main: a flood into one conversation filled its db_proxy worker
queue and an unrelated conversation on that worker lost 29 of 89 messages to
"overloaded"; a message that could not be stored got no answer until the
client's own timeout (6 s after a db_proxy kill, up to 26 s in a database
stall). Here the cluster has one message worker with a small queue, so both
conversations share it: the flood fills only its conversation's share, a job
that has waited ``MAX_QUEUE_WAIT`` behind a stalled database is refused, and
with db_proxy gone requests that have a reply are answered with a refusal at
once. The kill runs last: it breaks the module's cluster (restarted after).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sqlite3
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiomysql
import pytest

from common.commands import Cmd
from common.pb import base_pb2, buddy_pb2, message_pb2
from db_proxy.storage.mysql import MysqlUrl
from db_proxy.workers import MAX_QUEUE_WAIT
from imctl.cluster import LocalCluster, write_secret_file
from tests.e2e.conftest import REDIS_URL, USERS, Cluster, create_users
from tests.support.databases import fresh_mysql_url
from tests.support.delivery_logs import fresh_delivery_log_url
from tests.support.ttclient import TTClient

QUEUE_SIZE = 32  # per worker; a conversation may hold a quarter of it
VICTIM_MESSAGES = 89
RATE_LIMITS = ("msg_rate", "msg_burst", "user_msg_rate", "user_msg_burst", "request_rate", "request_burst")


@contextlib.contextmanager
def small_cluster(engine: str, tmp: Path) -> Iterator[Cluster]:
    """One gateway, one db_proxy with a single small message worker."""
    with contextlib.ExitStack() as stack:
        if engine == "sqlite":
            database_url, redis_url, log_url = f"sqlite:///{tmp}/im.db", None, "memory://"
        else:
            log_url = stack.enter_context(fresh_delivery_log_url("redis"))
            database_url, redis_url = stack.enter_context(fresh_mysql_url()), REDIS_URL
        users = asyncio.run(create_users(database_url, USERS, []))
        local = LocalCluster(
            tmp,
            None,
            gateways=1,
            base_port=0,
            database_url=database_url,
            redis_url=redis_url,
            delivery_log=log_url,
            secret_file=write_secret_file(tmp / "cluster.secret"),
            files=False,
        )
        # The gateway's rate limits out of the way: one flooding connection
        # stands for what many senders (many gateways) bring one conversation.
        unlimited = {key: "1000000" for key in RATE_LIMITS}
        local.extra = {
            "db": {"workers": "1", "queue_size": str(QUEUE_SIZE)},
            "msg": {"request_timeout": "5", **unlimited},
        }
        stack.callback(local.stop)
        local.start()
        cluster = Cluster(local, database_url, redis_url, users)
        yield cluster
        local.stop()
        cluster.assert_no_tracebacks()


@pytest.fixture(scope="module", params=["sqlite", "mysql+redis"])
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with small_cluster(request.param, tmp_path_factory.mktemp("overload")) as started:
        yield started


def metric(cluster: Cluster, server: str, series: str) -> float:
    """One exact series (``name{label="x",...}``) of a server's /metrics; 0 if not exposed yet."""
    port = cluster.local.by_name(server).info["metrics_port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def ametric(cluster: Cluster, server: str, series: str) -> float:
    return await asyncio.to_thread(metric, cluster, server, series)


async def wait_metric(cluster: Cluster, server: str, series: str, above: float, timeout: float) -> float:
    """Poll until the series exceeds ``above``; the seconds it took."""
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        while await ametric(cluster, server, series) <= above:
            await asyncio.sleep(0.05)
    return time.monotonic() - started


def refused(reason: str) -> str:
    return f'imcluster_db_jobs_refused_total{{reason="{reason}"}}'


async def flood_refusals(cluster: Cluster) -> float:
    """A flood's refusals: its conversation's share full, or its wait past save_max_wait (issue 12)."""
    return await ametric(cluster, "db-1", refused("conversation_full")) + await ametric(
        cluster, "db-1", refused("expected_wait")
    )


async def time_refusals(cluster: Cluster) -> float:
    """Refusals by time: at admission (expected_wait, issue 12) or after waiting (queue_timeout)."""
    return await ametric(cluster, "db-1", refused("expected_wait")) + await ametric(
        cluster, "db-1", refused("queue_timeout")
    )


def gateway_refused(command: str, kind: str) -> str:
    return f'imcluster_gateway_refused_total{{command="{command}",kind="{kind}"}}'


def text(to: int, body: bytes, client_msg_id: int) -> message_pb2.IMMsgData:
    return message_pb2.IMMsgData(
        from_user_id=0,
        to_session_id=to,
        msg_id=client_msg_id,
        create_time=0,
        msg_type=base_pb2.MSG_TYPE_SINGLE_TEXT,
        msg_data=body,
    )


async def flood(client: TTClient, to: int, stop: asyncio.Event, limit: int, duration: float) -> int:
    """Bursts of pipelined messages into one conversation until ``stop``, bounded in
    count and time; how many were sent."""
    assert client.writer is not None
    sent = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(duration):
            while sent < limit and not stop.is_set():
                for _ in range(50):  # more at once than the conversation's share
                    sent += 1
                    client.send(Cmd.MSG_DATA, text(to, b"flood-%d" % sent, sent))
                await client.writer.drain()
                await asyncio.sleep(0.02)
    return sent


async def test_a_flood_into_one_conversation_leaves_another_on_the_same_worker_whole(
    cluster: Cluster, clients: list[TTClient]
) -> None:
    carol, alice = await cluster.client("carol"), await cluster.client("alice")
    clients += [carol, alice]
    stop = asyncio.Event()
    flooding = asyncio.create_task(flood(carol, cluster.users["dave"], stop, limit=20_000, duration=20))
    try:
        # The flood is at its conversation's share (or at its time bound,
        # expected_wait) before the victim starts.
        async with asyncio.timeout(10):
            while await flood_refusals(cluster) == 0:
                await asyncio.sleep(0.05)
        before = await flood_refusals(cluster)
        acked = []
        for i in range(VICTIM_MESSAGES):
            ack = await alice.send_text(
                cluster.users["bob"], b"victim-%d" % i, client_msg_id=i + 1, timeout=5
            )
            acked.append(ack.msg_id)
        during = await flood_refusals(cluster) - before
        assert not flooding.done(), "the flood ended before the victim did"
    finally:
        stop.set()
        await flooding
    assert len(acked) == VICTIM_MESSAGES  # every one of them, none refused
    assert acked == sorted(acked) and len(set(acked)) == VICTIM_MESSAGES
    assert during > 0, "the flood was not being refused while the victim sent"
    assert await ametric(cluster, "db-1", refused("worker_full")) == 0


@contextlib.asynccontextmanager
async def database_stalled(cluster: Cluster) -> AsyncIterator[None]:
    """Another connection holds the write lock of the messages: SQLite's, or LOCK TABLES on MariaDB."""
    if cluster.database_url.startswith("sqlite:"):
        conn = sqlite3.connect(cluster.database_url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield
            conn.execute("ROLLBACK")
        finally:
            conn.close()
        return
    url = MysqlUrl.parse(cluster.database_url)
    mysql = await aiomysql.connect(db=url.database, autocommit=True, **url.connect_args())
    try:
        async with mysql.cursor() as cursor:
            await cursor.execute("LOCK TABLES messages WRITE")
            yield
            await cursor.execute("UNLOCK TABLES")
    finally:
        mysql.close()


async def test_a_stalled_database_refuses_within_seconds_and_loses_nothing_acked(
    cluster: Cluster, clients: list[TTClient]
) -> None:
    alice = await cluster.client("alice")
    clients.append(alice)
    bob = cluster.users["bob"]
    overloaded = await ametric(cluster, "msg-1", gateway_refused("msg_data", "overloaded"))
    timed_out = await time_refusals(cluster)
    sends: list[asyncio.Task[message_pb2.IMMsgDataAck]] = []
    async with database_stalled(cluster):
        # The first message's transaction waits on the lock (it is never
        # abandoned); what queues behind it waits MAX_QUEUE_WAIT, then is refused.
        sends.append(asyncio.create_task(alice.send_text(bob, b"stall-0", client_msg_id=1000, timeout=20)))
        await asyncio.sleep(0.2)  # let it reach its transaction (not an assertion's wait)
        started = time.monotonic()
        for i in range(1, 4):
            sends.append(
                asyncio.create_task(alice.send_text(bob, b"stall-%d" % i, client_msg_id=1000 + i, timeout=20))
            )
        # No ack for them (TeamTalk's ack cannot say "refused"), but the gateway counts them.
        async with asyncio.timeout(MAX_QUEUE_WAIT + 4):
            while await ametric(cluster, "msg-1", gateway_refused("msg_data", "overloaded")) < overloaded + 3:
                await asyncio.sleep(0.05)
        waited = time.monotonic() - started
        assert waited < MAX_QUEUE_WAIT + 1.5, f"refused after {waited:.1f} s"
        assert await time_refusals(cluster) >= timed_out + 3
        probes = sends[1:]
        assert not any(task.done() and not task.exception() for task in probes)  # none acked
        for task in probes:  # refused: their acks will never come
            task.cancel()
    # Released: the transaction that waited on the lock commits and is acked
    # (on both engines), new messages are acked again, and every ack names a
    # stored message.
    first = await sends[0]
    after = await alice.send_text(bob, b"after-stall", client_msg_id=2000, timeout=10)
    acked = {first.msg_id: b"stall-0", after.msg_id: b"after-stall"}
    reader = await cluster.client("bob")
    clients.append(reader)
    page = await reader.msg_list(alice.user_id, count=50)
    stored = {m.msg_id: m.msg_data for m in page.msg_list}
    for msg_id, body in acked.items():
        assert stored.get(msg_id) == body, f"acked message {msg_id} lost"


async def test_with_db_proxy_killed_requests_are_refused_at_once(
    cluster: Cluster, clients: list[TTClient]
) -> None:
    alice = await cluster.client("alice")
    clients.append(alice)
    db = cluster.local.by_name("db-1")
    assert db.process is not None
    unavailable = await ametric(cluster, "msg-1", gateway_refused("msg_data", "unavailable"))
    os.kill(db.process.pid, signal.SIGKILL)
    db.process.wait(10)
    started = time.monotonic()
    unread = await alice.unread()  # no result_code: an empty answer
    assert unread.total_cnt == 0
    sign = await alice.call(
        Cmd.CHANGE_SIGN_INFO_REQ, buddy_pb2.IMChangeSignInfoReq(user_id=0, sign_info="away"), timeout=5
    )
    assert isinstance(sign, buddy_pb2.IMChangeSignInfoRsp) and sign.result_code != 0
    alice.send(Cmd.MSG_DATA, text(cluster.users["bob"], b"no-db", 3000))  # no ack: counted
    await wait_metric(cluster, "msg-1", gateway_refused("msg_data", "unavailable"), unavailable, timeout=5)
    elapsed = time.monotonic() - started
    assert elapsed < 1.5, f"answered after {elapsed:.1f} s"
    # Back on the same port, the gateway relinks and messages are acked again.
    db.overrides["port"] = str(db.info["port"])
    db.start(cluster.local.config_path)
    assert db.wait_ready(30), db.log_file.read_text()[-2000:]
    async with asyncio.timeout(15):
        while True:
            try:
                await alice.send_text(cluster.users["bob"], b"db-back", client_msg_id=3001, timeout=2)
                break
            except TimeoutError:
                continue
