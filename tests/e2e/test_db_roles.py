"""A cluster whose db_proxies split the roles (conftest ``running_split_cluster``):
``db-login`` serves logins, the directory and the admin API on one MariaDB
database, ``db-msg`` serves messages on another. Everything works across two
gateways; killing either db_proxy (kill -9) stops only its own roles, which are
refused at once rather than left hanging, and come back with it.

The tests run in order on one cluster: each puts back what it broke.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.commands import Cmd
from common.pb import base_pb2, group_pb2
from imctl.cluster import ServerProcess
from tests.e2e.conftest import ADMIN_TOKEN, PASSWORD, SPLIT_ROLES, Cluster, running_split_cluster
from tests.e2e.test_groups import create_group
from tests.support.ttclient import TTClient

FAST = 2.0  # a refusal comes within this: the gateway knows the role has no db_proxy up


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_split_cluster(tmp_path_factory.mktemp("split")) as started:
        yield started


def _http(
    port: object, path: str, body: dict[str, Any] | None = None, method: str | None = None
) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
        method=method,
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:  # a 503 health, a refused admin call: its JSON body
        return exc.code, json.loads(exc.read())


async def admin(
    cluster: Cluster, path: str, body: dict[str, Any] | None = None, method: str | None = None
) -> tuple[int, dict[str, Any]]:
    port = cluster.local.by_name("login-1").info["http_port"]
    return await asyncio.to_thread(_http, port, f"/admin/v1{path}", body, method)


async def gateway_roles(cluster: Cluster, name: str) -> dict[str, bool]:
    _, health = await asyncio.to_thread(_http, cluster.local.by_name(name).info["metrics_port"], "/healthz")
    roles: dict[str, bool] = health["db_roles"]
    return roles


async def until_gateways_see(cluster: Cluster, role: str, up: bool, timeout: float = 15.0) -> None:
    """Wait on the gateways' health: each sees (or no longer sees) a db_proxy serving ``role``."""
    async with asyncio.timeout(timeout):
        for name in ("msg-1", "msg-2"):
            while (await gateway_roles(cluster, name))[role] != up:
                await asyncio.sleep(0.05)


def kill9(server: ServerProcess) -> None:
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait(10)


def restart(cluster: Cluster, server: ServerProcess) -> None:
    server.overrides["port"] = str(server.info["port"])  # where the gateways look for it
    server.start(cluster.local.config_path)
    assert server.wait_ready(30), server.log_file.read_text()[-2000:]


async def login_result(cluster: Cluster, name: str, gateway: str) -> int:
    client = TTClient()
    await client.connect("127.0.0.1", cluster.gateway_port(gateway))
    try:
        res = await client.login(name, PASSWORD)
        return int(res.result_code)
    finally:
        await client.close()


async def exchange(sender: TTClient, receiver: TTClient, text: bytes) -> None:
    """A message stored and pushed (a fresh connection may get earlier ones first: a gap fill)."""
    ack = await sender.send_text(receiver.user_id, text, timeout=5)
    async with asyncio.timeout(10):
        while True:
            push = await receiver.next_push(Cmd.MSG_DATA)
            if push.from_user_id == sender.user_id and push.msg_id == ack.msg_id:
                break
    assert push.msg_data == text


async def test_logins_messages_and_admin_on_a_split_cluster(split: Cluster, clients: list[TTClient]) -> None:
    alice = await split.client("alice", "msg-1")
    bob = await split.client("bob", "msg-2")
    clients += [alice, bob]
    await exchange(alice, bob, b"hello across gateways")
    await exchange(bob, alice, b"hello back")

    # The admin API (served by db-login) makes a user, who logs in and talks.
    status, created = await admin(split, "/users", {"name": "newbie", "password": PASSWORD})
    assert status == 201, created
    newbie = await split.client("newbie", "msg-2")
    clients.append(newbie)
    await exchange(newbie, alice, b"hello from a new user")

    status, answer = await admin(split, "/status")
    assert status == 200, answer
    roles = {d["node_id"]: tuple(d["roles"]) for d in answer["db_proxies"]}
    assert roles == SPLIT_ROLES
    assert all(d["status"] == "ok" for d in answer["db_proxies"]), answer


async def test_groups_and_an_admin_member_change_on_a_split_cluster(
    split: Cluster, clients: list[TTClient]
) -> None:
    """Groups live with messages (db-msg), their members are users of the directory
    (db-login's database): read through db-msg's bounded user cache."""
    alice = await split.client("alice", "msg-1")
    bob = await split.client("bob", "msg-2")
    carol = await split.client("carol", "msg-1")
    clients += [alice, bob, carol]
    group_id = await create_group(alice, [bob.user_id, carol.user_id])
    ack = await alice.send_group_text(group_id, b"to the group")
    for member in (bob, carol):
        push = await member.next_push(Cmd.MSG_DATA)
        assert (push.to_session_id, push.msg_id) == (group_id, ack.msg_id)

    # The admin API (db-login, writing to the messages database) adds a member.
    dave = await split.client("dave", "msg-2")
    clients.append(dave)
    status, changed = await admin(split, f"/groups/{group_id}/members", {"add": [dave.user_id]})
    assert status == 200, changed
    ack = await carol.send_group_text(group_id, b"welcome dave")
    async with asyncio.timeout(10):
        while True:
            push = await dave.next_push(Cmd.MSG_DATA)
            if push.msg_id == ack.msg_id:
                break
    assert (push.to_session_id, push.msg_data) == (group_id, b"welcome dave")


async def test_a_user_deleted_in_the_directory_is_forgotten_by_the_message_db_proxy(
    split: Cluster, clients: list[TTClient]
) -> None:
    """db-msg caches which users exist (it cannot join the directory's tables). An admin
    deletes a user on db-login; the DB_INVALIDATE it sends, relayed by the route server,
    makes db-msg refuse messages to that user from then on, not whenever its cache
    happens to drop the id."""
    alice = await split.client("alice", "msg-1")
    clients.append(alice)
    status, created = await admin(split, "/users", {"name": "leaver", "password": PASSWORD})
    assert status == 201, created
    leaver = await split.client("leaver", "msg-2")
    clients.append(leaver)
    await exchange(alice, leaver, b"db-msg now knows leaver")
    await leaver.close()

    status, deleted = await admin(split, "/users/leaver", method="DELETE")
    assert status == 200, deleted
    async with asyncio.timeout(10):  # the relay is one hop: refused within moments
        while True:
            try:
                await alice.send_text(created["user"]["id"], b"to a deleted user", timeout=1.0)
            except TimeoutError:  # not stored: the ack cannot say "no such user"
                break


async def online_then_kill(
    split: Cluster, clients: list[TTClient], db_name: str, role: str
) -> tuple[TTClient, TTClient, ServerProcess]:
    """alice (on msg-1) and bob (on msg-2) logged in, then ``db_name`` killed (-9) and
    both gateways seen without a db_proxy serving ``role``."""
    alice = await split.client("alice", "msg-1")
    bob = await split.client("bob", "msg-2")
    clients += [alice, bob]
    db = split.local.by_name(db_name)
    kill9(db)
    await until_gateways_see(split, role, up=False)
    return alice, bob, db


async def bring_back(split: Cluster, db: ServerProcess, role: str) -> None:
    """``db`` restarted on its port, and both gateways linked to it again."""
    restart(split, db)
    await until_gateways_see(split, role, up=True)


async def test_logins_go_on_while_the_message_db_proxy_is_down(
    split: Cluster, clients: list[TTClient]
) -> None:
    alice, bob, db_msg = await online_then_kill(split, clients, "db-msg", "messages")

    dave = await split.client("dave", "msg-2")  # a login needs only db-login
    clients.append(dave)
    loop = asyncio.get_running_loop()
    started = loop.time()
    refused = await alice.call(
        Cmd.GROUP_CREATE_REQ,
        group_pb2.IMGroupCreateReq(
            user_id=0,
            group_type=base_pb2.GROUP_TYPE_TMP,
            group_name="while down",
            group_avatar="",
            member_id_list=[bob.user_id],
        ),
        timeout=FAST,
    )
    assert refused.result_code != 0  # refused at once: no db_proxy serves messages
    assert loop.time() - started < FAST
    with pytest.raises(TimeoutError):  # a message is not acked (TeamTalk's ack cannot say "refused")
        await alice.send_text(bob.user_id, b"not stored", timeout=1.0)

    await bring_back(split, db_msg, "messages")
    await exchange(alice, bob, b"stored again")
    await exchange(dave, alice, b"and from the newcomer")


async def test_messages_go_on_while_the_login_db_proxy_is_down(
    split: Cluster, clients: list[TTClient]
) -> None:
    alice, bob, db_login = await online_then_kill(split, clients, "db-login", "login")

    await exchange(alice, bob, b"no login db_proxy needed")
    await exchange(bob, alice, b"nor for this")
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await login_result(split, "carol", "msg-1") == base_pb2.REFUSE_REASON_NO_DB_SERVER
    assert loop.time() - started < FAST

    await bring_back(split, db_login, "login")
    carol = await split.client("carol", "msg-1")
    clients.append(carol)
    await exchange(carol, bob, b"logged in again")


def test_the_layout_is_in_the_logs(split: Cluster) -> None:
    """Each gateway learned each db_proxy's roles (its log says so), and each db_proxy
    announced what it serves."""
    for name in ("msg-1", "msg-2"):
        text = Path(split.local.by_name(name).log_file).read_text()
        assert "db_proxy db-login serves login, directory, admin" in text
        assert "db_proxy db-msg serves messages" in text


def test_quick_benchmark_runs_clean() -> None:
    """benchmarks/db_roles.py --quick: exit 0 means no login failed and no message was
    lost, duplicated, reordered or left unacked."""
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "db_roles.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "logins/s" in result.stdout and "msgs/s" in result.stdout
