"""route_server's online, kick and status, with fake gateways on real links."""

from __future__ import annotations

import types

import pytest

from common.commands import Cmd
from common.pb import base_pb2, internal_pb2
from tests.admin_backend.conftest import FakeGateway, Harness, admin_error, linked

WINDOWS, ANDROID = base_pb2.CLIENT_TYPE_WINDOWS, base_pb2.CLIENT_TYPE_ANDROID
ONLINE, OFFLINE = base_pb2.USER_STATUS_ONLINE, base_pb2.USER_STATUS_OFFLINE

# The route server's methods do not touch storage: one engine is enough.
pytestmark = pytest.mark.parametrize("harness", ["sqlite"], indirect=True)


def session(
    user_id: int, conn_id: int, client_type: base_pb2.ClientType.ValueType = WINDOWS
) -> internal_pb2.OnlineSession:
    return internal_pb2.OnlineSession(
        user_id=user_id, conn_id=conn_id, client_type=client_type, status=ONLINE
    )


def listed(user_id: int, conn_id: int, client_type: int) -> dict[str, object]:
    return {
        "user_id": user_id,
        "gateway": "gw-t",
        "conn_id": conn_id,
        "client_type": client_type,
        "status": ONLINE,
        "since": 1_700_000_000,
    }


async def test_online_lists_every_session_with_since(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness
    clock = types.SimpleNamespace(time=lambda: 1_700_000_000.5)
    monkeypatch.setattr("route_server.server.time", clock)
    await h.online(7, 70, ANDROID)
    await h.online(5, 50)
    await h.online(7, 71, WINDOWS)
    sessions = (await h.route_call("online"))["sessions"]
    assert sessions == [listed(5, 50, WINDOWS), listed(7, 70, ANDROID), listed(7, 71, WINDOWS)]
    # A gateway's snapshot (as after a relink) keeps what was known; new sessions start now.
    clock.time = lambda: 1_700_000_100.0
    assert h.gateway.link is not None
    snapshot = internal_pb2.RouteSnapshot(sessions=[session(5, 50), session(9, 90)])
    assert h.gateway.link.send(Cmd.ROUTE_SNAPSHOT, snapshot)
    for _ in range(200):
        sessions = (await h.route_call("online"))["sessions"]
        if [s["user_id"] for s in sessions] == [5, 9]:
            break
    assert [(s["user_id"], s["since"]) for s in sessions] == [(5, 1_700_000_000), (9, 1_700_000_100)]


async def test_kick_closes_every_session_of_the_user(harness: Harness) -> None:
    h = harness
    await h.online(3, 30, WINDOWS)
    await h.online(3, 31, ANDROID)
    await h.online(4, 40)
    assert await h.route_call("kick", user_id=3) == {"kicked": 2}
    kicks = [await h.gateway.next(Cmd.ROUTE_KICK) for _ in range(2)]
    assert sorted((k.user_id, k.conn_id, k.reason) for k in kicks) == [
        (3, 30, base_pb2.KICK_REASON_DUPLICATE_USER),
        (3, 31, base_pb2.KICK_REASON_DUPLICATE_USER),
    ]
    assert [s["user_id"] for s in (await h.route_call("online"))["sessions"]] == [4]
    # Everyone hears the user went offline.
    for _ in range(10):
        batch = await h.gateway.next(Cmd.ROUTE_STATUS_BATCH)
        if any(s.user_id == 3 for s in batch.stats):
            break
    assert [(s.user_id, s.status) for s in batch.stats if s.user_id == 3] == [(3, OFFLINE)]
    assert await h.route_call("kick", user_id=3) == {"kicked": 0}
    assert await h.route_call("kick", user_id="4") == {"kicked": 1}
    for bad in ({}, {"user_id": 0}, {"user_id": "bob"}, {"user_id": True}, {"user_id": 2**32}):
        code, _ = await admin_error(h.route, "kick", bad)
        assert code == internal_pb2.ERR_BAD_REQUEST, bad
    code, _ = await admin_error(h.route, "reboot", {})
    assert code == internal_pb2.ERR_BAD_REQUEST


async def test_status_counts_sessions_per_gateway(harness: Harness) -> None:
    h = harness
    other = FakeGateway("gw-2")
    sessions = internal_pb2.RouteSnapshot(sessions=[session(1, 1), session(2, 2), session(1, 3, ANDROID)])
    other.link = await linked(
        h.route.addresses[0][1],
        internal_pb2.ROLE_GATEWAY,
        other.node_id,
        commands=other.commands(),
        on_connected=lambda link: link.send(Cmd.ROUTE_SNAPSHOT, sessions),
    )
    try:
        await h.online(2, 20, ANDROID)  # a desktop would replace user 2's desktop on gw-2
        for _ in range(200):
            status = await h.route_call("status")
            if status["online_users"] == 2 and len(status["gateways"]) == 2:
                break
        assert status == {
            "node_id": "route-t",
            "gateways": [{"node_id": "gw-2", "sessions": 3}, {"node_id": "gw-t", "sessions": 1}],
            "online_users": 2,
        }
    finally:
        await other.link.stop()
    for _ in range(200):
        status = await h.route_call("status")
        if len(status["gateways"]) == 1:
            break
    assert status["gateways"] == [{"node_id": "gw-t", "sessions": 1}] and status["online_users"] == 1
