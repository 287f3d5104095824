"""ApnsProvider against a local HTTP/2 TLS stand-in (h2_server + fake_apns) on 127.0.0.1."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from db_proxy.offline_push.apns import TOKEN_SECONDS, ApnsProvider, collapse_id
from db_proxy.offline_push.config import OfflinePushConfig
from db_proxy.offline_push.mobile import TTL
from db_proxy.offline_push.provider import Outcome
from tests.offline_push_providers.conftest import ANDROID, HOST, IOS, Clock, Pki, notification, running
from tests.offline_push_providers.fake_apns import FakeApns, refusal
from tests.offline_push_providers.h2_server import Response, Server, serve

TOPIC = "com.example.chat"
PHONE = "a1b2c3d4" * 8  # APNs tokens are 64 hex digits


@dataclass
class Apns:
    provider: ApnsProvider
    fake: FakeApns
    server: Server
    config: OfflinePushConfig

    def tokens(self) -> list[str]:
        return [self.fake.provider_token(request) for request in self.fake.requests]


@pytest.fixture
async def apns(tmp_path: Path, pki: Pki, clock: Clock) -> AsyncIterator[Apns]:
    key = ec.generate_private_key(ec.SECP256R1())
    key_file = tmp_path / "AuthKey_KEY123.p8"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    fake = FakeApns(key.public_key(), key_id="KEY123", team_id="TEAM456", topic=TOPIC)
    async with serve(fake, pki.server_context(["h2"]), HOST) as server:
        config = OfflinePushConfig(
            apns_topic=TOPIC,
            apns_key_file=str(key_file),
            apns_key_id="KEY123",
            apns_team_id="TEAM456",
            apns_endpoint=f"https://{HOST}:{server.port}",
            ca_file=pki.ca_file,
        )
        async with running(ApnsProvider(config, clock=clock)) as provider:
            yield Apns(provider, fake, server, config)


async def test_delivered_over_http2_with_apple_headers_and_path(apns: Apns) -> None:
    sent = notification((IOS, PHONE))
    result = await apns.provider.send(sent)
    assert result.outcome is Outcome.DELIVERED, result
    (request,) = apns.fake.requests
    assert request.alpn == "h2"
    assert request.path == f"/3/device/{PHONE}"
    assert request.headers["authorization"].startswith("bearer ")
    assert request.headers["apns-topic"] == TOPIC
    assert request.headers["apns-push-type"] == "alert"
    assert request.headers["apns-priority"] == "10"
    assert request.headers["apns-collapse-id"] == sent.key
    assert request.headers["apns-expiration"] == str(sent.created_at + TTL)
    body = json.loads(request.body)
    assert body["aps"] == {"alert": {"title": "alice", "body": "New message"}, "sound": "default"}
    assert (body["msg_id"], body["from_user_id"], body["to_id"]) == ("42", "3", "3")


async def test_text_only_when_given(apns: Apns) -> None:
    await apns.provider.send(notification((IOS, PHONE), text="lunch?"))
    assert json.loads(apns.fake.requests[0].body)["aps"]["alert"]["body"] == "lunch?"


async def test_provider_token_reused_for_50_minutes_then_renewed(apns: Apns, clock: Clock) -> None:
    for _ in range(3):
        assert (await apns.provider.send(notification((IOS, PHONE)))).outcome is Outcome.DELIVERED
    clock.now += TOKEN_SECONDS - 1
    await apns.provider.send(notification((IOS, PHONE)))
    first, *rest = apns.tokens()
    assert rest == [first] * 3
    assert apns.server.connections == 1  # one HTTP/2 connection carried them all

    clock.now += 1
    await apns.provider.send(notification((IOS, PHONE)))
    assert apns.tokens()[-1] != first


async def test_expired_provider_token_renewed_and_sent_again_once(apns: Apns) -> None:
    await apns.provider.send(notification((IOS, PHONE)))
    (old,) = apns.tokens()
    apns.fake.expired.add(old)

    result = await apns.provider.send(notification((IOS, PHONE)))
    assert result.outcome is Outcome.DELIVERED, result
    assert apns.tokens()[1:] == [old, apns.tokens()[2]]
    assert apns.tokens()[2] != old

    apns.fake.expire_all = True  # a new token refused too: once, no loop
    result = await apns.provider.send(notification((IOS, PHONE)))
    assert result.outcome is Outcome.RETRY
    assert len(apns.fake.requests) == 5


@pytest.mark.parametrize(
    ("answer", "outcome", "is_stale", "retry_after"),
    [
        (refusal(410, "Unregistered"), Outcome.REJECTED, True, None),
        (refusal(400, "BadDeviceToken"), Outcome.REJECTED, True, None),
        (refusal(400, "BadCollapseId"), Outcome.REJECTED, False, None),
        (refusal(413, "PayloadTooLarge"), Outcome.REJECTED, False, None),
        (refusal(429, "TooManyRequests", {"retry-after": "12"}), Outcome.RETRY, False, 12.0),
        (refusal(503, "ServiceUnavailable"), Outcome.RETRY, False, None),
        (refusal(500, "InternalServerError"), Outcome.RETRY, False, None),
    ],
    ids=lambda value: str(value.status) + value.body.decode() if isinstance(value, Response) else None,
)
async def test_answers_mapped(
    apns: Apns, answer: Response, outcome: Outcome, is_stale: bool, retry_after: float | None
) -> None:
    apns.fake.script[PHONE] = [answer]
    result = await apns.provider.send(notification((IOS, PHONE)))
    assert result.outcome is outcome, result
    assert result.stale_tokens == ((PHONE,) if is_stale else ())
    assert result.retry_after == retry_after


async def test_only_ios_devices_sent_and_results_combined(apns: Apns) -> None:
    gone = "0f" * 32
    assert not apns.provider.serves(notification((ANDROID, "fcm-token")))
    apns.fake.script[gone] = [refusal(410, "Unregistered")]
    result = await apns.provider.send(notification((ANDROID, "fcm-token"), (IOS, PHONE), (IOS, gone)))
    assert result.outcome is Outcome.DELIVERED
    assert result.stale_tokens == (gone,)
    assert sorted(request.path for request in apns.fake.requests) == sorted(
        [f"/3/device/{PHONE}", f"/3/device/{gone}"]
    )


async def test_unreachable_is_retried(apns: Apns, clock: Clock) -> None:
    with socket.socket() as unused:  # a port nothing listens on once this is closed
        unused.bind((HOST, 0))
        port = unused.getsockname()[1]
    config = replace(apns.config, apns_endpoint=f"https://{HOST}:{port}")
    async with running(ApnsProvider(config, clock=clock)) as provider:
        result = await provider.send(notification((IOS, PHONE)))
    assert result.outcome is Outcome.RETRY
    assert "ConnectError" in result.detail


def test_collapse_id_fits_64_bytes() -> None:
    assert collapse_id("m42:u7") == "m42:u7"
    long = "é" * 40  # 80 bytes
    assert len(collapse_id(long)) == 64
    assert collapse_id(long) == collapse_id(long) != collapse_id(long + "x")
