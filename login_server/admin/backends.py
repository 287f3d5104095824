"""The admin API's links to the servers behind it: db_proxy and route_server.

One :class:`~common.link.Upstream` per configured address (role
``ROLE_ADMIN``) rather than one per service with a fail-over list, because
``/status`` must ask *every* server, and a call for the whole service can
still go to whichever of them is up (for db_proxy: that serves the ``admin``
role, as it announced on the link, common/db_info.py). The links are opened when the
login_server starts, so the first admin request does not pay for the
connect; a request arriving while none is up yet waits a moment for one.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from common.commands import Rpcs
from common.config import split_address
from common.db_info import announced_roles, learn_info
from common.db_roles import DbRole
from common.errors import ImError, Unavailable
from common.link import Identity, LinkDown, LinkSettings, Upstream
from common.pb import internal_pb2
from login_server.config import LoginServerConfig

DB_PROXY = "db_proxy"
ROUTE_SERVER = "route_server"

CALL_TIMEOUT = 10.0  # an ordinary admin call: one small transaction or a table walk
READY_WAIT = 3.0  # how long a call waits for some link of the service to come up
NODE_ID = "login-admin"
SERVICE_ROLES = {DB_PROXY: internal_pb2.ROLE_DB_PROXY, ROUTE_SERVER: internal_pb2.ROLE_ROUTE_SERVER}


@dataclass(frozen=True, slots=True)
class Answer:
    """One server's answer to a call made on every server of a service."""

    address: str
    result: dict[str, Any] | None = None
    error: str = ""
    reachable: bool = True
    roles: tuple[str, ...] = ()  # a db_proxy's, as it announced them (DB_PROXY_INFO)


class Backends(Protocol):
    """What the API handlers need; tests substitute an in-memory fake."""

    async def call(
        self, service: str, method: str, args: dict[str, Any], timeout: float = CALL_TIMEOUT
    ) -> dict[str, Any]:
        """``method`` on one reachable server of ``service``.

        Raises what the server refused with (common.errors), or Unavailable
        (none reachable, the link dropped, no answer in time).
        """
        ...

    async def call_each(
        self, service: str, method: str, args: dict[str, Any], timeout: float = CALL_TIMEOUT
    ) -> list[Answer]:
        """``method`` on every configured server of ``service``; never raises."""
        ...


def decode_result(result: internal_pb2.AdminResult) -> dict[str, Any]:
    """The JSON object inside an AdminResult (an empty object if it is not one)."""
    value = json.loads(result.result_json or "{}")
    return value if isinstance(value, dict) else {"result": value}


class LinkBackends:
    """The real thing: admin links to every configured db_proxy and route_server."""

    def __init__(
        self,
        services: dict[str, list[str]],
        *,
        node_id: str = NODE_ID,
        ready_wait: float = READY_WAIT,
        settings: LinkSettings | None = None,
    ) -> None:
        me = Identity(internal_pb2.ROLE_ADMIN, node_id)
        self.ready_wait = ready_wait
        # What each db_proxy said it serves, by address; a link is ready only once it is known.
        self.db_info: dict[str, internal_pb2.DbProxyInfo] = {}
        self.links: dict[str, list[tuple[str, Upstream]]] = {
            service: [
                (
                    address,
                    Upstream(
                        f"admin-{service}@{address}",
                        [split_address(service, address)],
                        me,
                        settings=settings,
                        expect_role=SERVICE_ROLES.get(service),
                        on_connected=learn_info(self._learner(address)) if service == DB_PROXY else None,
                    ),
                )
                for address in addresses
            ]
            for service, addresses in services.items()
        }

    def _learner(self, address: str) -> Callable[[internal_pb2.DbProxyInfo], None]:
        def learned(info: internal_pb2.DbProxyInfo) -> None:
            self.db_info[address] = info

        return learned

    def _serves_admin(self, service: str, address: str) -> bool:
        """Admin calls go to db_proxies serving ``admin`` only (route servers take them all)."""
        if service != DB_PROXY:
            return True
        info = self.db_info.get(address)
        return info is not None and DbRole.ADMIN in announced_roles(info)

    @classmethod
    def from_config(cls, config: LoginServerConfig) -> LinkBackends:
        return cls(
            {DB_PROXY: list(config.db_proxies), ROUTE_SERVER: list(config.route_servers)},
            settings=LinkSettings.from_cluster(config.cluster),
        )

    def start(self) -> None:
        for links in self.links.values():
            for _, upstream in links:
                upstream.start()

    async def stop(self) -> None:
        for links in self.links.values():
            for _, upstream in links:
                await upstream.stop()

    async def _pick(self, service: str) -> Upstream:
        links = self.links.get(service)
        if not links:
            raise LinkDown(f"no {service} is configured")
        deadline = time.monotonic() + self.ready_wait
        while True:
            # In config order: the first one up that serves admin calls, so a call fails over.
            for address, upstream in links:
                if upstream.connected and self._serves_admin(service, address):
                    return upstream
            if time.monotonic() >= deadline:
                what = f"{service} serving {DbRole.ADMIN}" if service == DB_PROXY else service
                raise LinkDown(f"no {what} is reachable")
            await asyncio.sleep(0.05)

    async def call(
        self, service: str, method: str, args: dict[str, Any], timeout: float = CALL_TIMEOUT
    ) -> dict[str, Any]:
        upstream = await self._pick(service)
        # No retry on another server when the link drops mid-call: the call
        # may have been carried out (a user created), and the caller is told
        # 503 rather than having it done twice.
        call = internal_pb2.AdminCall(method=method, args_json=json.dumps(args))
        return decode_result(await upstream.call(Rpcs.ADMIN_CALL, call, timeout))

    def _roles(self, address: str) -> tuple[str, ...]:
        """A db_proxy's roles as it last announced them (none known: never linked)."""
        info = self.db_info.get(address)
        return tuple(info.roles) if info is not None else ()

    async def call_each(
        self, service: str, method: str, args: dict[str, Any], timeout: float = CALL_TIMEOUT
    ) -> list[Answer]:
        async def one(address: str, upstream: Upstream) -> Answer:
            if not upstream.connected and not await upstream.wait_ready(self.ready_wait):
                return Answer(address, error="unreachable", reachable=False, roles=self._roles(address))
            roles = self._roles(address)
            if not self._serves_admin(service, address):
                # A db_proxy without the admin role refuses admin calls: what it said of itself.
                info = self.db_info[address]
                return Answer(address, result={"node_id": info.node_id}, roles=roles)
            call = internal_pb2.AdminCall(method=method, args_json=json.dumps(args))
            try:
                reply = await upstream.call(Rpcs.ADMIN_CALL, call, timeout)
            except Unavailable as exc:
                return Answer(address, error=exc.message, reachable=False, roles=roles)
            except ImError as exc:
                return Answer(address, error=exc.message, roles=roles)
            return Answer(address, result=decode_result(reply), roles=roles)

        links = self.links.get(service, [])
        return list(await asyncio.gather(*(one(address, upstream) for address, upstream in links)))
