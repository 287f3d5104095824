"""File transfer across real processes: the gateway hands out tasks, the file server carries data.

Online between users on different gateways, offline through the store (listed,
downloaded, deleted: then gone), an oversized file refused, a ticket used by a
third user refused, and an offline file that outlives a kill -9 of the file server.
The restart test is last: it breaks the module's cluster for a while.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import urllib.request

from common.commands import Cmd
from common.pb import base_pb2, file_pb2
from tests.e2e.conftest import Cluster
from tests.support.file_client import FileClient, digest
from tests.support.ttclient import TTClient

FILES = True

ONLINE = base_pb2.FILE_TYPE_ONLINE
OFFLINE = base_pb2.FILE_TYPE_OFFLINE
SENDER = base_pb2.CLIENT_REALTIME_SENDER
RECVER = base_pb2.CLIENT_REALTIME_RECVER
UPLOAD = base_pb2.CLIENT_OFFLINE_UPLOAD
DOWNLOAD = base_pb2.CLIENT_OFFLINE_DOWNLOAD
DONE = base_pb2.CLIENT_FILE_DONE


def payload(size: int, seed: int) -> bytes:
    return bytes((i * 31 + seed) % 251 for i in range(size))


async def ask(
    client: TTClient, to: int, name: str, size: int, mode: base_pb2.TransferFileType.ValueType
) -> file_pb2.IMFileRsp:
    req = file_pb2.IMFileReq(from_user_id=0, to_user_id=to, file_name=name, file_size=size, trans_mode=mode)
    command, res = await client.request(Cmd.FILE_REQ, req)
    assert command == Cmd.FILE_RES and isinstance(res, file_pb2.IMFileRsp)
    return res


async def has_offline(client: TTClient) -> file_pb2.IMFileHasOfflineRsp:
    command, res = await client.request(Cmd.FILE_HAS_OFFLINE_REQ, file_pb2.IMFileHasOfflineReq(user_id=0))
    assert command == Cmd.FILE_HAS_OFFLINE_RES and isinstance(res, file_pb2.IMFileHasOfflineRsp)
    return res


async def file_client(user_id: int, addresses: list[base_pb2.IpAddr], opened: list[FileClient]) -> FileClient:
    client = FileClient(user_id)
    await client.connect(addresses)
    opened.append(client)
    return client


async def upload_offline(
    sender: TTClient, to: int, data: bytes, name: str, opened: list[FileClient]
) -> file_pb2.IMFileRsp:
    """An offline file uploaded and announced (IMFileAddOfflineReq)."""
    rsp = await ask(sender, to, name, len(data), OFFLINE)
    assert rsp.result_code == 0 and rsp.task_id and rsp.ip_addr_list, rsp
    uploader = await file_client(sender.user_id, list(rsp.ip_addr_list), opened)
    assert (await uploader.login(rsp.task_id, UPLOAD)).result_code == 0
    assert (await uploader.serve(data)).state == DONE
    await uploader.close()
    sender.send(
        Cmd.FILE_ADD_OFFLINE_REQ,
        file_pb2.IMFileAddOfflineReq(
            from_user_id=0, to_user_id=to, task_id=rsp.task_id, file_name=name, file_size=len(data)
        ),
    )
    return rsp


async def test_online_transfer_across_gateways(cluster: Cluster, clients: list[TTClient]) -> None:
    alice = await cluster.client("alice", "msg-1")
    bob = await cluster.client("bob", "msg-2")
    clients += [alice, bob]
    data = payload(100_000, 1)
    rsp = await ask(alice, bob.user_id, "photo.jpg", len(data), ONLINE)
    assert rsp.result_code == 0 and rsp.task_id and rsp.ip_addr_list, rsp
    assert (rsp.from_user_id, rsp.to_user_id, rsp.file_name) == (alice.user_id, bob.user_id, "photo.jpg")
    notify = await bob.next_push(Cmd.FILE_NOTIFY)
    assert (notify.from_user_id, notify.to_user_id, notify.file_size) == (
        alice.user_id,
        bob.user_id,
        len(data),
    )
    assert notify.trans_mode == ONLINE and notify.offline_ready == 0
    assert notify.task_id != rsp.task_id  # each has a ticket of its own
    opened: list[FileClient] = []
    try:
        sender = await file_client(alice.user_id, list(rsp.ip_addr_list), opened)
        receiver = await file_client(bob.user_id, list(notify.ip_addr_list), opened)
        assert (await sender.login(rsp.task_id, SENDER)).result_code == 0
        assert (await receiver.login(notify.task_id, RECVER)).result_code == 0
        _, _, ready = await receiver.next(Cmd.FILE_STATE)
        assert ready.state == base_pb2.CLIENT_FILE_PEER_READY
        serving = asyncio.create_task(sender.serve(data))
        got = await receiver.pull(len(data), ONLINE)
        receiver.state(DONE)
        assert (await asyncio.wait_for(serving, 10)).state == DONE
        assert digest(got) == digest(data)
    finally:
        for client in opened:
            await client.close()


async def test_online_transfer_to_an_offline_user_is_refused(
    cluster: Cluster, clients: list[TTClient]
) -> None:
    alice = await cluster.client("alice", "msg-1")
    clients.append(alice)
    rsp = await ask(alice, cluster.users["heidi"], "a.txt", 10, ONLINE)
    assert rsp.result_code == 1 and rsp.task_id == ""


def refusals(cluster: Cluster, gateway: str, reason: str) -> float:
    port = cluster.local.by_name(gateway).info["metrics_port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = re.search(rf'^imcluster_gateway_file_refusals_total{{reason="{reason}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


async def test_oversized_file_is_refused(cluster: Cluster, clients: list[TTClient]) -> None:
    alice = await cluster.client("alice", "msg-1")
    clients.append(alice)
    before = await asyncio.to_thread(refusals, cluster, "msg-1", "file_server")
    rsp = await ask(alice, cluster.users["bob"], "huge.iso", 2**32 - 1, OFFLINE)
    assert rsp.result_code == 1 and rsp.task_id == "" and not rsp.ip_addr_list
    assert await asyncio.to_thread(refusals, cluster, "msg-1", "file_server") == before + 1


async def test_offline_transfer_listed_downloaded_deleted(cluster: Cluster, clients: list[TTClient]) -> None:
    alice = await cluster.client("alice", "msg-1")
    carol = await cluster.client("carol", "msg-2")
    clients += [alice, carol]
    data = payload(70_000, 2)
    opened: list[FileClient] = []
    try:
        rsp = await upload_offline(alice, carol.user_id, data, "notes.txt", opened)
        notify = await carol.next_push(Cmd.FILE_NOTIFY)
        assert (notify.trans_mode, notify.offline_ready, notify.file_name) == (OFFLINE, 1, "notes.txt")
        listed = await has_offline(carol)
        [info] = listed.offline_file_list
        assert (info.from_user_id, info.task_id, info.file_size) == (alice.user_id, notify.task_id, len(data))
        assert listed.ip_addr_list
        downloader = await file_client(carol.user_id, list(listed.ip_addr_list), opened)
        assert (await downloader.login(info.task_id, DOWNLOAD)).result_code == 0
        got = await downloader.pull(len(data), OFFLINE)
        assert digest(got) == digest(data)
        _, _, done = await downloader.next(Cmd.FILE_STATE)
        assert done.state == DONE
        await downloader.close()
        # Someone else cannot delete it: refused (counted: the marker it was handled by).
        dave = await cluster.client("dave", "msg-1")
        clients.append(dave)
        refused_before = refusals(cluster, "msg-1", "not_found")
        dave.send(
            Cmd.FILE_DEL_OFFLINE_REQ,
            file_pb2.IMFileDelOfflineReq(from_user_id=0, to_user_id=carol.user_id, task_id=info.task_id),
        )
        async with asyncio.timeout(10):
            while refusals(cluster, "msg-1", "not_found") == refused_before:
                await asyncio.sleep(0.05)
        assert [f.task_id for f in (await has_offline(carol)).offline_file_list] == [info.task_id]
        carol.send(
            Cmd.FILE_DEL_OFFLINE_REQ,
            file_pb2.IMFileDelOfflineReq(from_user_id=0, to_user_id=carol.user_id, task_id=info.task_id),
        )
        async with asyncio.timeout(10):
            while (await has_offline(carol)).offline_file_list:
                await asyncio.sleep(0.05)
        # Gone from the file server too (it is told after the list, by a second call): the old
        # ticket opens nothing once it has been.
        async with asyncio.timeout(10):
            while True:
                again = await file_client(carol.user_id, list(listed.ip_addr_list), opened)
                if (await again.login(info.task_id, DOWNLOAD)).result_code != 0:
                    break
                await again.close()
                await asyncio.sleep(0.05)
        await asyncio.wait_for(again.closed.wait(), 5)
        assert rsp.task_id != info.task_id
    finally:
        for client in opened:
            await client.close()


async def test_a_third_user_with_a_ticket_is_refused(cluster: Cluster, clients: list[TTClient]) -> None:
    alice = await cluster.client("alice", "msg-1")
    bob = await cluster.client("bob", "msg-2")
    clients += [alice, bob]
    rsp = await ask(alice, bob.user_id, "secret.doc", 1000, ONLINE)
    notify = await bob.next_push(Cmd.FILE_NOTIFY)
    opened: list[FileClient] = []
    try:
        dave = cluster.users["dave"]
        for ticket, role in ((notify.task_id, RECVER), (rsp.task_id, SENDER), (notify.task_id, DOWNLOAD)):
            thief = await file_client(dave, list(rsp.ip_addr_list), opened)
            assert (await thief.login(ticket, role)).result_code != 0
            await asyncio.wait_for(thief.closed.wait(), 5)
        # Bob's own ticket in alice's hands is no better.
        thief = await file_client(alice.user_id, list(rsp.ip_addr_list), opened)
        assert (await thief.login(notify.task_id, RECVER)).result_code != 0
        await asyncio.wait_for(thief.closed.wait(), 5)
    finally:
        for client in opened:
            await client.close()


async def test_offline_file_survives_a_file_server_kill(cluster: Cluster, clients: list[TTClient]) -> None:
    alice = await cluster.client("alice", "msg-1")
    erin = await cluster.client("erin", "msg-2")
    clients += [alice, erin]
    data = payload(50_000, 3)
    opened: list[FileClient] = []
    try:
        await upload_offline(alice, erin.user_id, data, "keep.bin", opened)
        await erin.next_push(Cmd.FILE_NOTIFY)
        server = cluster.local.by_name("file-1")
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(10)
        # Same ports: the gateways' file_servers and the tickets' addresses name them.
        server.overrides["port"] = str(server.info["port"])
        server.overrides["client_port"] = str(server.info["client_port"])
        server.start(cluster.local.config_path)
        assert server.wait_ready(30), server.log_file.read_text()[-2000:]
        async with asyncio.timeout(15):  # until erin's gateway has relinked
            while not (listed := await has_offline(erin)).ip_addr_list:
                await asyncio.sleep(0.1)
        [info] = listed.offline_file_list
        downloader = await file_client(erin.user_id, list(listed.ip_addr_list), opened)
        assert (await downloader.login(info.task_id, DOWNLOAD)).result_code == 0
        assert digest(await downloader.pull(len(data), OFFLINE)) == digest(data)
    finally:
        for client in opened:
            await client.close()
