"""APNs over HTTP/2: notifications to iOS devices, authorised by a provider token (JWT, ES256).

The token is signed with the team's auth key (``offline_push.apns_key_file``,
the .p8 Apple hands out) and carries only the team id and when it was made;
Apple refuses one older than an hour (ExpiredProviderToken) and one renewed
more often than every 20 minutes (TooManyProviderTokenUpdates), so one token
serves every request for 50 minutes, and a refused one is renewed once.
APNs speaks HTTP/2 only; one connection multiplexes the requests in flight.

Answers (Apple's "Handling notification responses from APNs"): 200
delivered; 410 Unregistered and 400 BadDeviceToken leave a stale token; 429
and 5xx are retried, at the Retry-After if given; 403 ExpiredProviderToken
renews the token and sends again once; any other 4xx is rejected.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from common.config import ConfigError
from db_proxy.offline_push.bearer import Bearer
from db_proxy.offline_push.config import OfflinePushConfig
from db_proxy.offline_push.http import client, is_transient, transient, unreachable
from db_proxy.offline_push.mobile import TTL, DeviceProvider, alert, ids, stale
from db_proxy.offline_push.provider import Notification, Outcome, Result, is_ios

#: Seconds one provider token is used: under Apple's hour, over its 20 minutes, with room for skew.
TOKEN_SECONDS = 50 * 60
#: apns-collapse-id's limit, in bytes.
COLLAPSE_ID_BYTES = 64
STALE_REASONS = frozenset({"BadDeviceToken", "Unregistered"})


def load_key(path: str) -> ec.EllipticCurvePrivateKey:
    """The .p8 auth key (PKCS#8 PEM, P-256); errors name the setting and the file."""
    where = f"offline_push.apns_key_file ({path})"
    try:
        with open(path, "rb") as file:
            key = serialization.load_pem_private_key(file.read(), password=None)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read: {exc.strerror}") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: not a PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ConfigError(f"{where}: not an ES256 (EC P-256) key")
    return key


class ApnsProvider(DeviceProvider):
    name = "apns"

    def __init__(self, config: OfflinePushConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._key = load_key(config.apns_key_file)  # first: a bad file leaves no client open
        super().__init__(client(config, http2=True))
        self._key_id = config.apns_key_id
        self._team_id = config.apns_team_id
        self._topic = config.apns_topic
        self._devices = f"{config.apns_endpoint.rstrip('/')}/3/device/"
        self._bearer = Bearer(self._provider_token, clock)

    def accepts(self, client_type: int) -> bool:
        return is_ios(client_type)

    async def send_to(self, notification: Notification, token: str) -> Result:
        # The token is the path's last segment: quoted, so a malformed one cannot reach another path.
        url = self._devices + urllib.parse.quote(token, safe="")
        body = json.dumps(payload(notification), separators=(",", ":")).encode()
        headers = {
            "apns-topic": self._topic,
            "apns-push-type": "alert",
            "apns-priority": "10",  # at once: someone wrote to the user
            "apns-collapse-id": collapse_id(notification.key),
            "apns-expiration": str(notification.created_at + TTL),
            "content-type": "application/json",
        }

        async def post(provider_token: str) -> httpx.Response:
            authorised = {**headers, "authorization": f"bearer {provider_token}"}
            return await self._http.post(url, content=body, headers=authorised)

        try:
            response = await self._bearer.use(post, _expired)
        except httpx.HTTPError as exc:
            return unreachable(exc, "apns")
        return answer(response, token)

    async def _provider_token(self) -> tuple[str, float]:
        claims = {"iss": self._team_id, "iat": int(time.time())}
        token = jwt.encode(claims, self._key, algorithm="ES256", headers={"kid": self._key_id})
        return token, TOKEN_SECONDS


def payload(notification: Notification) -> dict[str, Any]:
    title, body = alert(notification)
    return {"aps": {"alert": {"title": title, "body": body}, "sound": "default"}, **ids(notification)}


def collapse_id(key: str) -> str:
    """``key``, or its SHA-256 (64 hex digits) if it is longer than APNs allows: still one id a key."""
    if len(key.encode()) <= COLLAPSE_ID_BYTES:
        return key
    return hashlib.sha256(key.encode()).hexdigest()


def _reason(response: httpx.Response) -> str:
    try:
        reason = response.json().get("reason", "")
    except (ValueError, AttributeError):
        return ""
    return reason if isinstance(reason, str) else ""


def _expired(response: httpx.Response) -> bool:
    return response.status_code == 403 and _reason(response) == "ExpiredProviderToken"


def answer(response: httpx.Response, token: str) -> Result:
    status, reason = response.status_code, _reason(response)
    detail = f"apns: HTTP {status} {reason}".rstrip()
    if status == 200:
        return Result(Outcome.DELIVERED, response.headers.get("apns-id", ""))
    if status == 410 or (status == 400 and reason in STALE_REASONS):
        return stale(token, detail)
    if is_transient(status):
        return transient(response, "apns")
    if _expired(response):
        # Refused even when just made: this host's clock is off. Later, once it may be right.
        return Result(Outcome.RETRY, f"{detail} (a new token too: is the clock right?)")
    return Result(Outcome.REJECTED, detail)
