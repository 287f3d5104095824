"""Mutual TLS between common.tls's contexts, on real sockets on 127.0.0.1,
with certificates made by imctl.certs (what `imctl certs` writes)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.tls import client_context, peer_common_name, server_context
from imctl.certs import Issued, check_node_name, issue


@dataclass
class Pki:
    ca: str
    nodes: dict[str, Issued]

    def server(self, name: str) -> ssl.SSLContext:
        node = self.nodes[name]
        return server_context(str(node.cert), str(node.key), self.ca)

    def client(self, name: str) -> ssl.SSLContext:
        node = self.nodes[name]
        return client_context(str(node.cert), str(node.key), self.ca)


def make_pki(directory: Path, *names: str) -> Pki:
    _, issued = issue(directory, list(names))
    return Pki(str(directory / "ca.pem"), {node.name: node for node in issued})


@dataclass
class Server:
    port: int
    peers: asyncio.Queue[str | None]  # the CN of each client whose handshake succeeded


@pytest.fixture
async def route(tmp_path: Path) -> AsyncIterator[tuple[Pki, Server]]:
    """A TLS server as route-1 that answers "hi" and records its client's CN."""
    pki = make_pki(tmp_path / "cluster", "route-1", "db-1")
    peers: asyncio.Queue[str | None] = asyncio.Queue()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.put_nowait(peer_common_name(writer.get_extra_info("ssl_object")))
        writer.write(b"hi")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0, ssl=pki.server("route-1"))
    try:
        yield pki, Server(server.sockets[0].getsockname()[1], peers)
    finally:
        server.close()
        await server.wait_closed()


async def exchange(port: int, context: ssl.SSLContext) -> tuple[bytes, str | None]:
    """Connect, read what the server says; (bytes, the server's CN)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        name = peer_common_name(writer.get_extra_info("ssl_object"))
        return await asyncio.wait_for(reader.read(), 5), name
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ssl.SSLError, ConnectionError):
            pass


async def test_both_ends_verify_each_other(route: tuple[Pki, Server]) -> None:
    pki, server = route
    data, server_name = await exchange(server.port, pki.client("db-1"))
    assert (data, server_name) == (b"hi", "route-1")
    assert await asyncio.wait_for(server.peers.get(), 5) == "db-1"


async def test_a_client_from_another_ca_is_refused(route: tuple[Pki, Server], tmp_path: Path) -> None:
    pki, server = route
    stranger = make_pki(tmp_path / "elsewhere", "db-1")
    # It trusts our CA, so it would accept our server; ours must not accept it.
    foreign = client_context(str(stranger.nodes["db-1"].cert), str(stranger.nodes["db-1"].key), pki.ca)
    # TLS 1.3: the client's side completes first; the server's refusal arrives as an alert.
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        data, _ = await exchange(server.port, foreign)
        if not data:
            raise ConnectionError("closed without a word")
    assert server.peers.empty()  # the server's handler never ran


async def test_a_client_without_a_certificate_is_refused(route: tuple[Pki, Server]) -> None:
    pki, server = route
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.check_hostname = False
    anonymous.load_verify_locations(pki.ca)
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        data, _ = await exchange(server.port, anonymous)
        if not data:
            raise ConnectionError("closed without a word")
    assert server.peers.empty()


async def test_a_server_from_another_ca_is_refused(route: tuple[Pki, Server], tmp_path: Path) -> None:
    pki, _ = route
    stranger = make_pki(tmp_path / "elsewhere", "route-1")
    impostor = await asyncio.start_server(
        lambda r, w: w.close(), "127.0.0.1", 0, ssl=stranger.server("route-1")
    )
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            await exchange(impostor.sockets[0].getsockname()[1], pki.client("db-1"))
    finally:
        impostor.close()
        await impostor.wait_closed()


def test_tls_1_3_only(tmp_path: Path) -> None:
    pki = make_pki(tmp_path, "db-1")
    for context in (pki.server("db-1"), pki.client("db-1")):
        assert context.minimum_version == ssl.TLSVersion.TLSv1_3
        assert context.verify_mode == ssl.CERT_REQUIRED
    assert not pki.client("db-1").check_hostname  # nodes are reached by IP: see common/tls.py


def test_certificates_as_documented(tmp_path: Path) -> None:
    created, issued = issue(tmp_path, ["db-1", "10.0.0.7"], days=30)
    assert created
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for path in ("ca.key", "db-1.key", "10.0.0.7.key"):
        assert (tmp_path / path).stat().st_mode & 0o777 == 0o600
    db = x509.load_pem_x509_certificate(issued[0].cert.read_bytes())
    assert db.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "db-1"
    assert db.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    ) == ["db-1"]
    usages = db.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not db.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert (db.not_valid_after_utc - db.not_valid_before_utc).days == 30
    by_ip = x509.load_pem_x509_certificate(issued[1].cert.read_bytes())
    assert by_ip.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.IPAddress
    )


def test_the_ca_is_made_once_and_node_files_kept(tmp_path: Path) -> None:
    issue(tmp_path, ["db-1"])
    ca_before = (tmp_path / "ca.pem").read_bytes()
    db_before = (tmp_path / "db-1.pem").read_bytes()
    created, issued = issue(tmp_path, ["db-1", "msg-1"])
    assert not created and (tmp_path / "ca.pem").read_bytes() == ca_before
    assert [(n.name, n.created) for n in issued] == [("db-1", False), ("msg-1", True)]
    assert (tmp_path / "db-1.pem").read_bytes() == db_before
    _, (renewed,) = issue(tmp_path, ["db-1"], renew=True)
    assert renewed.created and renewed.cert.read_bytes() != db_before


@pytest.mark.parametrize("name", ["", "ca", "../x", "a/b", "-x", "x-", "a..b", "with space"])
def test_bad_node_names(name: str) -> None:
    with pytest.raises(ValueError, match="bad node name"):
        check_node_name(name)
