from __future__ import annotations

from common.pb import base_pb2
from route_server.presence import LoginPolicy, has_desktop, sessions_to_kick, user_status
from route_server.table import Session

ONLINE, LEAVE, OFFLINE = base_pb2.USER_STATUS_ONLINE, base_pb2.USER_STATUS_LEAVE, base_pb2.USER_STATUS_OFFLINE
WINDOWS, MAC, IOS, ANDROID = 0x01, 0x02, 0x11, 0x12


def s(conn: int, client_type: int, status: int = ONLINE, gw: str = "a") -> Session:
    return Session(gw, conn, client_type, status)


def test_teamtalk_policy_kicks_the_same_device_class_only() -> None:
    existing = [s(1, WINDOWS), s(2, ANDROID, gw="b")]
    assert sessions_to_kick(LoginPolicy.TEAMTALK, existing, s(3, MAC, gw="b")) == [existing[0]]
    assert sessions_to_kick(LoginPolicy.TEAMTALK, existing, s(4, IOS)) == [existing[1]]


def test_single_and_unlimited_policies() -> None:
    existing = [s(1, WINDOWS), s(2, ANDROID)]
    assert sessions_to_kick(LoginPolicy.SINGLE, existing, s(3, IOS)) == existing
    assert sessions_to_kick(LoginPolicy.UNLIMITED, existing, s(3, WINDOWS)) == []


def test_a_session_never_kicks_itself() -> None:
    me = s(1, WINDOWS)
    assert sessions_to_kick(LoginPolicy.SINGLE, [me], me) == []


def test_status_is_the_users_not_a_sessions() -> None:
    assert user_status([]) == OFFLINE
    assert user_status([s(1, WINDOWS, LEAVE), s(2, IOS, ONLINE)]) == ONLINE
    assert user_status([s(1, WINDOWS, LEAVE), s(2, IOS, LEAVE)]) == LEAVE
    assert has_desktop([s(1, MAC)]) and not has_desktop([s(1, ANDROID)])
