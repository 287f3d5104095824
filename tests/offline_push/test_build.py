"""Building notifications (pure), and the factory's choice of providers."""

from __future__ import annotations

from typing import Any

import pytest

from common.pb import base_pb2, internal_pb2, message_pb2
from common.teamtalk_text import encode_text
from db_proxy.offline_push.build import TEXT_LIMIT, message_text, notification_key, notifications
from db_proxy.offline_push.config import OfflinePushConfig
from db_proxy.offline_push.factory import build_offline_push
from db_proxy.offline_push.provider import Device
from db_proxy.offline_push.webhook import WebhookProvider


def test_text_only_of_text_messages() -> None:
    single, group = base_pb2.MSG_TYPE_SINGLE_TEXT, base_pb2.MSG_TYPE_GROUP_TEXT
    assert message_text(single, encode_text("héllo")) == "héllo"  # a TeamTalk client's encoding
    assert message_text(group, b"plain text") == "plain text"  # another client's plain UTF-8
    assert message_text(single, b"\xff\xfe") is None
    assert message_text(base_pb2.MSG_TYPE_SINGLE_AUDIO, b"audio bytes") is None
    assert message_text(single, encode_text("x" * 5000)) == "x" * TEXT_LIMIT


def test_keys_are_per_conversation_message_and_recipient() -> None:
    def push(session_type: base_pb2.SessionType.ValueType, sender: int, to: int) -> internal_pb2.PushMsg:
        return internal_pb2.PushMsg(
            session_type=session_type, from_user_id=sender, to_id=to, msg_id=5, body=b""
        )

    single = base_pb2.SESSION_TYPE_SINGLE
    # Both directions of a 1:1 conversation share its msg ids: the pair, unordered.
    assert notification_key(push(single, 3, 7), 7) == "1.3.7.5.7"
    assert notification_key(push(single, 7, 3), 3) == "1.3.7.5.3"
    assert notification_key(push(base_pb2.SESSION_TYPE_GROUP, 3, 50), 7) == "2.50.0.5.7"


def test_shielded_and_sender_get_nothing_and_a_bad_body_still_notifies() -> None:
    push = internal_pb2.PushMsg(
        user_ids=[3, 7, 8], session_type=base_pb2.SESSION_TYPE_SINGLE, from_user_id=3, to_id=7, msg_id=1,
        body=b"\xff not a message",
    )  # fmt: skip
    device = Device(7, base_pb2.CLIENT_TYPE_IOS, "t")
    made, left_out = notifications(
        push, [3, 7, 8, 7], devices={7: (device,)}, shielded={8}, sender_name="Al", include_text=True
    )
    assert left_out == [8]
    (only,) = made
    assert (only.user_id, only.devices, only.text, only.created_at) == (7, (device,), None, 0)


def test_text_left_out_unless_configured() -> None:
    data = message_pb2.IMMsgData(
        from_user_id=3, to_session_id=7, msg_id=1, create_time=9, msg_type=base_pb2.MSG_TYPE_SINGLE_TEXT,
        msg_data=encode_text("hi"),
    )  # fmt: skip
    push = internal_pb2.PushMsg(
        user_ids=[7], session_type=base_pb2.SESSION_TYPE_SINGLE, from_user_id=3, to_id=7, msg_id=1,
        body=data.SerializeToString(),
    )  # fmt: skip
    for include, text in ((False, None), (True, "hi")):
        (made,), _ = notifications(
            push, [7], devices={}, shielded=set(), sender_name="", include_text=include
        )
        assert made.text == text and made.created_at == 9


async def test_factory() -> None:
    assert build_offline_push(OfflinePushConfig(), object(), object()) is None  # type: ignore[arg-type]
    config = OfflinePushConfig(webhook_url="http://127.0.0.1:9/hook", webhook_secret="s")
    offline = build_offline_push(config, object(), object())  # type: ignore[arg-type]
    assert offline is not None
    assert [type(p) for p in offline.providers.values()] == [WebhookProvider]
    await offline.stop()


async def test_stopping_counts_what_was_left() -> None:
    config = OfflinePushConfig(webhook_url="http://127.0.0.1:9/hook", webhook_secret="s", queue_size=2)
    offline = build_offline_push(config, object(), object())  # type: ignore[arg-type]
    assert offline is not None
    push = internal_pb2.PushMsg(
        user_ids=[7, 8, 9],
        session_type=base_pb2.SESSION_TYPE_SINGLE,
        from_user_id=3,
        to_id=7,
        msg_id=1,
        body=b"",
    )
    offline.offer(push, [7])  # not started: refused, counted
    offline._running = True  # taking offers, not building them (no task runs)
    offline.offer(push, [7, 8])
    offline.offer(push, [9])  # past queue_size recipients waiting for their lookup
    await offline.stop()
    assert offline.status()["dropped"] == {"queue_full": 2, "shutdown": 2}


@pytest.mark.parametrize("bad", [{"webhook_url": "ftp://x"}, {"webhook_url": "http://x"}])
def test_config_checks(bad: dict[str, Any]) -> None:
    from common.config import ConfigError

    with pytest.raises(ConfigError):
        OfflinePushConfig(**bad)
