"""Who is online where: the route server's only state, kept sans-IO.

The table is rebuilt from the gateways: each sends a full snapshot when it
links, then session up/down deltas. Losing the route server loses nothing
that the gateways cannot tell the next one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Session:
    gateway_id: str
    conn_id: int
    client_type: int
    status: int
    # Unix seconds this route server learned of the session (admin "online").
    since: int = field(default=0, compare=False)


class RouteTable:
    def __init__(self) -> None:
        # user -> {(gateway, conn): session}; the common case is one or two entries.
        self._by_user: dict[int, dict[tuple[str, int], Session]] = {}
        self._by_gateway: dict[str, set[int]] = defaultdict(set)

    @property
    def online_users(self) -> int:
        return len(self._by_user)

    def gateways(self) -> list[str]:
        return sorted(self._by_gateway)

    def sessions_of(self, user_id: int) -> list[Session]:
        return list(self._by_user.get(user_id, {}).values())

    def session_count(self, gateway_id: str) -> int:
        return sum(
            1
            for user_id in self._by_gateway.get(gateway_id, ())
            for key in self._by_user.get(user_id, {})
            if key[0] == gateway_id
        )

    def session(self, user_id: int, gateway_id: str, conn_id: int) -> Session | None:
        return self._by_user.get(user_id, {}).get((gateway_id, conn_id))

    def all_sessions(self) -> Iterator[tuple[int, Session]]:
        """Every (user, session), in no particular order."""
        for user_id, sessions in self._by_user.items():
            for session in sessions.values():
                yield user_id, session

    def add(self, user_id: int, session: Session) -> None:
        self._by_user.setdefault(user_id, {})[(session.gateway_id, session.conn_id)] = session
        self._by_gateway[session.gateway_id].add(user_id)

    def remove(self, gateway_id: str, user_id: int, conn_id: int) -> Session | None:
        sessions = self._by_user.get(user_id)
        if sessions is None:
            return None
        removed = sessions.pop((gateway_id, conn_id), None)
        if not sessions:
            del self._by_user[user_id]
        if not any(key[0] == gateway_id for key in sessions):
            users = self._by_gateway.get(gateway_id)
            if users is not None:
                users.discard(user_id)
        return removed

    def holds(self, gateway_id: str, user_id: int) -> bool:
        """Whether ``gateway_id`` holds a session of ``user_id``."""
        return user_id in self._by_gateway.get(gateway_id, ())

    def users_on(self, gateway_id: str) -> set[int]:
        return set(self._by_gateway.get(gateway_id, ()))

    def drop_gateway(self, gateway_id: str) -> set[int]:
        """Forget a gateway's sessions; returns the users it held."""
        users = self._by_gateway.pop(gateway_id, set())
        for user_id in users:
            sessions = self._by_user.get(user_id)
            if sessions is None:
                continue
            for key in [k for k in sessions if k[0] == gateway_id]:
                del sessions[key]
            if not sessions:
                del self._by_user[user_id]
        return users

    def replace_gateway(self, gateway_id: str, entries: Iterable[tuple[int, Session]]) -> set[int]:
        """Swap in a gateway's snapshot; returns every user it touched."""
        touched = self.drop_gateway(gateway_id)
        for user_id, session in entries:
            self.add(user_id, session)
            touched.add(user_id)
        return touched

    def only_session_there(self, user_id: int, gateway_id: str, conn_id: int) -> bool:
        """Whether ``(gateway_id, conn_id)`` is ``user_id``'s one session on that gateway."""
        sessions = self._by_user.get(user_id)
        if not sessions or (gateway_id, conn_id) not in sessions:
            return False
        return len(sessions) == 1 or not any(g == gateway_id and c != conn_id for g, c in sessions)

    def fan_out_push(
        self, user_ids: Iterable[int], sender: int = 0, skip_gateway: str | None = None
    ) -> tuple[dict[str, list[int]], list[int]]:
        """Recipients grouped by the gateways that hold them, and those with no session
        anywhere. ``sender`` is not sent to ``skip_gateway`` (its only session there is
        the connection the message came from: it has it), nor counted as offline for it.

        One dict lookup per recipient in the common case (one session), as a
        500-member group's every message goes through here.
        """
        targets: dict[str, list[int]] = {}
        offline: list[int] = []
        by_user = self._by_user
        for user_id in user_ids:
            sessions = by_user.get(user_id)
            if not sessions:
                offline.append(user_id)
                continue
            if len(sessions) == 1:
                for gateway_id, _conn in sessions:
                    if user_id == sender and gateway_id == skip_gateway:
                        break
                    users = targets.get(gateway_id)
                    if users is None:
                        targets[gateway_id] = [user_id]
                    else:
                        users.append(user_id)
                continue
            seen: set[str] = set()
            for gateway_id, _conn in sessions:
                if gateway_id in seen or (user_id == sender and gateway_id == skip_gateway):
                    continue
                seen.add(gateway_id)
                targets.setdefault(gateway_id, []).append(user_id)
        return targets, offline

    def fan_out(self, user_ids: Iterable[int]) -> dict[str, list[int]]:
        """Group recipients by the gateways that hold them; others are offline."""
        targets: dict[str, list[int]] = {}
        for user_id in user_ids:
            sessions = self._by_user.get(user_id)
            if not sessions:
                continue
            seen: set[str] = set()
            for gateway_id, _conn in sessions:
                if gateway_id not in seen:
                    seen.add(gateway_id)
                    targets.setdefault(gateway_id, []).append(user_id)
        return targets
