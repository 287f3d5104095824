"""The admin API in-process: token check, error mapping, the calls each
endpoint makes (against a fake of the backends), and the real link backends
against an in-process AdminCall server."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from common.commands import Rpcs
from common.config import ConfigError
from common.errors import (
    Bug,
    Conflict,
    Forbidden,
    ImError,
    InvalidArgument,
    NotFound,
    Overloaded,
    Unavailable,
)
from common.link import Link, LinkDown, LinkServer, RequestTimeout, Upstream
from common.pb import internal_pb2
from common.rpc import Commands
from login_server.admin.api import authorized, http_status
from login_server.admin.backends import DB_PROXY, ROUTE_SERVER, Answer, LinkBackends
from login_server.balancer import Balancer
from login_server.config import LoginServerConfig
from login_server.server import build_app

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ALICE = {"id": 7, "name": "alice", "nick": "Alice"}


class FakeBackends:
    """Answers from a table; records every call (audit entries apart: tests/console/ checks them)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.audited: list[dict[str, Any]] = []
        self.answers: dict[tuple[str, str], dict[str, Any] | Exception] = {}
        self.each: dict[str, list[Answer]] = {DB_PROXY: [], ROUTE_SERVER: []}

    async def call(
        self, service: str, method: str, args: dict[str, Any], timeout: float = 10.0
    ) -> dict[str, Any]:
        if method == "audit.record":
            self.audited.append(args)
            return {"id": len(self.audited)}
        self.calls.append((service, method, args))
        answer = self.answers.get((service, method), {})
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def call_each(
        self, service: str, method: str, args: dict[str, Any], timeout: float = 10.0
    ) -> list[Answer]:
        self.calls.append((service, method, args))
        return self.each[service]


@pytest.fixture
def backends() -> FakeBackends:
    return FakeBackends()


@pytest.fixture
def balancer() -> Balancer:
    return Balancer()


async def _client(config: LoginServerConfig, balancer: Balancer, backends: FakeBackends) -> TestClient:
    client = TestClient(TestServer(build_app(config, balancer, backends)))
    await client.start_server()
    return client


@pytest.fixture
async def api(backends: FakeBackends, balancer: Balancer) -> AsyncIterator[TestClient]:
    client = await _client(LoginServerConfig(admin_token=TOKEN), balancer, backends)
    yield client
    await client.close()


# -- the token ---------------------------------------------------------------------


def test_authorized_needs_the_bearer_scheme_and_the_exact_token() -> None:
    assert authorized(f"Bearer {TOKEN}", TOKEN)
    assert authorized(f"bearer {TOKEN}", TOKEN)  # the scheme is case-insensitive (RFC 7235)
    assert not authorized("", TOKEN)
    assert not authorized(TOKEN, TOKEN)
    assert not authorized(f"Basic {TOKEN}", TOKEN)
    assert not authorized(f"Bearer {TOKEN}x", TOKEN)
    assert not authorized(f"Bearer {TOKEN[:-1]}", TOKEN)
    assert not authorized("Bearer ", TOKEN)


async def test_no_token_configured_means_no_admin_api(backends: FakeBackends, balancer: Balancer) -> None:
    client = await _client(LoginServerConfig(), balancer, backends)
    try:
        for path in ("/admin/v1/status", "/admin/v1/users", "/admin"):
            response = await client.get(path, headers=AUTH)
            assert response.status == 404, path
        response = await client.get("/msg_server")
        assert response.status == 200  # discovery is untouched
    finally:
        await client.close()
    assert backends.calls == []


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Authorization": f"Bearer {TOKEN} extra"},
    ],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/v1/users"),
        ("POST", "/admin/v1/users"),
        ("GET", "/admin/v1/no-such"),
        ("GET", "/admin"),
    ],
)
async def test_missing_or_wrong_token_is_401_and_says_nothing_else(
    api: TestClient, backends: FakeBackends, headers: dict[str, str], method: str, path: str
) -> None:
    response = await api.request(method, path, headers=headers, json={"name": "x", "password": "y"})
    assert response.status == 401
    assert await response.read() == b'{"error": "unauthorized"}'
    assert backends.calls == []


async def test_unknown_path_with_the_token_is_a_json_404(api: TestClient) -> None:
    response = await api.get("/admin/v1/no-such", headers=AUTH)
    assert response.status == 404
    assert "error" in await response.json()


# -- error mapping -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (NotFound("no user 'zed'"), 404),
        (InvalidArgument("name must not be empty"), 400),
        (Conflict("a user named 'alice' exists"), 409),
        (Forbidden("not a member"), 403),
        (Unavailable("storage failed"), 503),
        (Overloaded("queue full"), 503),
        (LinkDown("no db_proxy is reachable"), 503),
        (RequestTimeout("request 0x0840 timed out"), 503),
    ],
)
async def test_backend_errors_map_to_statuses(
    api: TestClient, backends: FakeBackends, exc: Exception, status: int
) -> None:
    backends.answers[(DB_PROXY, "users.show")] = exc
    response = await api.get("/admin/v1/users/zed", headers=AUTH)
    assert response.status == status
    body = await response.json()
    assert set(body) == {"error"} and body["error"]
    assert isinstance(exc, ImError) and body["error"] == exc.message
    assert http_status(exc) == status


@pytest.mark.parametrize("exc", [Bug("SELECT secret FROM x"), RuntimeError("secret state")])
async def test_an_internal_error_does_not_show_its_text(
    api: TestClient, backends: FakeBackends, exc: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    backends.answers[(DB_PROXY, "users.list")] = exc
    response = await api.get("/admin/v1/users", headers=AUTH)
    assert response.status == 500
    assert "secret" not in (await response.text())
    # Only what went wrong here carries a traceback; a server's Bug was logged there.
    [line] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert (line.exc_info is not None) == (not isinstance(exc, ImError))


async def test_bad_bodies_and_parameters_are_400_before_any_call(
    api: TestClient, backends: FakeBackends
) -> None:
    for method, path, data in [
        ("POST", "/admin/v1/users", b"{not json"),
        ("POST", "/admin/v1/users", b"[1, 2]"),
        ("GET", "/admin/v1/users?limit=ten", None),
        ("DELETE", "/admin/v1/departments/sales", None),
        ("POST", "/admin/v1/messages", json.dumps({"from": "system", "text": "hi"}).encode()),
        ("POST", "/admin/v1/users/import", json.dumps({"rows": [{}] * 1001}).encode()),
        ("PATCH", "/admin/v1/users/alice", b"{}"),
    ]:
        response = await api.request(method, path, data=data, headers=AUTH)
        assert response.status == 400, (method, path, await response.text())
    assert backends.calls == []


# -- what each endpoint calls ------------------------------------------------------------


async def test_create_user_passes_the_body_and_answers_201(api: TestClient, backends: FakeBackends) -> None:
    backends.answers[(DB_PROXY, "users.create")] = {"user": ALICE}
    body = {"name": "alice", "password": "pw", "department_id": 3}
    response = await api.post("/admin/v1/users", json=body, headers=AUTH)
    assert response.status == 201
    assert await response.json() == {"user": ALICE}
    assert backends.calls == [(DB_PROXY, "users.create", body)]


async def test_users_in_paths_are_ids_or_names(api: TestClient, backends: FakeBackends) -> None:
    await api.get("/admin/v1/users/42", headers=AUTH)
    await api.get("/admin/v1/users/alice", headers=AUTH)
    await api.patch("/admin/v1/users/alice", json={"nick": "Al"}, headers=AUTH)
    assert backends.calls == [
        (DB_PROXY, "users.show", {"user": 42}),
        (DB_PROXY, "users.show", {"user": "alice"}),
        (DB_PROXY, "users.update", {"user": "alice", "fields": {"nick": "Al"}}),
    ]


@pytest.mark.parametrize(
    ("method", "path", "db_method"), [("POST", "/disable", "users.disable"), ("DELETE", "", "users.delete")]
)
async def test_disable_and_delete_kick_the_user(
    api: TestClient, backends: FakeBackends, method: str, path: str, db_method: str
) -> None:
    backends.answers[(DB_PROXY, db_method)] = {"user": ALICE}
    backends.answers[(ROUTE_SERVER, "kick")] = {"kicked": 2}
    response = await api.request(method, f"/admin/v1/users/alice{path}", headers=AUTH)
    assert response.status == 200
    assert await response.json() == {"user": ALICE, "kicked": 2}
    assert backends.calls == [
        (DB_PROXY, db_method, {"user": "alice"}),
        (ROUTE_SERVER, "kick", {"user_id": 7}),
    ]


async def test_a_failed_kick_after_disable_is_reported_not_an_error(
    api: TestClient, backends: FakeBackends
) -> None:
    backends.answers[(DB_PROXY, "users.disable")] = {"user": ALICE}
    backends.answers[(ROUTE_SERVER, "kick")] = LinkDown("no route_server is reachable")
    response = await api.post("/admin/v1/users/alice/disable", headers=AUTH)
    assert response.status == 200
    body = await response.json()
    assert body["kicked"] is None and "route_server" in body["warning"]


async def test_kick_resolves_the_user_first(api: TestClient, backends: FakeBackends) -> None:
    backends.answers[(DB_PROXY, "users.show")] = {"user": ALICE}
    backends.answers[(ROUTE_SERVER, "kick")] = {"kicked": 1}
    response = await api.post("/admin/v1/kick", json={"user": "alice"}, headers=AUTH)
    assert await response.json() == {"user": ALICE, "kicked": 1}
    backends.answers[(DB_PROXY, "users.show")] = NotFound("no user 'zed'")
    response = await api.post("/admin/v1/kick", json={"user": "zed"}, headers=AUTH)
    assert response.status == 404
    assert [c[:2] for c in backends.calls] == [
        (DB_PROXY, "users.show"),
        (ROUTE_SERVER, "kick"),
        (DB_PROXY, "users.show"),
    ]


async def test_send_forwards_only_the_given_target(api: TestClient, backends: FakeBackends) -> None:
    body = {"from": "system", "to_user": "bob", "to_group": None, "text": "hello"}
    await api.post("/admin/v1/messages", json=body, headers=AUTH)
    assert backends.calls == [(DB_PROXY, "send", {"from": "system", "to_user": "bob", "text": "hello"})]


async def test_department_and_group_paths(api: TestClient, backends: FakeBackends) -> None:
    await api.patch("/admin/v1/departments/3", json={"name": "Sales"}, headers=AUTH)
    await api.delete("/admin/v1/departments/3", headers=AUTH)
    await api.post("/admin/v1/groups/5/members", json={"add": ["bob"]}, headers=AUTH)
    await api.delete("/admin/v1/groups/5", headers=AUTH)
    await api.get("/admin/v1/groups?offset=10&limit=5", headers=AUTH)
    assert backends.calls == [
        (DB_PROXY, "depts.update", {"name": "Sales", "id": 3}),
        (DB_PROXY, "depts.delete", {"id": 3}),
        (DB_PROXY, "groups.members", {"id": 5, "add": ["bob"], "remove": []}),
        (DB_PROXY, "groups.dismiss", {"id": 5}),
        (DB_PROXY, "groups.list", {"offset": 10, "limit": 5}),
    ]


async def test_status_combines_gateways_and_every_server(
    api: TestClient, backends: FakeBackends, balancer: Balancer
) -> None:
    for i, connections in ((1, 3), (2, 4)):
        balancer.register(
            f"msg-{i}",
            owner=object(),
            prior_ip="10.0.0.5",
            backup_ip="",
            port=8000 + i,
            max_connections=100,
            started_at=0,
            now=0.0,
            connections=connections,
        )
    backends.each[ROUTE_SERVER] = [
        Answer("10.0.0.6:8200", {"node_id": "route-1", "gateways": [], "online_users": 7}),
        Answer("10.0.0.8:8200", error="unreachable", reachable=False),
    ]
    backends.each[DB_PROXY] = [Answer("10.0.0.7:10600", {"node_id": "db-1", "workers": 8, "database": "ok"})]
    response = await api.get("/admin/v1/status", headers=AUTH)
    status = await response.json()
    assert [(g["node_id"], g["address"], g["port"], g["connections"]) for g in status["gateways"]] == [
        ("msg-1", "10.0.0.5", 8001, 3),
        ("msg-2", "10.0.0.5", 8002, 4),
    ]
    assert status["connections"] == 7
    assert status["route_servers"][0]["status"] == "ok" and status["route_servers"][0]["online_users"] == 7
    assert status["route_servers"][1] == {
        "address": "10.0.0.8:8200",
        "status": "unreachable",
        "error": "unreachable",
    }
    assert status["db_proxies"][0]["workers"] == 8


# -- config --------------------------------------------------------------------------------


def test_config_checks_backend_addresses_and_the_token() -> None:
    with pytest.raises(ConfigError, match="db_proxies"):
        LoginServerConfig(db_proxies=("nohost",))
    with pytest.raises(ConfigError, match="route_servers"):
        LoginServerConfig(route_servers=("10.0.0.1:99999",))
    with pytest.raises(ConfigError, match="admin_token"):
        LoginServerConfig(admin_token="two words")


# -- the real link backends ------------------------------------------------------------------

ALL = ("login", "directory", "messages", "admin")


def info_of(
    node_id: str, roles: tuple[str, ...] = ALL
) -> Callable[[Link, internal_pb2.DbProxyInfoReq], Awaitable[internal_pb2.DbProxyInfo]]:
    """A db_proxy's DB_PROXY_INFO handler: the roles it serves."""

    async def info(link: Link, req: internal_pb2.DbProxyInfoReq) -> internal_pb2.DbProxyInfo:
        return internal_pb2.DbProxyInfo(node_id=node_id, roles=list(roles))

    return info


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_link_backends_call_a_real_admin_server() -> None:
    async def admin_call(link: Link, call: internal_pb2.AdminCall) -> internal_pb2.AdminResult:
        args = json.loads(call.args_json)
        if call.method == "users.show":
            if args.get("user") != "alice":
                raise NotFound(f"no user {args.get('user')!r}")
            return internal_pb2.AdminResult(result_json=json.dumps({"user": ALICE}))
        if call.method == "status":
            return internal_pb2.AdminResult(result_json=json.dumps({"node_id": "db-1"}))
        raise InvalidArgument(f"unknown admin method {call.method!r}")

    server = LinkServer(
        {
            internal_pb2.ROLE_ADMIN: Commands()
            .rpc(Rpcs.ADMIN_CALL, admin_call)
            .rpc(Rpcs.DB_PROXY_INFO, info_of("db-1"))
        },
        role=internal_pb2.ROLE_DB_PROXY,
        node_id="db-1",
    )
    port = await server.listen("127.0.0.1", 0)
    dead = f"127.0.0.1:{_free_port()}"  # nothing listens there
    backends = LinkBackends({DB_PROXY: [dead, f"127.0.0.1:{port}"], ROUTE_SERVER: [dead]}, ready_wait=1.0)
    backends.start()
    try:
        assert await backends.call(DB_PROXY, "users.show", {"user": "alice"}) == {"user": ALICE}
        with pytest.raises(NotFound, match="no user 'zed'"):
            await backends.call(DB_PROXY, "users.show", {"user": "zed"})
        with pytest.raises(InvalidArgument, match="unknown admin method"):
            await backends.call(DB_PROXY, "users.nothing", {})
        with pytest.raises(LinkDown):
            await backends.call(ROUTE_SERVER, "online", {})
        answers = await backends.call_each(DB_PROXY, "status", {})
        assert [(a.address, a.reachable, a.result) for a in answers] == [
            (dead, False, None),
            (f"127.0.0.1:{port}", True, {"node_id": "db-1"}),
        ]
        assert answers[1].roles == ALL
    finally:
        await backends.stop()
        await server.close()
        if server.server is not None:
            server.server.close()
            await server.server.wait_closed()


async def _until_down(upstream: Upstream) -> None:
    async with asyncio.timeout(5):
        while upstream.connected:
            await asyncio.sleep(0.01)


async def _db_proxy(node_id: str, roles: tuple[str, ...]) -> tuple[LinkServer, str]:
    """A db_proxy's admin side: it answers admin calls (with its node id) only if it serves admin."""

    async def admin_call(link: Link, call: internal_pb2.AdminCall) -> internal_pb2.AdminResult:
        return internal_pb2.AdminResult(result_json=json.dumps({"node_id": node_id, "method": call.method}))

    commands = Commands().rpc(Rpcs.DB_PROXY_INFO, info_of(node_id, roles))
    if "admin" in roles:
        commands = commands.rpc(Rpcs.ADMIN_CALL, admin_call)
    server = LinkServer({internal_pb2.ROLE_ADMIN: commands}, role=internal_pb2.ROLE_DB_PROXY, node_id=node_id)
    return server, f"127.0.0.1:{await server.listen('127.0.0.1', 0)}"


async def test_admin_calls_go_to_db_proxies_serving_admin_and_fail_over() -> None:
    servers = [
        await _db_proxy("db-msg", ("messages",)),
        await _db_proxy("db-admin-1", ("login", "directory", "admin")),
        await _db_proxy("db-admin-2", ("admin",)),
    ]
    backends = LinkBackends({DB_PROXY: [address for _, address in servers]}, ready_wait=1.0)
    backends.start()
    try:
        # The first in config order that serves admin, never the message-only one.
        assert (await backends.call(DB_PROXY, "users.list", {}))["node_id"] == "db-admin-1"
        answers = await backends.call_each(DB_PROXY, "status", {})
        assert [(a.result or {}).get("node_id") for a in answers] == ["db-msg", "db-admin-1", "db-admin-2"]
        assert [a.roles for a in answers] == [("messages",), ("login", "directory", "admin"), ("admin",)]
        assert "method" not in (answers[0].result or {})  # not asked: it would refuse the call
        await servers[1][0].close()
        await _until_down(backends.links[DB_PROXY][1][1])
        assert (await backends.call(DB_PROXY, "users.list", {}))["node_id"] == "db-admin-2"
        await servers[2][0].close()
        await _until_down(backends.links[DB_PROXY][2][1])
        with pytest.raises(LinkDown, match="no db_proxy serving admin is reachable"):
            await backends.call(DB_PROXY, "users.list", {})
    finally:
        await backends.stop()
        for server, _ in servers:
            await server.close()
