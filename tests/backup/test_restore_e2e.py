"""``imctl backup`` of a running cluster, ``imctl restore`` into a wiped one, and a cluster
started on the restored data: every message (ids, bodies, order), user and group id, group
member, unread count and stored picture is back, and new messages continue the msg ids.

Run on SQLite, on MariaDB + Redis, and from SQLite into MariaDB (the way off the embedded
default). While the backup runs a client keeps sending: what the backup holds of that
conversation is a prefix of what was acked (one consistent snapshot)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from common.commands import Cmd
from common.pb import base_pb2, group_pb2
from db_proxy.storage.mysql import drop_database
from imctl.cluster import LocalCluster, write_secret_file
from tests.e2e.conftest import FAST_SENDER, REDIS_URL, USERS, Cluster, create_users
from tests.e2e.test_groups import create_group, group_list
from tests.msfs import clients as msfs_clients
from tests.msfs.conftest import get, http
from tests.support.databases import fresh_mysql_url
from tests.support.delivery_logs import fresh_delivery_log_url
from tests.support.ttclient import TTClient

pytestmark = pytest.mark.e2e

CASES = [
    pytest.param("sqlite", "sqlite", id="sqlite"),
    pytest.param("mysql", "mysql", id="mysql", marks=pytest.mark.mysql),
    pytest.param("sqlite", "mysql", id="sqlite-to-mysql", marks=pytest.mark.mysql),
]


@contextlib.contextmanager
def cluster_on(run_dir: Path, database_url: str, store: Path) -> Iterator[Cluster]:
    """A cluster (file_server and msfs on ``store``) on an existing database."""
    with contextlib.ExitStack() as stack:
        mysql = database_url.startswith("mysql://")
        log_url = stack.enter_context(fresh_delivery_log_url("redis")) if mysql else "memory://"
        local = LocalCluster(
            run_dir,
            None,
            gateways=2,
            base_port=0,
            database_url=database_url,
            redis_url=REDIS_URL if mysql else None,
            delivery_log=log_url,
            secret_file=write_secret_file(run_dir / "cluster.secret"),
            files=True,
            store_dir=store,
        )
        local.extra = {"msg": {"request_timeout": "5", **FAST_SENDER}}
        stack.callback(local.stop)
        local.start()
        cluster = Cluster(local, database_url, REDIS_URL if mysql else None, {})
        yield cluster
        local.stop()
        cluster.assert_no_tracebacks()


async def imctl(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "imctl", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def login(cluster: Cluster, names: list[str]) -> dict[str, TTClient]:
    return {name: await cluster.client(name) for name in names}


async def group_members(client: TTClient, group_id: int) -> list[int]:
    res = await client.call(
        Cmd.GROUP_INFO_REQ,
        group_pb2.IMGroupInfoListReq(
            user_id=0, group_version_list=[base_pb2.GroupVersionInfo(group_id=group_id, version=0)]
        ),
    )
    (info,) = res.group_info_list
    return sorted(info.group_member_list)


async def conversation(client: TTClient, peer: int) -> list[tuple[int, int, bytes]]:
    """Every message of a 1:1 conversation, paged back from the latest (bounded)."""
    found: list[Any] = []
    begin = 0
    for _ in range(200):
        page = list((await client.msg_list(peer, begin=begin, count=50)).msg_list)
        found += page
        lowest = min((m.msg_id for m in page), default=1)
        if lowest <= 1:
            break
        begin = lowest - 1
    return messages(found)


def messages(listed: Any) -> list[tuple[int, int, bytes]]:
    return sorted((m.msg_id, m.from_session_id, m.msg_data) for m in listed)


async def state(users: dict[str, TTClient], group_id: int) -> dict[str, Any]:
    """What the clients see: ids, conversations, unread counts, the group."""
    alice, bob, carol, dave = (users[n] for n in ("alice", "bob", "carol", "dave"))
    unread = {}
    for name, client in users.items():
        res = await client.unread()
        unread[name] = sorted(
            (u.session_id, u.session_type, u.unread_cnt, u.latest_msg_id) for u in res.unreadinfo_list
        )
    return {
        "ids": {name: c.user_id for name, c in users.items()},
        "alice-bob": await conversation(alice, bob.user_id),
        "bob-carol": await conversation(bob, carol.user_id),
        "alice-dave": await conversation(dave, alice.user_id),
        "group": messages(await group_list(alice, group_id)),
        "members": await group_members(carol, group_id),
        "unread": unread,
    }


async def talk(users: dict[str, TTClient]) -> int:
    """1:1 and group messages; the group's id."""
    alice, bob, carol = users["alice"], users["bob"], users["carol"]
    for i in range(4):
        assert (await alice.send_text(bob.user_id, f"hello bob {i}".encode())).msg_id == i + 1
    await bob.send_text(alice.user_id, b"hi alice")
    await bob.send_text(carol.user_id, "\u4f60\u597d carol \U0001f600".encode())  # carol does not read it
    group_id = await create_group(alice, [bob.user_id, carol.user_id], name="backup team")
    for sender, text in ((alice, "all"), (bob, "of"), (carol, "us"), (alice, b"\x00\xff binary")):
        await sender.send_group_text(group_id, text if isinstance(text, bytes) else text.encode())
    return group_id


async def upload_picture(cluster: Cluster, picture: bytes) -> str:
    port = int(str(cluster.local.by_name("msfs-1").info["port"]))
    reply = await http(port, msfs_clients.android(picture).raw(f"127.0.0.1:{port}"))
    answer = reply.json()
    assert answer["error_code"] == 0, answer
    return str(answer["path"])


async def download(cluster: Cluster, path: str) -> bytes:
    port = int(str(cluster.local.by_name("msfs-1").info["port"]))
    reply = await get(port, "/" + path)
    assert reply.status == 200, reply.status
    return reply.body


def wipe(store: Path, sqlite_file: Path) -> None:
    shutil.rmtree(store)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{sqlite_file}{suffix}").unlink(missing_ok=True)


@dataclass
class Before:
    state: dict[str, Any]
    group_id: int
    picture_path: str
    sent: list[tuple[int, bytes]]  # (msg id, body) acked to alice -> dave while the backup ran
    acked_before: int  # how many of them before it began


async def run_and_back_up(cluster: Cluster, archive: Path, url: str, store: Path, picture: bytes) -> Before:
    users = await login(cluster, ["alice", "bob", "carol", "dave"])
    group_id = await talk(users)
    path = await upload_picture(cluster, picture)
    before = await state(users, group_id)
    alice, dave_id = users["alice"], users["dave"].user_id
    for name in ("bob", "carol", "dave"):
        await users.pop(name).close()
    # A sender that keeps going while the backup runs.
    sent: list[tuple[int, bytes]] = []
    stop, going = asyncio.Event(), asyncio.Event()

    async def keep_sending() -> None:
        for i in range(2000):
            if stop.is_set():
                return
            body = f"during backup {i}".encode()
            sent.append(((await alice.send_text(dave_id, body)).msg_id, body))
            if len(sent) >= 5:
                going.set()

    sender = asyncio.create_task(keep_sending())
    await asyncio.wait_for(going.wait(), 30)
    acked_before = len(sent)
    code, out, err = await imctl(
        "backup", str(archive), "--database-url", url, "--store", str(store), "--json"
    )
    stop.set()
    await sender
    await alice.close()
    assert code == 0, err
    assert json.loads(out)["files"]["count"] == 1
    return Before(before, group_id, path, sent, acked_before)


async def check_restored(cluster: Cluster, was: Before, picture: bytes) -> None:
    users = await login(cluster, ["alice", "bob", "carol", "dave"])
    group_id = was.group_id
    after = await state(users, group_id)
    for key in ("ids", "alice-bob", "bob-carol", "group", "members"):
        assert after[key] == was.state[key], key
    for name in ("alice", "bob", "carol"):
        assert after["unread"][name] == was.state["unread"][name], name
    assert [m for m, _, _ in after["alice-bob"]] == list(range(1, 6))
    assert [b for _, _, b in after["group"]] == [b"all", b"of", b"us", b"\x00\xff binary"]
    # What the backup holds of the conversation written during it: a prefix of what was
    # acked, without a gap, and at least what was acked before it began.
    during = [(m, b) for m, _, b in after["alice-dave"]]
    assert during == was.sent[: len(during)] and len(during) >= was.acked_before
    assert await download(cluster, was.picture_path) == picture
    # New messages continue the ids.
    assert (await users["alice"].send_text(users["bob"].user_id, b"after the restore")).msg_id == 6
    assert (await users["bob"].send_group_text(group_id, b"still here")).msg_id == 5
    for client in users.values():
        await client.close()


@pytest.mark.parametrize(("source", "target"), CASES)
def test_backup_of_a_running_cluster_restores_everything(tmp_path: Path, source: str, target: str) -> None:
    store = tmp_path / "files"
    archive = tmp_path / "backup.tar.gz"
    picture = msfs_clients.jpeg(40_000)
    with contextlib.ExitStack() as dbs:
        sqlite_file = tmp_path / "im.db"
        source_url = (
            f"sqlite:///{sqlite_file}" if source == "sqlite" else dbs.enter_context(fresh_mysql_url())
        )
        # sqlite-to-mysql: into a new MariaDB database; otherwise into the wiped source.
        target_url = source_url if target == source else dbs.enter_context(fresh_mysql_url())
        asyncio.run(create_users(source_url, USERS, []))
        with cluster_on(tmp_path / "run1", source_url, store) as first:
            was = asyncio.run(run_and_back_up(first, archive, source_url, store, picture))
        # The cluster is stopped: wipe the database and the store, then restore.
        wipe(store, sqlite_file)
        if target_url == source_url and source == "mysql":
            asyncio.run(drop_database(source_url))
        code, out, err = asyncio.run(
            imctl("restore", str(archive), "--database-url", target_url, "--store", str(store), "--json")
        )
        assert code == 0, err
        restored = json.loads(out)
        assert restored["files"]["count"] == 1 and restored["rows"]["messages"] >= 10
        assert restored["engine"] == source
        with cluster_on(tmp_path / "run2", target_url, store) as second:
            asyncio.run(check_restored(second, was, picture))
