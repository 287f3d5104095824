"""imctl send / kick / online / status, and user disable / delete, seen by
connected clients."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from common.commands import Cmd
from common.pb import base_pb2
from common.teamtalk_text import decode_text
from tests.cli.conftest import PASSWORD, AdminCluster
from tests.support.ttclient import TTClient

LOAD_REPORT_WAIT = 15.0  # gateways report their load every 0.5 s here (2 s by default)


async def _closed_after_kick(client: TTClient) -> None:
    kick = await client.next_push(Cmd.KICK_USER, timeout=10)
    assert kick.user_id == client.user_id
    await asyncio.wait_for(client.closed.wait(), 10)


async def test_send_reaches_a_connected_user(cluster: AdminCluster, clients: list[TTClient]) -> None:
    bob = await cluster.client("bob", "msg-2")
    clients.append(bob)
    sent = await cluster.ajson("send", "--from", "alice", "--to", "bob", "hello from imctl")
    pushed = await bob.next_push(Cmd.MSG_DATA)
    assert decode_text(pushed.msg_data) == "hello from imctl"  # as TeamTalk clients encode text
    assert (pushed.from_user_id, pushed.to_session_id) == (cluster.users["alice"], cluster.users["bob"])
    assert pushed.msg_id == sent["msg_id"] and pushed.msg_type == base_pb2.MSG_TYPE_SINGLE_TEXT
    unknown = await cluster.aimctl("send", "--from", "alice", "--to", "nobody", "x")
    assert unknown.exit_code == 1
    assert (await cluster.aimctl("send", "--from", "alice", "--to", "group:x", "x")).exit_code == 2


async def test_system_message_to_a_group_reaches_every_member(
    cluster: AdminCluster, clients: list[TTClient]
) -> None:
    group = (await cluster.ajson("group", "create", "all-hands", "alice", "bob", "--creator", "alice"))[
        "group"
    ]
    alice = await cluster.client("alice", "msg-1")
    bob = await cluster.client("bob", "msg-2")
    clients += [alice, bob]
    result = await cluster.aimctl(
        "send", "--from", "system", "--to", f"group:{group['id']}", "all hands at 10"
    )
    assert result.exit_code == 0, result.output
    assert "sent message" in result.stdout
    for member in (alice, bob):
        pushed = await member.next_push(Cmd.MSG_DATA)
        assert decode_text(pushed.msg_data) == "all hands at 10"
        assert pushed.to_session_id == group["id"] and pushed.msg_type == base_pb2.MSG_TYPE_GROUP_TEXT


async def test_kick_closes_the_connection(cluster: AdminCluster, clients: list[TTClient]) -> None:
    carol = await cluster.client("carol", "msg-2")
    clients.append(carol)
    result = await cluster.ajson("kick", "carol")
    assert result["kicked"] == 1 and result["user"]["id"] == cluster.users["carol"]
    await _closed_after_kick(carol)
    missing = await cluster.aimctl("kick", "nobody")
    assert missing.exit_code == 1 and "nobody" in missing.stderr


async def test_disable_and_delete_close_sessions(cluster: AdminCluster, clients: list[TTClient]) -> None:
    await cluster.ajson("user", "add", "frank", "--password", PASSWORD)
    frank = await cluster.client("frank", "msg-1")
    clients.append(frank)
    disabled = await cluster.ajson("user", "disable", "frank")
    assert disabled["user"]["disabled"] and disabled["kicked"] == 1
    await _closed_after_kick(frank)
    refused = TTClient()
    clients.append(refused)
    await refused.connect("127.0.0.1", cluster.gateway_port("msg-1"))
    assert (await refused.login("frank", PASSWORD)).result_code != 0

    assert not (await cluster.ajson("user", "enable", "frank"))["user"]["disabled"]
    again = await cluster.client("frank", "msg-2")
    clients.append(again)
    deleted = await cluster.aimctl("user", "delete", "frank", "--yes")
    assert deleted.exit_code == 0 and "deleted user 'frank'" in deleted.stdout
    await _closed_after_kick(again)
    assert (await cluster.aimctl("user", "show", "frank")).exit_code == 1


async def _status_when(cluster: AdminCluster, check: Any) -> dict[str, Any]:
    """Poll ``status --json`` (gateway counts arrive with load reports) until ``check`` holds."""
    deadline = time.monotonic() + LOAD_REPORT_WAIT
    while True:
        status: dict[str, Any] = await cluster.ajson("status")
        if check(status) or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.2)


async def test_status_and_online_show_the_connected_clients(
    cluster: AdminCluster, clients: list[TTClient]
) -> None:
    alice = await cluster.client("alice", "msg-1")
    dave = await cluster.client("dave", "msg-2")
    clients += [alice, dave]

    def per_gateway(status: dict[str, Any]) -> dict[str, int]:
        return {g["node_id"]: g["connections"] for g in status["gateways"]}

    status = await _status_when(
        cluster,
        lambda s: (
            per_gateway(s) == {"msg-1": 1, "msg-2": 1} and s["route_servers"][0].get("online_users") == 2
        ),
    )
    assert per_gateway(status) == {"msg-1": 1, "msg-2": 1}
    assert status["connections"] == 2
    assert all(g["max_connections"] > 0 and g["address"] == "127.0.0.1" for g in status["gateways"])
    (route,) = status["route_servers"]
    assert route["status"] == "ok" and route["online_users"] == 2
    (db,) = status["db_proxies"]
    assert (db["status"], db["database"], db["redis"]) == ("ok", "ok", "ok")
    assert db["workers"] == len(db["queue_depths"]) > 0

    table = (await cluster.aimctl("status")).stdout
    rows = {line.split()[0]: line.split() for line in table.splitlines() if line.strip()}
    assert rows["msg-1"][2] == "1" and rows["msg-2"][2] == "1" and rows["total"][1] == "2"

    online = await cluster.ajson("online")
    sessions = {(s["user_id"], s["gateway"]) for s in online["sessions"]}
    assert sessions == {(cluster.users["alice"], "msg-1"), (cluster.users["dave"], "msg-2")}
    listing = (await cluster.aimctl("online", "--names")).stdout
    assert "alice" in listing and "dave" in listing and "windows" in listing
    assert "2 users, 2 sessions" in listing

    watched = await cluster.aimctl("status", "--watch", "0.1", "--count", "2", "--json")
    documents = [json.loads(line) for line in watched.stdout.splitlines()]
    assert watched.exit_code == 0 and len(documents) == 2
    assert all(d["connections"] == 2 for d in documents)
