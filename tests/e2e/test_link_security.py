"""Every internal port of a real cluster, tried as an attacker on the network would.

For db_proxy, route_server and login_server's gateway port: a peer without
the cluster secret (none, or a wrong one) gets no command answered and is
closed; the admin methods cannot be reached without it; a second peer
claiming a node id that is linked is refused. With mutual TLS on, a peer
whose certificate comes from another CA does not get as far as the
handshake. In each case the same call with the right credentials works, so
none of these tests can pass by the port being simply dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from common.commands import Cmd, Rpcs
from common.errors import Unavailable
from common.link import Backoff, Identity, LinkSettings, Upstream
from common.link.wire import Kind, LinkDecoder, encode
from common.pb import internal_pb2
from common.tls import client_context
from imctl.certs import issue
from tests.e2e.conftest import Cluster, TTClient, running_cluster

PORTS = {
    # port name: (server, how to read its port, the role the server has)
    "db_proxy": ("db-1", "port", internal_pb2.ROLE_DB_PROXY),
    "route_server": ("route-1", "port", internal_pb2.ROLE_ROUTE_SERVER),
    "login_server": ("login-1", "gateway_port", internal_pb2.ROLE_LOGIN_SERVER),
}
ADMIN = Identity(internal_pb2.ROLE_ADMIN, "attacker")
# login_server's gateway port takes gateways only; a probe there is one that never registers.
PROBE = {"login_server": Identity(internal_pb2.ROLE_GATEWAY, "msg-probe")}
USERS_LIST = internal_pb2.AdminCall(method="users.list", args_json="{}")


@pytest.fixture(scope="module", params=["sqlite", "mysql+redis"])
def secured(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(request.param, tmp_path_factory.mktemp("secured")) as started:
        yield started


@pytest.fixture(scope="module")
def with_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster("sqlite", tmp_path_factory.mktemp("tls"), tls=True) as started:
        yield started


def port_of(cluster: Cluster, which: str) -> int:
    server, key, _ = PORTS[which]
    port = cluster.local.by_name(server).info[key]
    assert isinstance(port, int)
    return port


def secret_of(cluster: Cluster) -> tuple[bytes, ...]:
    assert cluster.local.secret_file is not None
    return (cluster.local.secret_file.read_text().strip().encode(),)


def metric(cluster: Cluster, server: str, name: str) -> float:
    port = cluster.local.by_name(server).info["metrics_port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def fetch_json(url: str) -> list[dict[str, str]]:
    with urllib.request.urlopen(url, timeout=5) as response:
        result: list[dict[str, str]] = json.loads(response.read())
    return result


@pytest.fixture
async def upstreams() -> AsyncIterator[list[Upstream]]:
    made: list[Upstream] = []
    yield made
    for upstream in made:
        await upstream.stop()


def start(made: list[Upstream], port: int, me: Identity, settings: LinkSettings, role: int) -> Upstream:
    upstream = Upstream(
        "probe", [("127.0.0.1", port)], me, settings=settings, expect_role=role, backoff=Backoff(0.05, 0.2)
    )
    upstream.start()
    made.append(upstream)
    return upstream


async def refused_repeatedly(upstream: Upstream, attempts: int = 3) -> None:
    async with asyncio.timeout(10):
        while upstream.attempts < attempts:
            await asyncio.sleep(0.02)
    assert not upstream.connected


@pytest.mark.parametrize("which", list(PORTS))
async def test_a_forged_hello_gets_nothing_and_is_closed(secured: Cluster, which: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(secured, which))
    try:
        decoder = LinkDecoder()
        challenge = None
        async with asyncio.timeout(5):
            while challenge is None:
                decoder.feed(await reader.read(4096))
                challenge = decoder.next_frame()
        assert challenge.command_id == Cmd.LINK_CHALLENGE
        hello = internal_pb2.LinkHello(
            role=internal_pb2.ROLE_ADMIN, node_id="attacker", nonce=b"\x01" * 32, proof=b"\x02" * 32
        )
        writer.write(encode(Kind.ONEWAY, Cmd.LINK_HELLO, 0, hello.SerializeToString()))
        writer.write(encode(Kind.REQUEST, Cmd.ADMIN_CALL, 1, USERS_LIST.SerializeToString()))
        await writer.drain()
        rest = b""
        # Until the server closes: a FIN, or a reset since our request was left unread.
        with contextlib.suppress(ConnectionResetError):
            async with asyncio.timeout(5):
                while chunk := await reader.read(4096):
                    rest += chunk
        assert rest == b"", "the server answered a peer that did not prove the secret"
    finally:
        writer.close()
    server = PORTS[which][0]
    assert metric(secured, server, 'imcluster_link_auth_failures_total{reason="bad_proof"}') >= 1
    log = (secured.local.run_dir / f"{server}.log").read_text()
    assert "did not prove the cluster secret" in log and "127.0.0.1:" in log


@pytest.mark.parametrize("which", list(PORTS))
@pytest.mark.parametrize("secrets", [(), (b"not-the-cluster-secret-at-all",)], ids=["none", "wrong"])
async def test_no_command_is_answered_without_the_secret(
    secured: Cluster, upstreams: list[Upstream], which: str, secrets: tuple[bytes, ...]
) -> None:
    role = PORTS[which][2]
    intruder = start(upstreams, port_of(secured, which), ADMIN, LinkSettings(secrets=secrets), role)
    await refused_repeatedly(intruder)
    with pytest.raises(Unavailable):
        await intruder.call(Rpcs.ADMIN_CALL, USERS_LIST, 2.0)


async def test_admin_methods_need_the_secret(secured: Cluster, upstreams: list[Upstream]) -> None:
    port = port_of(secured, "db_proxy")
    wrong = start(upstreams, port, ADMIN, LinkSettings(secrets=(b"x" * 32,)), internal_pb2.ROLE_DB_PROXY)
    await refused_repeatedly(wrong)
    with pytest.raises(Unavailable):
        await wrong.call(Rpcs.ADMIN_CALL, USERS_LIST, 2.0)
    # The same call with the secret is answered: the port is alive and the call is real.
    right = start(
        upstreams, port, ADMIN, LinkSettings(secrets=secret_of(secured)), internal_pb2.ROLE_DB_PROXY
    )
    assert await right.wait_ready(10)
    result = await right.call(Rpcs.ADMIN_CALL, USERS_LIST, 10.0)
    assert "alice" in json.dumps(json.loads(result.result_json))


@pytest.mark.parametrize("which", list(PORTS))
async def test_a_linked_node_id_is_not_taken_over(
    secured: Cluster, upstreams: list[Upstream], which: str, clients: list[TTClient]
) -> None:
    """Even with the secret, a second "msg-1" is refused while the real one is linked."""
    role = PORTS[which][2]
    settings = LinkSettings(secrets=secret_of(secured))
    impostor = start(
        upstreams, port_of(secured, which), Identity(internal_pb2.ROLE_GATEWAY, "msg-1"), settings, role
    )
    await refused_repeatedly(impostor)
    # The real msg-1 still works end to end and is still handed out.
    alice = await secured.client("alice", "msg-1")
    bob = await secured.client("bob", "msg-2")
    clients += [alice, bob]
    ack = await alice.send_text(bob.user_id, b"still here")
    assert ack.msg_id > 0
    assert (await bob.next_push(Cmd.MSG_DATA)).msg_data == b"still here"
    gateways = await asyncio.to_thread(fetch_json, secured.discovery_url.replace("msg_server", "gateways"))
    assert sorted(g["node_id"] for g in gateways) == ["msg-1", "msg-2"]
    assert all(g["peer"].startswith("127.0.0.1:") for g in gateways)


async def test_tls_cluster_carries_messages(with_tls: Cluster, clients: list[TTClient]) -> None:
    alice = await with_tls.client("alice", "msg-1")
    bob = await with_tls.client("bob", "msg-2")
    clients += [alice, bob]
    await alice.send_text(bob.user_id, b"over tls")
    assert (await bob.next_push(Cmd.MSG_DATA)).msg_data == b"over tls"


@pytest.mark.parametrize("which", list(PORTS))
async def test_tls_refuses_a_certificate_from_another_ca(
    with_tls: Cluster, upstreams: list[Upstream], tmp_path: Path, which: str
) -> None:
    port, role = port_of(with_tls, which), PORTS[which][2]
    _, (rogue,) = issue(tmp_path / "other-ca", ["rogue"])
    ours = with_tls.local.tls_dir
    assert ours is not None
    # The rogue even knows the secret: the certificate alone keeps it out.
    rogue_tls = client_context(str(rogue.cert), str(rogue.key), str(ours / "ca.pem"))
    intruder = start(
        upstreams, port, ADMIN, LinkSettings(secrets=secret_of(with_tls), client_ssl=rogue_tls), role
    )
    await refused_repeatedly(intruder)
    server = PORTS[which][0]
    assert metric(with_tls, server, 'imcluster_link_auth_failures_total{reason="tls"}') >= 1
    log = (with_tls.local.run_dir / f"{server}.log").read_text()
    assert "TLS handshake failed" in log and "127.0.0.1:" in log
    # Without TLS at all, nothing either.
    plain = start(upstreams, port, ADMIN, LinkSettings(secrets=secret_of(with_tls)), role)
    await refused_repeatedly(plain)
    # A certificate of the cluster's CA (and the secret) gets in.
    _, (probe,) = issue(ours, ["probe"])
    good_tls = client_context(str(probe.cert), str(probe.key), str(ours / "ca.pem"))
    me = PROBE.get(which, ADMIN)
    good = start(upstreams, port, me, LinkSettings(secrets=secret_of(with_tls), client_ssl=good_tls), role)
    assert await good.wait_ready(10)
