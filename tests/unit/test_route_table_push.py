"""RouteTable.fan_out_push / only_session_there: where a stored message goes, the sender's
copy left out of the gateway its origin connection is on when that is its only session there."""

from __future__ import annotations

from common.pb import base_pb2
from route_server.table import RouteTable, Session

WINDOWS, ANDROID = base_pb2.CLIENT_TYPE_WINDOWS, base_pb2.CLIENT_TYPE_ANDROID


def table(*sessions: tuple[int, str, int, int]) -> RouteTable:
    t = RouteTable()
    for user_id, gateway_id, conn_id, client_type in sessions:
        t.add(user_id, Session(gateway_id, conn_id, client_type, base_pb2.USER_STATUS_ONLINE))
    return t


def test_grouped_by_gateway_in_recipient_order_offline_apart() -> None:
    t = table((1, "a", 1, WINDOWS), (2, "b", 2, WINDOWS), (3, "a", 3, WINDOWS), (3, "b", 4, ANDROID))
    targets, offline = t.fan_out_push([1, 2, 3, 4])
    assert targets == {"a": [1, 3], "b": [2, 3]}
    assert offline == [4]
    assert t.fan_out([1, 2, 3, 4]) == targets  # the notices' fan-out agrees


def test_two_sessions_on_one_gateway_are_one_target() -> None:
    t = table((1, "a", 1, WINDOWS), (1, "a", 2, ANDROID))
    assert t.fan_out_push([1]) == ({"a": [1]}, [])


def test_only_session_there() -> None:
    t = table((1, "a", 1, WINDOWS), (1, "b", 2, ANDROID), (2, "a", 3, WINDOWS), (2, "a", 4, ANDROID))
    assert t.only_session_there(1, "a", 1)
    assert t.only_session_there(1, "b", 2)
    assert not t.only_session_there(1, "a", 9)  # not a session of hers
    assert not t.only_session_there(2, "a", 3)  # her phone is on that gateway too
    assert not t.only_session_there(7, "a", 1)  # nobody


def test_the_sender_skipped_on_its_origins_gateway_only() -> None:
    t = table((1, "a", 1, WINDOWS), (1, "b", 2, ANDROID), (2, "a", 3, WINDOWS))
    targets, offline = t.fan_out_push([1, 2], sender=1, skip_gateway="a")
    assert targets == {"a": [2], "b": [1]}
    assert offline == []
    # The sender with no other session: in no target, and not offline either.
    t = table((1, "a", 1, WINDOWS), (2, "b", 3, WINDOWS))
    assert t.fan_out_push([1, 2], sender=1, skip_gateway="a") == ({"b": [2]}, [])
    # Another recipient on that gateway is not skipped.
    assert t.fan_out_push([1, 2], sender=2, skip_gateway="a") == ({"a": [1], "b": [2]}, [])
