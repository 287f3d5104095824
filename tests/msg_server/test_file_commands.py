"""The gateway's file commands on an in-memory transport: answered, validated, refused."""

from __future__ import annotations

import pytest

from common.commands import Cmd
from common.pb import base_pb2, file_pb2
from msg_server.config import MsgServerConfig
from msg_server.gateway import Gateway, NoFileServer
from tests.protocol.fakes import feed, logged_in, settle
from tests.support.ttclient import with_raw_field

OFFLINE = base_pb2.FILE_TYPE_OFFLINE


def file_req(to: int = 8, name: str = "a.txt", size: int = 10) -> file_pb2.IMFileReq:
    return file_pb2.IMFileReq(
        from_user_id=999, to_user_id=to, file_name=name, file_size=size, trans_mode=OFFLINE
    )


async def test_file_request_without_a_file_server_is_refused_not_ignored() -> None:
    _, conn, transport, _ = await logged_in()
    feed(conn, Cmd.FILE_REQ, file_req(), seq=5)
    await settle()
    [(frame, res)] = transport.frames()
    assert (frame.command_id, frame.seq_num) == (Cmd.FILE_RES, 5)
    assert res.result_code == 1 and res.task_id == ""
    assert (res.from_user_id, res.to_user_id, res.file_name) == (conn.user_id, 8, "a.txt")
    assert not transport.closed


async def test_bad_file_requests_are_refused() -> None:
    _, conn, transport, _ = await logged_in()
    bad = [
        file_req(to=0),
        file_req(to=conn.user_id),
        file_req(size=0),
        file_req(name=""),
        file_req(name="x" * 300),
    ]
    for seq, req in enumerate(bad, 1):
        feed(conn, Cmd.FILE_REQ, req, seq=seq)
    feed(conn, Cmd.FILE_REQ, with_raw_field(file_req(), "file_name", b"\xff\xfe"), seq=9)
    await settle()
    frames = transport.frames()
    assert [f.seq_num for f, _ in frames] == [1, 2, 3, 4, 5, 9]
    assert all(f.command_id == Cmd.FILE_RES and r.result_code == 1 for f, r in frames)
    assert not transport.closed


async def test_a_malformed_file_request_closes_the_connection() -> None:
    _, conn, transport, _ = await logged_in()
    feed(conn, Cmd.FILE_REQ, b"\x08\x01", seq=3)  # lacks required fields
    assert transport.aborted


async def test_has_offline_is_answered_from_db_proxy() -> None:
    _, conn, transport, fake = await logged_in()
    listed = file_pb2.IMFileHasOfflineRsp(user_id=conn.user_id)
    fake.answers[Cmd.FILE_HAS_OFFLINE_REQ] = listed
    feed(conn, Cmd.FILE_HAS_OFFLINE_REQ, file_pb2.IMFileHasOfflineReq(user_id=1234, attach_data=b"x"), seq=4)
    await settle()
    [(frame, res)] = transport.frames()
    assert (frame.command_id, frame.seq_num) == (Cmd.FILE_HAS_OFFLINE_RES, 4)
    assert (res.user_id, list(res.offline_file_list), res.attach_data) == (conn.user_id, [], b"x")
    [(command, req)] = fake.requests
    assert command == Cmd.FILE_HAS_OFFLINE_REQ
    assert isinstance(req, file_pb2.IMFileHasOfflineReq) and req.user_id == conn.user_id


async def test_del_offline_with_a_bad_task_id_asks_nobody() -> None:
    _, conn, transport, fake = await logged_in()
    feed(
        conn,
        Cmd.FILE_DEL_OFFLINE_REQ,
        file_pb2.IMFileDelOfflineReq(from_user_id=1, to_user_id=2, task_id="nope"),
    )
    await settle()
    assert fake.requests == [] and transport.frames() == [] and not transport.closed


class FakeLink:
    def __init__(self, name: str, connected: bool) -> None:
        self.name = name
        self.connected = connected


def test_offline_files_go_to_the_first_up_file_server_online_ones_to_any() -> None:
    gateway = Gateway(MsgServerConfig(file_servers=("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3")))
    assert len(gateway.file_links) == 3 and set(gateway.file_links) <= set(gateway.all_links)
    a, b, c = FakeLink("a", False), FakeLink("b", True), FakeLink("c", True)
    gateway.file_links = [a, b, c]  # type: ignore[list-item]
    assert [gateway.file_link(offline=True).name for _ in range(3)] == ["b", "b", "b"]
    assert {gateway.file_link(offline=False).name for _ in range(4)} == {"b", "c"}
    b.connected = c.connected = False
    with pytest.raises(NoFileServer):
        gateway.file_link(offline=False)
    gateway.file_links = []
    with pytest.raises(NoFileServer, match="configured"):
        gateway.file_link(offline=True)


def test_the_gateway_refuses_names_storage_could_not_keep() -> None:
    from db_proxy.storage import schema
    from msg_server.handlers import files

    assert files.FILE_NAME_LIMIT == schema.OFFLINE_FILE_NAME_LIMIT
