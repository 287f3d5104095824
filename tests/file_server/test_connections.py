"""Client connections of an in-process file server on real sockets: what closes
a connection (only that one), and that it is counted."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from common.codec import encode_frame
from common.commands import Cmd
from common.pb import base_pb2, file_pb2, other_pb2
from file_server.config import FileServerConfig
from file_server.server import FileServer
from file_server.tasks import RECEIVER, SENDER, Task
from tests.file_server.conftest import RawClient, cluster

ALICE, BOB = 11, 12


def refusals(reason: str) -> float:
    return REGISTRY.get_sample_value("imcluster_file_refusals_total", {"reason": reason}) or 0.0


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[FileServer]:
    config = FileServerConfig(
        port=0,
        client_port=0,
        metrics_port=-1,
        store=str(tmp_path / "store"),
        max_chunk_size=16 * 1024,
        max_connections=4,
        task_idle_timeout=0.5,
        cluster=cluster(),
    )
    made = FileServer(config)
    await made.listen_clients("127.0.0.1", 0)
    yield made
    await made.close()


def online_task(server: FileServer, size: int = 50_000) -> Task:
    return server.tasks.create(ALICE, BOB, "a.txt", size, base_pb2.FILE_TYPE_ONLINE, 0.0, 0.0, 1.0)


async def heartbeat_answered(client: RawClient) -> bool:
    client.send(Cmd.HEARTBEAT, other_pb2.IMHeartBeat(), 77)
    _, seq = await client.expect(Cmd.HEARTBEAT)
    return seq == 77


async def test_a_frame_before_login_closes_only_that_connection(server: FileServer) -> None:
    before = refusals("before_login")
    bystander = await RawClient.connect(server.client_port)
    assert await heartbeat_answered(bystander)  # a heartbeat is fine before login
    rude = await RawClient.connect(server.client_port)
    pull = file_pb2.IMFilePullDataReq(
        task_id="x", user_id=1, trans_mode=base_pb2.FILE_TYPE_ONLINE, offset=0, data_size=1
    )
    rude.send(Cmd.FILE_PULL_DATA_REQ, pull)
    assert await rude.closed()
    assert refusals("before_login") == before + 1
    assert await heartbeat_answered(bystander)


@pytest.mark.parametrize(
    "garbage",
    [
        struct.pack(">IHHHHHH", 16 + 16 * 1024 + 1025, 1, 0, 5, 0x0504, 0, 0),  # past max_chunk_size + 1 KiB
        struct.pack(">IHHHHHH", 3, 1, 0, 5, 0x0501, 0, 0),  # shorter than its header
        encode_frame(Cmd.FILE_LOGIN_REQ, b"\x08\x0b"),  # a login without its required fields
        encode_frame(0x0401, b""),  # not a file server command
    ],
    ids=["oversized", "short", "bad_body", "foreign"],
)
async def test_a_bad_frame_closes_the_connection(server: FileServer, garbage: bytes) -> None:
    before = refusals("bad_frame") + refusals("before_login")
    client = await RawClient.connect(server.client_port)
    client.send_raw(garbage)
    assert await client.closed()
    assert refusals("bad_frame") + refusals("before_login") == before + 1


async def test_a_wrong_chunk_closes_the_sender_and_cancels_the_receiver(server: FileServer) -> None:
    task = online_task(server)
    sender = await RawClient.connect(server.client_port)
    receiver = await RawClient.connect(server.client_port)
    s_ticket, r_ticket = task.tickets[SENDER], task.tickets[RECEIVER]
    login = file_pb2.IMFileLoginReq
    sender.send(Cmd.FILE_LOGIN_REQ, login(user_id=ALICE, task_id=s_ticket, file_role=SENDER))
    await sender.expect(Cmd.FILE_LOGIN_RES)
    receiver.send(Cmd.FILE_LOGIN_REQ, login(user_id=BOB, task_id=r_ticket, file_role=RECEIVER))
    await receiver.expect(Cmd.FILE_LOGIN_RES)
    await receiver.expect(Cmd.FILE_STATE)
    pull = file_pb2.IMFilePullDataReq(
        task_id=r_ticket, user_id=BOB, trans_mode=base_pb2.FILE_TYPE_ONLINE, offset=0, data_size=100
    )
    receiver.send(Cmd.FILE_PULL_DATA_REQ, pull, 5)
    await sender.expect(Cmd.FILE_PULL_DATA_REQ)
    before = refusals("too_much_data")
    sender.send(
        Cmd.FILE_PULL_DATA_RES,
        file_pb2.IMFilePullDataRsp(
            result_code=0, task_id=s_ticket, user_id=ALICE, offset=0, file_data=b"x" * 101
        ),
    )
    assert await sender.closed()
    cancel, _ = await receiver.expect(Cmd.FILE_STATE)
    assert cancel.state == base_pb2.CLIENT_FILE_CANCEL and cancel.task_id == r_ticket
    assert await receiver.closed()
    assert refusals("too_much_data") == before + 1
    assert server.tasks.open_count == 0


async def test_no_login_in_time_and_too_many_connections(server: FileServer) -> None:
    before = refusals("login_timeout"), refusals("too_many_connections")
    clients = [await RawClient.connect(server.client_port) for _ in range(4)]
    extra = await RawClient.connect(server.client_port)
    assert await extra.closed(2.0)
    assert refusals("too_many_connections") == before[1] + 1
    for client in clients:
        assert await client.closed(2.0)  # task_idle_timeout (0.5 s) without a login
    assert refusals("login_timeout") == before[0] + 4
    assert not server.clients
