"""FcmProvider against a local HTTPS stand-in for Google (fake_fcm) on 127.0.0.1: OAuth2 for a
service account done for real (a key made here, its assertion checked), then messages:send."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from common.config import ConfigError
from db_proxy.offline_push.config import OfflinePushConfig
from db_proxy.offline_push.fcm import RENEW_EARLY, FcmProvider
from db_proxy.offline_push.provider import Outcome
from tests.offline_push_providers.conftest import ANDROID, HOST, IOS, Clock, Pki, notification, running
from tests.offline_push_providers.fake_fcm import PROJECT, Answer, FakeFcm, fcm_code, google_error, serve

PHONE = "fcm-token-of-the-phone"
# FCM's answers, as https://firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode describes them.
UNREGISTERED = google_error(404, "NOT_FOUND", "Requested entity was not found.", fcm_code("UNREGISTERED"))
BAD_TOKEN = google_error(
    400,
    "INVALID_ARGUMENT",
    "The registration token is not a valid FCM registration token",
    fcm_code("INVALID_ARGUMENT"),
    {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [{"field": "message.token"}]},
)
TOO_BIG = google_error(400, "INVALID_ARGUMENT", "Message is too big", fcm_code("INVALID_ARGUMENT"))
MISMATCH = google_error(403, "PERMISSION_DENIED", "SenderId mismatch", fcm_code("SENDER_ID_MISMATCH"))


@dataclass
class Fcm:
    provider: FcmProvider
    fake: FakeFcm


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def write_account(path: Path, key: rsa.RSAPrivateKey, token_uri: str) -> str:
    """A service-account JSON as the Firebase console downloads it (the fields that matter)."""
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": PROJECT,
                "private_key_id": "kid-1",
                "private_key": _pem(key),
                "client_email": "push@example-project.iam.gserviceaccount.com",
                "token_uri": token_uri,
            }
        )
    )
    return str(path)


@pytest.fixture(scope="module")
def account_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
async def fcm(tmp_path: Path, pki: Pki, clock: Clock, account_key: rsa.RSAPrivateKey) -> AsyncIterator[Fcm]:
    async with serve(FakeFcm(account_key.public_key()), pki.server_context(["http/1.1"]), HOST) as fake:
        config = OfflinePushConfig(
            fcm_project_id=PROJECT,
            fcm_credentials=write_account(tmp_path / "account.json", account_key, fake.token_uri),
            fcm_endpoint=fake.url,
            ca_file=pki.ca_file,
        )
        async with running(FcmProvider(config, clock=clock)) as provider:
            yield Fcm(provider, fake)


async def test_delivered(fcm: Fcm) -> None:
    sent = notification((ANDROID, PHONE))
    result = await fcm.provider.send(sent)
    assert result.outcome is Outcome.DELIVERED, result
    (message,) = fcm.fake.sent
    assert message.access_token == fcm.fake.issued[0]
    assert message.message["token"] == PHONE
    assert message.message["notification"] == {"title": "alice", "body": "New message"}
    assert message.message["data"] == {
        "key": sent.key,
        "msg_id": "42",
        "from_user_id": "3",
        "to_id": "3",
        "session_type": "1",
        "created_at": "1700000000",
    }
    assert message.message["android"]["collapse_key"] == sent.key
    assert message.message["android"]["priority"] == "high"


async def test_text_only_when_given(fcm: Fcm) -> None:
    await fcm.provider.send(notification((ANDROID, PHONE), text="lunch?"))
    assert fcm.fake.sent[0].message["notification"]["body"] == "lunch?"


async def test_access_token_cached_then_renewed_before_it_expires(fcm: Fcm, clock: Clock) -> None:
    for _ in range(3):
        await fcm.provider.send(notification((ANDROID, PHONE)))
    assert fcm.fake.issued == ["access-1"]
    clock.now += fcm.fake.expires_in - RENEW_EARLY - 1
    await fcm.provider.send(notification((ANDROID, PHONE)))
    assert fcm.fake.issued == ["access-1"]

    clock.now += 1
    result = await fcm.provider.send(notification((ANDROID, PHONE)))
    assert result.outcome is Outcome.DELIVERED
    assert fcm.fake.issued == ["access-1", "access-2"]
    assert [sent.access_token for sent in fcm.fake.sent] == ["access-1"] * 4 + ["access-2"]


async def test_concurrent_sends_share_one_token_request(fcm: Fcm) -> None:
    results = await asyncio.gather(*(fcm.provider.send(notification((ANDROID, PHONE))) for _ in range(5)))
    assert {result.outcome for result in results} == {Outcome.DELIVERED}
    assert fcm.fake.issued == ["access-1"]


async def test_revoked_token_renewed_once_on_401(fcm: Fcm) -> None:
    await fcm.provider.send(notification((ANDROID, PHONE)))
    fcm.fake.valid.clear()  # revoked
    result = await fcm.provider.send(notification((ANDROID, PHONE)))
    assert result.outcome is Outcome.DELIVERED
    assert fcm.fake.issued == ["access-1", "access-2"]
    assert fcm.fake.sent[-1].access_token == "access-2"


async def test_retry_after_honoured_on_503(fcm: Fcm) -> None:
    fcm.fake.script[PHONE] = [Answer(503, {}, {"Retry-After": "7"})]
    result = await fcm.provider.send(notification((ANDROID, PHONE)))
    assert (result.outcome, result.retry_after) == (Outcome.RETRY, 7.0)
    # What the queue does after that delay: the same notification again, now delivered.
    assert (await fcm.provider.send(notification((ANDROID, PHONE)))).outcome is Outcome.DELIVERED


@pytest.mark.parametrize(
    ("answer", "outcome", "is_stale"),
    [
        pytest.param(UNREGISTERED, Outcome.REJECTED, True, id="404-unregistered"),
        pytest.param(BAD_TOKEN, Outcome.REJECTED, True, id="400-invalid-token"),
        pytest.param(TOO_BIG, Outcome.REJECTED, False, id="400-invalid-payload"),
        pytest.param(MISMATCH, Outcome.REJECTED, False, id="403-sender-mismatch"),
        pytest.param(google_error(429, "RESOURCE_EXHAUSTED", "quota"), Outcome.RETRY, False, id="429"),
        pytest.param(google_error(500, "INTERNAL", "oops"), Outcome.RETRY, False, id="500"),
    ],
)
async def test_answers_mapped(fcm: Fcm, answer: Answer, outcome: Outcome, is_stale: bool) -> None:
    fcm.fake.script[PHONE] = [answer]
    result = await fcm.provider.send(notification((ANDROID, PHONE)))
    assert result.outcome is outcome, result
    assert result.stale_tokens == ((PHONE,) if is_stale else ())


async def test_only_android_devices_sent_and_results_combined(fcm: Fcm) -> None:
    assert not fcm.provider.serves(notification((IOS, "apns-token")))
    gone = "fcm-token-of-an-old-phone"
    fcm.fake.script[gone] = [UNREGISTERED]
    result = await fcm.provider.send(
        notification((IOS, "apns-token"), (ANDROID, PHONE), (ANDROID, gone), (ANDROID, PHONE))
    )
    assert result.outcome is Outcome.DELIVERED
    assert result.stale_tokens == (gone,)
    assert sorted(sent.message["token"] for sent in fcm.fake.sent) == sorted([PHONE, gone])

    fcm.fake.script[gone] = [google_error(404, "NOT_FOUND", "gone")]  # a bare 404: gone too
    only_gone = await fcm.provider.send(notification((ANDROID, gone)))
    assert (only_gone.outcome, only_gone.stale_tokens) == (Outcome.REJECTED, (gone,))


async def test_credentials_google_refuses_reject_without_sending(
    tmp_path: Path, pki: Pki, clock: Clock, fcm: Fcm
) -> None:
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    config = OfflinePushConfig(
        fcm_project_id=PROJECT,
        fcm_credentials=write_account(tmp_path / "other.json", other_key, fcm.fake.token_uri),
        fcm_endpoint=fcm.fake.url,
        ca_file=pki.ca_file,
    )
    async with running(FcmProvider(config, clock=clock)) as provider:
        result = await provider.send(notification((ANDROID, PHONE)))
    assert result.outcome is Outcome.REJECTED
    assert "invalid_grant" in result.detail
    assert fcm.fake.sent == []


def test_unreadable_credentials_name_the_setting(tmp_path: Path) -> None:
    (tmp_path / "junk.json").write_text('{"client_email": "x"}')
    for path in (tmp_path / "junk.json", tmp_path / "missing.json"):
        with pytest.raises(ConfigError, match=r"offline_push\.fcm_credentials"):
            FcmProvider(OfflinePushConfig(fcm_project_id=PROJECT, fcm_credentials=str(path)))
