"""What FCM and APNs share: a request per device token, one Result for the notification, and
what the notification shows.

A recipient may have several devices of one platform; the queue retries a
notification, not a device, so their answers are combined: delivered if any
device got it (the others' failures are not worth a second copy on the device
that has it), else retried if any may get it later, else rejected. Tokens the
service disowns are reported whatever the outcome, so they are not used again.
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from collections.abc import Sequence

import httpx

from db_proxy.offline_push.provider import Notification, Outcome, Provider, Result

#: The body when the text is not to be shown (``offline_push.include_text`` off, the default).
NEUTRAL_BODY = "New message"
#: Seconds a push service keeps trying a device that is off: a message a day old is no news.
TTL = 24 * 3600
#: What of the sender's name and the text is shown: both services refuse a payload over 4 KB,
#: and a lock screen shows a few lines anyway.
TITLE_CHARS = 100
BODY_CHARS = 1000


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def alert(notification: Notification) -> tuple[str, str]:
    """The title (who wrote) and the body (the text only if configured, else a neutral line)."""
    return _cut(notification.sender_name, TITLE_CHARS), _cut(notification.text or NEUTRAL_BODY, BODY_CHARS)


def ids(notification: Notification) -> dict[str, str]:
    """What the app needs to open the conversation, as strings (FCM's data allows nothing else,
    and an id past 2**53 would lose digits in a JavaScript app)."""
    return {
        "key": notification.key,
        "msg_id": str(notification.msg_id),
        "from_user_id": str(notification.from_user_id),
        "to_id": str(notification.to_id),
        "session_type": str(notification.session_type),
        "created_at": str(notification.created_at),
    }


def stale(token: str, detail: str) -> Result:
    """The service says ``token`` is no device (any more): rejected, and the token dropped."""
    return Result(Outcome.REJECTED, detail, stale_tokens=(token,))


def combine(results: Sequence[Result]) -> Result:
    """One Result for a notification out of its devices' (see the module docstring)."""
    stale_tokens = tuple(token for result in results for token in result.stale_tokens)
    delivered = sum(result.outcome is Outcome.DELIVERED for result in results)
    if delivered:
        return Result(Outcome.DELIVERED, f"{delivered} of {len(results)} devices", stale_tokens=stale_tokens)
    detail = "; ".join(dict.fromkeys(result.detail for result in results)) or "no device"
    retries = [result for result in results if result.outcome is Outcome.RETRY]
    if retries:
        # The latest time any device's service asked for: by then every one is worth a try.
        asked = [result.retry_after for result in retries if result.retry_after is not None]
        return Result(Outcome.RETRY, detail, retry_after=max(asked, default=None), stale_tokens=stale_tokens)
    return Result(Outcome.REJECTED, detail, stale_tokens=stale_tokens)


class DeviceProvider(Provider):
    """A provider that sends one request per device token of the platform it serves."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    @abstractmethod
    def accepts(self, client_type: int) -> bool:
        """Whether a device of ``client_type`` is reached through this provider."""

    @abstractmethod
    async def send_to(self, notification: Notification, token: str) -> Result:
        """Send to one device; never raises for a network or service failure."""

    def tokens(self, notification: Notification) -> list[str]:
        """The tokens this provider sends to, each once (a token registered twice is one device)."""
        served = (device.token for device in notification.devices if self.accepts(device.client_type))
        return list(dict.fromkeys(token for token in served if token))

    def serves(self, notification: Notification) -> bool:
        return bool(self.tokens(notification))

    async def send(self, notification: Notification) -> Result:
        # A recipient has a few devices: in parallel, each bounded by the client's timeout.
        results = await asyncio.gather(*(self.send_to(notification, t) for t in self.tokens(notification)))
        return combine(results)

    async def close(self) -> None:
        await self._http.aclose()
