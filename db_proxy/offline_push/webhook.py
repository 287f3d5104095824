"""The generic provider: every notification POSTed as JSON to one URL, signed.

The receiver checks ``X-Imcluster-Signature: sha256=<hex>``, the HMAC-SHA256
under ``webhook_secret`` of ``f"{X-Imcluster-Timestamp}."`` followed by the
raw body (the timestamp is signed so a captured request cannot be replayed
later), and deduplicates by ``X-Imcluster-Id``, the notification key: a
retry after a lost answer, or a push handed over by a db_proxy that stopped,
sends the same key again. docs/offline-push.md has the JSON and a checker.

2xx: delivered. 429, 5xx, a timeout, a refused or broken connection: retried
(``Retry-After`` honoured). Any other status: rejected, a dead letter.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import httpx

from common.pb import base_pb2
from db_proxy.offline_push import http
from db_proxy.offline_push.config import OfflinePushConfig
from db_proxy.offline_push.provider import Notification, Outcome, Provider, Result, is_android, is_ios

USER_AGENT = "imcluster-offline-push/1"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Imcluster-Signature value of ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def _platform(client_type: int) -> str:
    if is_ios(client_type):
        return "ios"
    if is_android(client_type):
        return "android"
    return "other"


def payload(notification: Notification) -> dict[str, Any]:
    """The JSON object the webhook gets (``text`` only when include_text put one in)."""
    group = notification.session_type == base_pb2.SESSION_TYPE_GROUP
    body: dict[str, Any] = {
        "id": notification.key,
        "user_id": notification.user_id,
        "from_user_id": notification.from_user_id,
        "sender_name": notification.sender_name,
        "session_type": "group" if group else "single",
        "to_id": notification.to_id,
        "msg_id": notification.msg_id,
        "created_at": notification.created_at,
        "devices": [
            {"client_type": d.client_type, "platform": _platform(d.client_type), "token": d.token}
            for d in notification.devices
        ],
    }
    if group:
        body["group_id"] = notification.to_id
    if notification.text is not None:
        body["text"] = notification.text
    return body


class WebhookProvider(Provider):
    name = "webhook"

    def __init__(self, config: OfflinePushConfig) -> None:
        self.url = config.webhook_url
        self._secret = config.webhook_secret
        self.client = http.client(config, headers={"User-Agent": USER_AGENT})

    def serves(self, notification: Notification) -> bool:
        return True  # the receiver decides what to do, devices or not

    async def send(self, notification: Notification) -> Result:
        body = json.dumps(payload(notification), separators=(",", ":"), ensure_ascii=False).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Imcluster-Id": notification.key,
            "X-Imcluster-Timestamp": timestamp,
            "X-Imcluster-Signature": sign(self._secret, timestamp, body),
        }
        try:
            response = await self.client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:  # refused, reset, timed out, TLS failure, a broken response
            return http.unreachable(exc, "webhook")
        status = response.status_code
        if 200 <= status < 300:
            return Result(Outcome.DELIVERED)
        if http.is_transient(status):
            return http.transient(response, "webhook")
        return Result(Outcome.REJECTED, f"webhook: HTTP {status}")

    async def close(self) -> None:
        await self.client.aclose()
