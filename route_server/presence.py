"""Presence rules, sans-IO: who a new login kicks, and what status a user has.

TeamTalk's default allows one desktop and one mobile session per user; a new
login of the same class replaces the old. Status is the user's, not a
session's: online while any session is online, "leave" while all are away,
offline when none is left.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from common.conversation import is_mobile
from common.pb import base_pb2
from route_server.table import RouteTable, Session


class LoginPolicy(StrEnum):
    TEAMTALK = "teamtalk"  # one desktop + one mobile session
    SINGLE = "single"  # one session in all
    UNLIMITED = "unlimited"


def sessions_to_kick(policy: LoginPolicy, existing: Iterable[Session], new: Session) -> list[Session]:
    others = [s for s in existing if (s.gateway_id, s.conn_id) != (new.gateway_id, new.conn_id)]
    if policy is LoginPolicy.SINGLE:
        return others
    if policy is LoginPolicy.TEAMTALK:
        return [s for s in others if is_mobile(s.client_type) == is_mobile(new.client_type)]
    return []


def snapshot_kicks(
    policy: LoginPolicy, table: RouteTable, gateway_id: str, entries: Iterable[tuple[int, Session]]
) -> list[tuple[int, Session]]:
    """The sessions of a gateway's snapshot that the login policy closes, given the
    table before the snapshot is applied.

    A snapshot re-adds sessions this server did not know (after a partition
    healed, a relink, a restart). One that clashes with the user's sessions
    on other gateways is the one to go: those were known here while this
    gateway was not, so they are the later logins (a client cut off with its
    gateway reconnects elsewhere; the gateway still reports the old session),
    and a route server that stayed linked to both gateways kicked the same
    one already. Sessions this server knew stay as they are.
    """
    kicks = []
    for user_id, session in entries:
        if table.session(user_id, gateway_id, session.conn_id) is not None:
            continue
        elsewhere = [s for s in table.sessions_of(user_id) if s.gateway_id != gateway_id]
        if sessions_to_kick(policy, elsewhere, session):
            kicks.append((user_id, session))
    return kicks


def user_status(sessions: Iterable[Session]) -> base_pb2.UserStatType.ValueType:
    statuses = [s.status for s in sessions]
    if not statuses:
        return base_pb2.USER_STATUS_OFFLINE
    if base_pb2.USER_STATUS_ONLINE in statuses:
        return base_pb2.USER_STATUS_ONLINE
    if all(status == base_pb2.USER_STATUS_LEAVE for status in statuses):
        return base_pb2.USER_STATUS_LEAVE
    return base_pb2.USER_STATUS_ONLINE


def has_desktop(sessions: Iterable[Session]) -> bool:
    return any(not is_mobile(s.client_type) for s in sessions)
