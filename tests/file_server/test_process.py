"""A real file_server process, as a gateway and two TeamTalk clients use it."""

from __future__ import annotations

import hashlib
import os

import aiohttp

from common.commands import Cmd, Rpcs
from common.link import Upstream
from common.pb import base_pb2, file_pb2, internal_pb2
from tests.file_server.conftest import TIMEOUT, FileServerProcess, RawClient

CHUNK = 32 * 1024
ALICE, BOB, MALLORY = 11, 12, 13


async def linked(server: FileServerProcess) -> Upstream:
    gateway = server.gateway()
    gateway.start()
    assert await gateway.wait_ready(TIMEOUT)
    return gateway


def task_req(size: int, mode: int, name: str = "report.pdf") -> internal_pb2.FileTaskReq:
    return internal_pb2.FileTaskReq(
        from_user_id=ALICE,
        to_user_id=BOB,
        file_name=name,
        file_size=size,
        trans_mode=mode,  # type: ignore[arg-type]
    )


def login(user_id: int, ticket: str, role: int) -> file_pb2.IMFileLoginReq:
    return file_pb2.IMFileLoginReq(user_id=user_id, task_id=ticket, file_role=role)  # type: ignore[arg-type]


async def test_online_transfer_and_a_third_user(file_server: FileServerProcess) -> None:
    data = os.urandom(200 * 1024 + 123)
    gateway = await linked(file_server)
    try:
        res = await gateway.call(Rpcs.FILE_TASK, task_req(len(data), base_pb2.FILE_TYPE_ONLINE), TIMEOUT)
        assert res.result_code == 0 and res.sender_task_id != res.receiver_task_id
        port = file_server.info["client_port"]
        assert [(a.ip, a.port) for a in res.ip_addr_list] == [("127.0.0.1", port)]

        # Mallory learned Bob's task id: not hers, so refused and cut off.
        mallory = await RawClient.connect(port)
        mallory.send(
            Cmd.FILE_LOGIN_REQ, login(MALLORY, res.receiver_task_id, base_pb2.CLIENT_REALTIME_RECVER), 7
        )
        refused, seq = await mallory.expect(Cmd.FILE_LOGIN_RES)
        assert refused.result_code != 0 and seq == 7
        assert await mallory.closed()
        # Claiming to be Bob with the sender's ticket fails too.
        mallory = await RawClient.connect(port)
        mallory.send(Cmd.FILE_LOGIN_REQ, login(BOB, res.sender_task_id, base_pb2.CLIENT_REALTIME_RECVER))
        refused, _ = await mallory.expect(Cmd.FILE_LOGIN_RES)
        assert refused.result_code != 0 and await mallory.closed()

        sender = await RawClient.connect(port)
        sender.send(Cmd.FILE_LOGIN_REQ, login(ALICE, res.sender_task_id, base_pb2.CLIENT_REALTIME_SENDER), 1)
        ok, _ = await sender.expect(Cmd.FILE_LOGIN_RES)
        assert ok.result_code == 0 and ok.task_id == res.sender_task_id
        receiver = await RawClient.connect(port)
        receiver.send(
            Cmd.FILE_LOGIN_REQ, login(BOB, res.receiver_task_id, base_pb2.CLIENT_REALTIME_RECVER), 1
        )
        ok, _ = await receiver.expect(Cmd.FILE_LOGIN_RES)
        assert ok.result_code == 0
        ready, _ = await receiver.expect(Cmd.FILE_STATE)
        assert ready.state == base_pb2.CLIENT_FILE_PEER_READY and ready.user_id == ALICE
        assert ready.task_id == res.receiver_task_id

        got = bytearray()
        seq = 100
        while len(got) < len(data):
            size = min(CHUNK, len(data) - len(got))
            receiver.send(
                Cmd.FILE_PULL_DATA_REQ,
                file_pb2.IMFilePullDataReq(
                    task_id=res.receiver_task_id,
                    user_id=BOB,
                    trans_mode=base_pb2.FILE_TYPE_ONLINE,
                    offset=len(got),
                    data_size=size,
                ),
                seq,
            )
            pull, _ = await sender.expect(Cmd.FILE_PULL_DATA_REQ)
            assert pull.task_id == res.sender_task_id and (pull.offset, pull.data_size) == (len(got), size)
            chunk = data[pull.offset : pull.offset + pull.data_size]
            sender.send(
                Cmd.FILE_PULL_DATA_RES,
                file_pb2.IMFilePullDataRsp(
                    result_code=0,
                    task_id=res.sender_task_id,
                    user_id=ALICE,
                    offset=pull.offset,
                    file_data=chunk,
                ),
            )
            rsp, rsp_seq = await receiver.expect(Cmd.FILE_PULL_DATA_RES)
            assert rsp_seq == seq and rsp.offset == len(got) and rsp.task_id == res.receiver_task_id
            got += rsp.file_data
            seq += 1
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
        receiver.send(
            Cmd.FILE_STATE,
            file_pb2.IMFileState(state=base_pb2.CLIENT_FILE_DONE, task_id=res.receiver_task_id, user_id=BOB),
        )
        done, _ = await sender.expect(Cmd.FILE_STATE)
        assert done.state == base_pb2.CLIENT_FILE_DONE and done.task_id == res.sender_task_id
        assert await sender.closed() and await receiver.closed()
    finally:
        await gateway.stop()


async def test_oversized_task_refused(file_server: FileServerProcess) -> None:
    gateway = await linked(file_server)
    try:
        res = await gateway.call(Rpcs.FILE_TASK, task_req((1 << 20) + 1, base_pb2.FILE_TYPE_ONLINE), TIMEOUT)
        assert res.result_code == base_pb2.FILE_SERVER_ERRNO_CREATE_TASK_ERROR and not res.sender_task_id
        assert "too_large" in res.reason
        info = await gateway.call(Rpcs.FILE_SERVER_INFO, internal_pb2.FileServerInfoReq(), TIMEOUT)
        assert [a.port for a in info.ip_addr_list] == [file_server.info["client_port"]]
    finally:
        await gateway.stop()
    url = f"http://127.0.0.1:{file_server.info['metrics_port']}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        text = await response.text()
    assert 'imcluster_file_refusals_total{reason="too_large"} 1.0' in text


async def upload(port: int, ticket: str, data: bytes) -> None:
    uploader = await RawClient.connect(port)
    uploader.send(Cmd.FILE_LOGIN_REQ, login(ALICE, ticket, base_pb2.CLIENT_OFFLINE_UPLOAD))
    ok, _ = await uploader.expect(Cmd.FILE_LOGIN_RES)
    assert ok.result_code == 0
    while True:
        frame = await uploader.frame()
        assert frame is not None
        if frame.command_id == Cmd.FILE_STATE:
            break
        assert frame.command_id == Cmd.FILE_PULL_DATA_REQ
        pull = file_pb2.IMFilePullDataReq.FromString(frame.body)
        assert pull.task_id == ticket and pull.data_size <= CHUNK
        uploader.send(
            Cmd.FILE_PULL_DATA_RES,
            file_pb2.IMFilePullDataRsp(
                result_code=0,
                task_id=ticket,
                user_id=ALICE,
                offset=pull.offset,
                file_data=data[pull.offset : pull.offset + pull.data_size],
            ),
        )
    done = file_pb2.IMFileState.FromString(frame.body)
    assert done.state == base_pb2.CLIENT_FILE_DONE
    assert await uploader.closed()


async def download(port: int, ticket: str, size: int) -> tuple[bytes, RawClient]:
    receiver = await RawClient.connect(port)
    receiver.send(Cmd.FILE_LOGIN_REQ, login(BOB, ticket, base_pb2.CLIENT_OFFLINE_DOWNLOAD))
    ok, _ = await receiver.expect(Cmd.FILE_LOGIN_RES)
    assert ok.result_code == 0
    got = bytearray()
    while len(got) < size:
        receiver.send(
            Cmd.FILE_PULL_DATA_REQ,
            file_pb2.IMFilePullDataReq(
                task_id=ticket,
                user_id=BOB,
                trans_mode=base_pb2.FILE_TYPE_OFFLINE,
                offset=len(got),
                data_size=min(CHUNK, size - len(got)),
            ),
            len(got) // CHUNK + 1,
        )
        rsp, seq = await receiver.expect(Cmd.FILE_PULL_DATA_RES)
        assert rsp.result_code == 0 and rsp.offset == len(got) and seq == len(got) // CHUNK + 1
        got += rsp.file_data
    done, _ = await receiver.expect(Cmd.FILE_STATE)
    assert done.state == base_pb2.CLIENT_FILE_DONE and done.user_id == ALICE
    return bytes(got), receiver


async def test_offline_file_survives_a_restart_and_a_delete_is_final(file_server: FileServerProcess) -> None:
    data = os.urandom(150 * 1024 + 7)
    gateway = await linked(file_server)
    try:
        res = await gateway.call(Rpcs.FILE_TASK, task_req(len(data), base_pb2.FILE_TYPE_OFFLINE), TIMEOUT)
        assert res.result_code == 0
        early = internal_pb2.FileOfflineReadyReq(
            from_user_id=ALICE, to_user_id=BOB, task_id=res.sender_task_id
        )
        assert (await gateway.call(Rpcs.FILE_OFFLINE_READY, early, TIMEOUT)).result_code != 0  # not uploaded
        await upload(file_server.info["client_port"], res.sender_task_id, data)
        ready = await gateway.call(Rpcs.FILE_OFFLINE_READY, early, TIMEOUT)
        assert ready.result_code == 0 and ready.file_size == len(data) and ready.file_name == "report.pdf"
        assert ready.receiver_task_id.startswith(ready.task_key)
        stranger = internal_pb2.FileOfflineReadyReq(
            from_user_id=MALLORY, to_user_id=BOB, task_id=res.sender_task_id
        )
        assert (await gateway.call(Rpcs.FILE_OFFLINE_READY, stranger, TIMEOUT)).result_code != 0
    finally:
        await gateway.stop()

    file_server.restart()
    port = file_server.info["client_port"]
    got, receiver = await download(port, ready.receiver_task_id, len(data))
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    receiver.close()

    gateway = await linked(file_server)
    try:
        delete = internal_pb2.FileOfflineDeleteReq(task_key=ready.task_key)
        await gateway.call(Rpcs.FILE_OFFLINE_DELETE, delete, TIMEOUT)
    finally:
        await gateway.stop()
    late = await RawClient.connect(port)
    late.send(Cmd.FILE_LOGIN_REQ, login(BOB, ready.receiver_task_id, base_pb2.CLIENT_OFFLINE_DOWNLOAD))
    refused, _ = await late.expect(Cmd.FILE_LOGIN_RES)
    assert refused.result_code != 0 and await late.closed()
