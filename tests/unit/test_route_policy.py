"""The login policy applied to a gateway's snapshot (a healed partition, a relink)."""

from __future__ import annotations

from route_server.presence import LoginPolicy, snapshot_kicks
from route_server.table import RouteTable, Session

WINDOWS, MAC, IOS, ANDROID = 0x01, 0x02, 0x11, 0x12


def s(gw: str, conn: int, client_type: int) -> Session:
    return Session(gw, conn, client_type, 1)


def test_a_readded_session_that_clashes_elsewhere_is_the_one_kicked() -> None:
    table = RouteTable()
    table.add(7, s("a", 1, ANDROID))  # logged in on a while b was cut off
    table.add(8, s("a", 2, WINDOWS))
    snapshot = [(7, s("b", 5, IOS)), (8, s("b", 6, IOS)), (9, s("b", 7, ANDROID))]
    assert snapshot_kicks(LoginPolicy.TEAMTALK, table, "b", snapshot) == [(7, s("b", 5, IOS))]
    assert snapshot_kicks(LoginPolicy.SINGLE, table, "b", snapshot) == snapshot[:2]
    assert snapshot_kicks(LoginPolicy.UNLIMITED, table, "b", snapshot) == []


def test_sessions_already_known_on_that_gateway_are_left_alone() -> None:
    table = RouteTable()
    table.add(7, s("a", 1, ANDROID))
    table.add(7, s("b", 5, IOS))  # whatever made this, a relink's snapshot does not judge it again
    assert snapshot_kicks(LoginPolicy.TEAMTALK, table, "b", [(7, s("b", 5, IOS))]) == []


def test_after_the_kicks_the_table_holds_one_mobile_session() -> None:
    table = RouteTable()
    table.add(7, s("a", 1, ANDROID))
    snapshot = [(7, s("b", 5, IOS)), (7, s("b", 6, MAC))]
    kicks = snapshot_kicks(LoginPolicy.TEAMTALK, table, "b", snapshot)
    table.replace_gateway("b", snapshot)
    for user_id, session in kicks:
        table.remove(session.gateway_id, user_id, session.conn_id)
    assert sorted(x.conn_id for x in table.sessions_of(7)) == [1, 6]
