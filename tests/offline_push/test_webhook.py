"""The webhook provider against a local receiver, alone and under the runner (OfflinePush)."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from common.pb import base_pb2, internal_pb2, message_pb2
from common.teamtalk_text import encode_text
from db_proxy.offline_push.config import OfflinePushConfig
from db_proxy.offline_push.http import retry_after
from db_proxy.offline_push.provider import Device, Notification, Outcome
from db_proxy.offline_push.pusher import OfflinePush
from db_proxy.offline_push.webhook import WebhookProvider, sign
from db_proxy.storage.model import DeviceToken, StoreError, User
from imctl.certs import issue
from tests.offline_push.receiver import SECRET, Receiver, signature_ok


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    started = await Receiver().start()
    yield started
    await started.close()


def config(url: str, **kw: object) -> OfflinePushConfig:
    base = OfflinePushConfig(
        webhook_url=url, webhook_secret=SECRET, retry_initial=0.05, retry_max=0.2, retry_for=5.0, timeout=2.0
    )
    return replace(base, **kw)  # type: ignore[arg-type]


NOTE = Notification(
    "1.3.7.42.7", 7, 3, base_pb2.SESSION_TYPE_SINGLE, 7, 42, 1_700_000_000, "Alice", None,
    (Device(7, base_pb2.CLIENT_TYPE_ANDROID, "tok-a"),),
)  # fmt: skip


def test_signature_matches_the_documented_check() -> None:
    body = b'{"id":"x"}'
    assert signature_ok(SECRET, "1700000000", body, sign(SECRET, "1700000000", body))
    assert not signature_ok(SECRET, "1700000001", body, sign(SECRET, "1700000000", body))
    assert not signature_ok("other", "1700000000", body, sign(SECRET, "1700000000", body))


def test_retry_after_header() -> None:
    assert retry_after("7", 0.0) == 7.0
    assert retry_after(None, 0.0) is None
    assert retry_after("soon", 0.0) is None
    assert retry_after("Wed, 21 Oct 2015 07:28:10 GMT", 1445412480.0) == 10.0


async def test_signed_json_and_status_mapping(receiver: Receiver) -> None:
    provider = WebhookProvider(config(receiver.url))
    try:
        assert (await provider.send(NOTE)).outcome is Outcome.DELIVERED
        (got,) = receiver.accepted
        assert got == {
            "id": "1.3.7.42.7",
            "user_id": 7,
            "from_user_id": 3,
            "sender_name": "Alice",
            "session_type": "single",
            "to_id": 7,
            "msg_id": 42,
            "created_at": 1_700_000_000,
            "devices": [
                {"client_type": base_pb2.CLIENT_TYPE_ANDROID, "platform": "android", "token": "tok-a"}
            ],
        }  # no "text": include_text is off
        receiver.script = [500, 429, 400, 404]
        assert (await provider.send(NOTE)).outcome is Outcome.RETRY
        assert (await provider.send(NOTE)).outcome is Outcome.RETRY
        assert (await provider.send(NOTE)).outcome is Outcome.REJECTED
        assert (await provider.send(NOTE)).outcome is Outcome.REJECTED
        assert receiver.bad_signatures == 0
    finally:
        await provider.close()


async def test_wrong_secret_is_refused(receiver: Receiver) -> None:
    provider = WebhookProvider(config(receiver.url, webhook_secret="not-the-secret"))
    try:
        result = await provider.send(NOTE)
    finally:
        await provider.close()
    assert result.outcome is Outcome.REJECTED  # 401
    assert receiver.bad_signatures == 1 and not receiver.accepted


async def test_connection_refused_is_retried() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    provider = WebhookProvider(config(f"http://127.0.0.1:{port}/hook"))
    try:
        assert (await provider.send(NOTE)).outcome is Outcome.RETRY
    finally:
        await provider.close()


async def test_https_checked_against_ca_file(tmp_path: Path) -> None:
    ca_dir = tmp_path / "tls"
    _, (node,) = issue(ca_dir, ["127.0.0.1"])
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(node.cert, node.key)
    receiver = await Receiver(tls=tls).start()
    trusting = WebhookProvider(config(receiver.url, ca_file=str(ca_dir / "ca.pem")))
    system = WebhookProvider(config(receiver.url))  # the system's CAs do not know this one
    try:
        assert (await trusting.send(NOTE)).outcome is Outcome.DELIVERED
        refused = await system.send(NOTE)
        assert refused.outcome is Outcome.RETRY and "SSL" in refused.detail.upper()
        assert len(receiver.accepted) == 1
    finally:
        await trusting.close()
        await system.close()
        await receiver.close()


class FakeStore:
    """What OfflinePush reads, in memory."""

    def __init__(self) -> None:
        self.devices = [DeviceToken(7, base_pb2.CLIENT_TYPE_IOS, "ios-7")]
        self.push_shield: set[int] = set()
        self.group_shield: dict[int, set[int]] = {}
        self.queries = 0

    async def device_tokens(self, user_ids: list[int]) -> list[DeviceToken]:
        self.queries += 1
        return [d for d in self.devices if d.user_id in user_ids]

    async def push_shielded(self, user_ids: list[int]) -> set[int]:
        self.queries += 1
        return self.push_shield & set(user_ids)

    async def group_shielded(self, group_id: int, user_ids: list[int]) -> set[int]:
        self.queries += 1
        return self.group_shield.get(group_id, set()) & set(user_ids)

    async def users_by_id(self, user_ids: list[int]) -> list[User]:
        return [User(u, f"user{u}", "", nick=f"Nick {u}") for u in sorted(user_ids)]

    async def remove_device_tokens(self, devices: list[DeviceToken]) -> int:
        return 0


def push(
    msg_id: int, session_type: base_pb2.SessionType.ValueType = base_pb2.SESSION_TYPE_SINGLE, to_id: int = 7
) -> internal_pb2.PushMsg:
    group = session_type == base_pb2.SESSION_TYPE_GROUP
    data = message_pb2.IMMsgData(
        from_user_id=3,
        to_session_id=to_id,
        msg_id=msg_id,
        create_time=1_700_000_123,
        msg_type=base_pb2.MSG_TYPE_GROUP_TEXT if group else base_pb2.MSG_TYPE_SINGLE_TEXT,
        msg_data=encode_text("hello there"),
    )
    return internal_pb2.PushMsg(
        user_ids=[3, 7, 8], session_type=session_type, from_user_id=3, to_id=to_id, msg_id=msg_id,
        body=data.SerializeToString(),
    )  # fmt: skip


async def run(store: FakeStore, cfg: OfflinePushConfig) -> OfflinePush:
    offline = OfflinePush(cfg, [WebhookProvider(cfg)], store, store)  # type: ignore[arg-type]
    offline.start()
    return offline


async def test_runner_retries_500_then_delivers_and_dead_letters_400(receiver: Receiver) -> None:
    store = FakeStore()
    offline = await run(store, config(receiver.url))
    try:
        receiver.script = [500, 500]
        offline.offer(push(1), [7])
        await receiver.wait_for(1, timeout=10)
        assert receiver.attempts == 3
        receiver.script = [400]
        offline.offer(push(2), [7])
        async with asyncio.timeout(10):
            while offline.status()["dropped"].get("rejected", 0) < 1:
                await asyncio.sleep(0.02)
        assert receiver.ids == ["1.3.7.1.7"]
        status = offline.status()
        assert status["sent"] == {"webhook": 1} and status["queued"] == 0
        assert status["retries"] == 2
    finally:
        await offline.stop()


async def test_runner_shields_text_and_sender(receiver: Receiver) -> None:
    store = FakeStore()
    store.push_shield = {8}
    store.group_shield = {50: {7}}
    offline = await run(store, config(receiver.url, include_text=True))
    try:
        offline.offer(push(1), [3, 7, 8])  # the sender itself is never notified
        offline.offer(push(2, base_pb2.SESSION_TYPE_GROUP, 50), [7, 8])
        offline.offer(push(3, base_pb2.SESSION_TYPE_GROUP, 51), [7, 8])
        await receiver.wait_for(2, timeout=10)
        async with asyncio.timeout(10):
            while sum(offline.status()["dropped"].values()) < 4:
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        assert sorted(receiver.ids) == ["1.3.7.1.7", "2.51.0.3.7"]
        assert {n["text"] for n in receiver.accepted} == {"hello there"}
        assert {n["sender_name"] for n in receiver.accepted} == {"Nick 3"}
        group = next(n for n in receiver.accepted if n["session_type"] == "group")
        assert group["group_id"] == 51 and group["created_at"] == 1_700_000_123
        assert group["devices"] == [
            {"client_type": base_pb2.CLIENT_TYPE_IOS, "platform": "ios", "token": "ios-7"}
        ]
        assert offline.status()["dropped"] == {"shielded": 3, "group_shielded": 1}
    finally:
        await offline.stop()


async def test_a_failed_lookup_is_counted_once(receiver: Receiver) -> None:
    class Down(FakeStore):
        async def group_shielded(self, group_id: int, user_ids: list[int]) -> set[int]:
            raise StoreError("database down")

    offline = await run(Down(), config(receiver.url))
    try:
        offline.offer(push(1), [7, 8])
        offline.offer(push(2, base_pb2.SESSION_TYPE_GROUP, 50), [7])
        async with asyncio.timeout(10):
            while not offline.status()["dropped"]:
                await asyncio.sleep(0.02)
        assert offline.status()["dropped"] == {"lookup_failed": 3}  # the batch, nothing half sent
        assert offline.status()["queued"] == 0 and not receiver.accepted
    finally:
        await offline.stop()
