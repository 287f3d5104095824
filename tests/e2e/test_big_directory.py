"""A big directory and a small, slow reader; a trickled frame after login.

100,000 users (one bulk INSERT, not one by one) make the all-users reply one
frame of several MB. A client with a 64 KiB receive buffer that reads it at
1 MiB/s used to be cut off as a slow reader at ~1 MB unsent; now the reply is
streamed as it reads and it gets all of them. A logged-in client trickling a
frame byte by byte is closed at partial_frame_timeout (set low for this cluster).
Its own cluster (one engine per run) for that setting.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import time
import urllib.request
from collections.abc import Iterator

import pytest

from common.codec import FrameDecoder, encode_frame
from common.commands import Cmd, decode_body
from common.pb import base_pb2, buddy_pb2, login_pb2, message_pb2
from db_proxy.passwords import md5_hex
from db_proxy.storage import SqlStore, open_store
from tests.e2e.conftest import PASSWORD, Cluster, running_cluster

BULK = 100_000
HASH = "scrypt$4$8$1$AA==$AA=="  # nobody logs in as them
READ = 64 * 1024  # one read of the slow client
# 2 MiB/s: the ~4.8 MB reply takes over two seconds to read, 75 times what the receive
# buffer holds (the 256 KiB/s would make this test take 20 s per engine).
READS_PER_SECOND = 32
PARTIAL_FRAME_TIMEOUT = 1.0
# Reading 100,000 users on SQLite and building their reply takes db_proxy seconds:
# more than the shared clusters' 5 s request_timeout leaves when the machine is busy.
# The flood test counts dispatches, not refusals: bursts above it (the rate limits' own tests
# are elsewhere).
BIG_CLUSTER = {
    "partial_frame_timeout": str(PARTIAL_FRAME_TIMEOUT),
    "request_timeout": "20",
    "msg_burst": "10000",
    "user_msg_burst": "10000",
    "request_burst": "10000",
}
FLOOD = 2000


@pytest.fixture(scope="module", params=["sqlite", "mysql+redis"])
def big(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("big")
    with running_cluster(request.param, tmp, msg=BIG_CLUSTER) as c:
        asyncio.run(bulk_users(c.database_url, BULK))
        yield c


async def bulk_users(database_url: str, count: int) -> None:
    """``count`` users in one multi-row INSERT per batch: seconds, where create_user each takes minutes."""
    store = open_store(database_url)
    assert isinstance(store, SqlStore)
    await store.open()
    try:
        now = int(time.time()) - 10
        async with store.db.transaction() as tx:
            [(department,)] = await tx.fetchall("SELECT MIN(id) FROM departments")
            rows = [
                (f"bulk{i:06d}", HASH, f"Bulk {i:06d}", f"bulk{i:06d}", department, now, now)
                for i in range(count)
            ]
            await tx.executemany(
                "INSERT INTO users (name, password_hash, nick, domain, department_id, created, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
    finally:
        await store.close()


class RawClient:
    """A client on a socket with a small receive buffer, reading when told."""

    def __init__(self, port: int, rcvbuf: int = 64 * 1024) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: the window
        self.port = port
        self.decoder = FrameDecoder(max_frame_size=64 << 20)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(self.sock, ("127.0.0.1", self.port))
        self.reader, self.writer = await asyncio.open_connection(sock=self.sock, limit=READ)

    def send(self, command: int, body: bytes, seq: int) -> None:
        assert self.writer is not None
        self.writer.write(encode_frame(command, body, seq))

    async def frame(self, pace: float = 0.0, timeout: float = 15.0) -> tuple[int, int, object]:
        """The next frame, reading at most READ bytes every ``pace`` seconds."""
        assert self.reader is not None
        deadline = time.monotonic() + timeout
        while (frame := self.decoder.next_frame()) is None:
            assert time.monotonic() < deadline, "no frame in time"
            data = await asyncio.wait_for(self.reader.read(READ), timeout)
            if not data:
                raise ConnectionError("closed by the server")
            self.decoder.feed(data)
            if pace:
                await asyncio.sleep(pace)
        return frame.command_id, frame.seq_num, decode_body(frame.command_id, frame.body)

    async def login(self, name: str) -> None:
        req = login_pb2.IMLoginReq(
            user_name=name,
            password=md5_hex(PASSWORD),
            online_status=base_pb2.USER_STATUS_ONLINE,
            client_type=base_pb2.CLIENT_TYPE_WINDOWS,
        )
        self.send(Cmd.LOGIN_REQ, req.SerializeToString(), 1)
        while True:
            command, seq, res = await self.frame()
            if (command, seq) == (Cmd.LOGIN_RES, 1):
                assert isinstance(res, login_pb2.IMLoginRes) and res.result_code == 0, res
                return

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def test_a_small_slow_reader_gets_the_whole_big_directory(big: Cluster) -> None:
    client = RawClient(big.gateway_port("msg-1"))
    await client.connect()
    try:
        await client.login("alice")
        req = buddy_pb2.IMAllUserReq(user_id=0, latest_update_time=0)
        client.send(Cmd.ALL_USER_REQ, req.SerializeToString(), 2)
        started = time.monotonic()
        while True:  # pushes (presence) may come first; bounded by frame's own timeout
            command, seq, res = await client.frame(pace=1 / READS_PER_SECOND, timeout=30.0)
            if (command, seq) == (Cmd.ALL_USER_RES, 2):
                break
        took = time.monotonic() - started
        assert isinstance(res, buddy_pb2.IMAllUserRsp)
        size = res.ByteSize()
        ids = {u.user_id for u in res.user_list}
        assert len(ids) >= BULK + len(big.users)
        # Streamed: several times what the kernel and a cut-off threshold of 1 MB hold,
        # and it took the reader's pace, so the gateway held it while the reader read.
        print(f"all-users reply: {size} bytes, read in {took:.2f} s")
        assert size > 4 * (1 << 20), size
        assert took > size / (READ * READS_PER_SECOND) * 0.5, (took, size)
        # Still a working connection afterwards.
        client.send(Cmd.HEARTBEAT, b"", 3)
        while (await client.frame())[:2] != (Cmd.HEARTBEAT, 3):
            pass
    finally:
        client.close()


async def test_a_trickled_frame_after_login_is_closed_at_partial_frame_timeout(big: Cluster) -> None:
    client = RawClient(big.gateway_port("msg-2"))
    await client.connect()
    try:
        await client.login("bob")
        assert client.writer is not None and client.reader is not None
        req = message_pb2.IMUnreadMsgCntReq(user_id=0, attach_data=b"a" * 64)
        frame = encode_frame(Cmd.UNREAD_CNT_REQ, req.SerializeToString(), 2)  # 82 bytes
        started = time.monotonic()
        closed_at = None
        for byte in frame[:-1]:  # one byte every 50 ms: 4 s for the frame, bounded by its length
            try:
                client.writer.write(bytes([byte]))
                await client.writer.drain()
            except ConnectionError:
                break
            if client.reader.at_eof():
                break
            try:
                data = await asyncio.wait_for(client.reader.read(READ), 0.05)
            except TimeoutError:
                continue
            if not data:  # closed by the gateway
                closed_at = time.monotonic()
                break
        assert closed_at is not None, "never closed"
        assert PARTIAL_FRAME_TIMEOUT <= closed_at - started < PARTIAL_FRAME_TIMEOUT + 1.0
    finally:
        client.close()


def metric(cluster: Cluster, server: str, name: str) -> float:
    port = cluster.local.by_name(server).info["metrics_port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(v) for v in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE))


async def test_a_flood_already_read_is_not_dispatched_while_paused(big: Cluster) -> None:
    """db_proxy frozen: the flood's first max_pending_requests (64) messages are dispatched
    and the rest wait, undecoded; thawed, all of them are stored and acked."""
    flooder = await big.client("carol", "msg-1")
    other = await big.client("dave", "msg-1")
    db = big.local.by_name("db-1").process
    assert db is not None
    dispatched = "imcluster_gateway_messages_in_total"
    before = metric(big, "msg-1", dispatched)
    frames = b"".join(
        encode_frame(
            Cmd.MSG_DATA,
            message_pb2.IMMsgData(
                from_user_id=0,
                to_session_id=big.users["erin"],
                msg_id=i + 1,
                create_time=0,
                msg_type=base_pb2.MSG_TYPE_SINGLE_TEXT,
                msg_data=b"flood",
            ).SerializeToString(),
        )  # seq 0: the acks land among the client's pushes
        for i in range(FLOOD)
    )
    os.kill(db.pid, signal.SIGSTOP)  # well under the links' 3 s silence limit
    try:
        flooder.send_raw(frames)
        for _ in range(100):  # until the gateway took its 64 (bounded: 100 looks, ~1 s)
            if metric(big, "msg-1", dispatched) - before >= 64:
                break
            await asyncio.sleep(0.01)
        # Markers: the gateway answered another client twice since; nothing more went through.
        for _ in range(2):
            command, _ = await other.request(Cmd.HEARTBEAT, b"")
            assert command == Cmd.HEARTBEAT
        assert metric(big, "msg-1", dispatched) - before == 64
    finally:
        os.kill(db.pid, signal.SIGCONT)
    try:
        for _ in range(FLOOD):
            await flooder.next_push(Cmd.MSG_DATA_ACK, timeout=15)
        assert metric(big, "msg-1", dispatched) - before == FLOOD
    finally:
        await flooder.close()
        await other.close()
