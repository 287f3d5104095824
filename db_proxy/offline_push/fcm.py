"""FCM HTTP v1: notifications to Android devices, authorised as a Google service account.

The service account's JSON (``offline_push.fcm_credentials``, as the Firebase
console downloads it) holds an RSA key; it signs a short JWT that Google's
token endpoint trades for an OAuth2 access token (RFC 7523, the
"jwt-bearer" grant), which every send carries until shortly before it
expires. A 401 means it was revoked or expired early: a new one, once.

Answers (https://firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode):
200 delivered; 429 and 5xx retried, at the Retry-After if given; 404
UNREGISTERED, or 400 INVALID_ARGUMENT about the token, leave a stale token;
any other 4xx is rejected (our request, project or credentials are wrong,
and sending it again will not change that).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from common.config import ConfigError
from db_proxy.offline_push.bearer import Bearer
from db_proxy.offline_push.config import OfflinePushConfig
from db_proxy.offline_push.http import client, is_transient, transient, unreachable
from db_proxy.offline_push.mobile import TTL, DeviceProvider, alert, ids, stale
from db_proxy.offline_push.provider import Notification, Outcome, Result, is_android

log = logging.getLogger("db.offline_push.fcm")

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: The signed assertion's lifetime: Google accepts at most an hour, and it is used at once.
ASSERTION_SECONDS = 3600
#: An access token is renewed this long before Google says it expires (clock skew, slow requests).
RENEW_EARLY = 60.0


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    client_email: str
    private_key: rsa.RSAPrivateKey
    token_uri: str
    key_id: str  # names the key among the account's (the JWT's kid), "" if the file has none

    @classmethod
    def load(cls, path: str) -> ServiceAccount:
        """Read the service-account JSON; errors name the setting and the file."""
        where = f"offline_push.fcm_credentials ({path})"
        try:
            with open(path, encoding="utf-8") as file:
                data = json.load(file)
            key = serialization.load_pem_private_key(str(data["private_key"]).encode(), password=None)
            email, token_uri = str(data["client_email"]), str(data["token_uri"])
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read: {exc.strerror}") from None
        except KeyError as exc:
            raise ConfigError(f"{where}: no {exc.args[0]}: not a service-account key file") from None
        except (ValueError, TypeError, AttributeError) as exc:
            raise ConfigError(f"{where}: not a service-account key file: {exc}") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ConfigError(f"{where}: private_key is not an RSA key")
        return cls(email, key, token_uri, str(data.get("private_key_id", "")))

    def assertion(self, now: int) -> str:
        """The JWT the token endpoint trades for an access token (``now``: unix seconds)."""
        claims = {
            "iss": self.client_email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": now,
            "exp": now + ASSERTION_SECONDS,
        }
        headers = {"kid": self.key_id} if self.key_id else None
        return jwt.encode(claims, self.private_key, algorithm="RS256", headers=headers)


class TokenError(Exception):
    """No access token: the Result every send waiting for it answers."""

    def __init__(self, result: Result) -> None:
        super().__init__(result.detail)
        self.result = result


class FcmProvider(DeviceProvider):
    name = "fcm"

    def __init__(self, config: OfflinePushConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._account = ServiceAccount.load(config.fcm_credentials)  # first: a bad file leaves no client open
        super().__init__(client(config))
        endpoint = config.fcm_endpoint.rstrip("/")
        self._url = f"{endpoint}/v1/projects/{config.fcm_project_id}/messages:send"
        self._bearer = Bearer(self._access_token, clock)

    def accepts(self, client_type: int) -> bool:
        return is_android(client_type)

    async def send_to(self, notification: Notification, token: str) -> Result:
        body = {"message": message(notification, token)}

        async def post(access_token: str) -> httpx.Response:
            headers = {"authorization": f"Bearer {access_token}"}
            return await self._http.post(self._url, json=body, headers=headers)

        try:
            response = await self._bearer.use(post, lambda response: response.status_code == 401)
        except TokenError as exc:
            return exc.result
        except httpx.HTTPError as exc:
            return unreachable(exc, "fcm")
        return answer(response, token)

    async def _access_token(self) -> tuple[str, float]:
        form = {"grant_type": GRANT_TYPE, "assertion": self._account.assertion(int(time.time()))}
        try:
            response = await self._http.post(self._account.token_uri, data=form)
        except httpx.HTTPError as exc:
            raise TokenError(unreachable(exc, "fcm token")) from None
        if is_transient(response.status_code):
            raise TokenError(transient(response, "fcm token"))
        if response.status_code != 200:
            # Credentials revoked, a wrong key, a clock far off: nothing a retry mends.
            detail = f"fcm token: HTTP {response.status_code} {response.text[:200]}"
            log.warning("%s", detail)
            raise TokenError(Result(Outcome.REJECTED, detail))
        try:
            granted = response.json()
            token, expires_in = str(granted["access_token"]), float(granted.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError):
            raise TokenError(Result(Outcome.RETRY, "fcm token: unreadable answer")) from None
        return token, expires_in - min(RENEW_EARLY, expires_in / 2)


def message(notification: Notification, token: str) -> dict[str, Any]:
    """The v1 ``message`` for one device."""
    title, body = alert(notification)
    return {
        "token": token,
        "notification": {"title": title, "body": body},
        "data": ids(notification),
        # Retries of one notification replace each other on the device instead of stacking up.
        "android": {"collapse_key": notification.key, "priority": "high", "ttl": f"{TTL}s"},
    }


def answer(response: httpx.Response, token: str) -> Result:
    status = response.status_code
    if status == 200:
        return Result(Outcome.DELIVERED)
    if is_transient(status):
        return transient(response, "fcm")
    error = _error(response)
    detail = f"fcm: HTTP {status} {error.get('status', '')} {error.get('message', '')}".rstrip()
    if status == 404 or _names_bad_token(error):
        return stale(token, detail)
    return Result(Outcome.REJECTED, detail)


def _error(response: httpx.Response) -> dict[str, Any]:
    """The ``error`` object of a Google API error answer ({} if there is none)."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return {}
    return error if isinstance(error, dict) else {}


def _names_bad_token(error: dict[str, Any]) -> bool:
    """UNREGISTERED, or INVALID_ARGUMENT about the token (not about, say, a payload too large:
    dropping a good token for that would silence the device for good)."""
    details = [d for d in error.get("details", ()) if isinstance(d, dict)]
    codes = {d.get("errorCode") for d in details}
    if "UNREGISTERED" in codes:
        return True
    if "INVALID_ARGUMENT" not in codes and error.get("status") != "INVALID_ARGUMENT":
        return False
    fields = {v.get("field") for d in details for v in d.get("fieldViolations", ()) if isinstance(v, dict)}
    return "message.token" in fields or "registration token" in str(error.get("message", "")).lower()
