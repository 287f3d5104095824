from __future__ import annotations

from route_server.table import RouteTable, Session


def session(gw: str, conn: int) -> Session:
    return Session(gw, conn, 1, 1)


def test_fan_out_only_to_gateways_holding_recipients() -> None:
    table = RouteTable()
    table.add(1, session("a", 1))
    table.add(2, session("b", 2))
    table.add(2, session("a", 3))
    table.add(3, session("c", 4))
    assert table.fan_out([1, 2, 99]) == {"a": [1, 2], "b": [2]}


def test_remove_and_drop_gateway() -> None:
    table = RouteTable()
    table.add(1, session("a", 1))
    table.add(1, session("b", 2))
    table.remove("a", 1, 1)
    assert table.fan_out([1]) == {"b": [1]}
    table.drop_gateway("b")
    assert table.fan_out([1]) == {}
    assert table.online_users == 0


def test_snapshot_replaces_what_a_gateway_had() -> None:
    table = RouteTable()
    table.add(1, session("a", 1))
    table.add(2, session("a", 2))
    table.replace_gateway("a", [(3, session("a", 9))])
    assert table.fan_out([1, 2, 3]) == {"a": [3]}
    assert table.session_count("a") == 1
