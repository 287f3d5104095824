"""What a push provider is given, and what it answers (the interface every provider implements)."""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from common.pb import base_pb2


def is_ios(client_type: int) -> bool:
    return client_type == base_pb2.CLIENT_TYPE_IOS


def is_android(client_type: int) -> bool:
    return client_type == base_pb2.CLIENT_TYPE_ANDROID


@dataclass(frozen=True, slots=True)
class Device:
    """A device token a client registered (IMDeviceTokenReq), with its client type."""

    user_id: int
    client_type: int
    token: str


@dataclass(frozen=True, slots=True)
class Notification:
    """One message, for one recipient who had no online session when it was pushed."""

    #: Unique per (message, recipient): receivers deduplicate retries by it
    #: (the webhook's X-Imcluster-Id, APNs' apns-collapse-id, FCM's collapse key).
    key: str
    user_id: int
    from_user_id: int
    session_type: int  # base_pb2.SessionType
    to_id: int  # the peer user, or the group
    msg_id: int
    created_at: int  # unix seconds of the message
    sender_name: str  # the sender's nick, or login name
    #: The message text, only when ``offline_push.include_text`` is on; None otherwise.
    text: str | None
    #: The recipient's registered devices (any provider's); a provider sends to those it serves.
    devices: tuple[Device, ...] = field(default=())


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    #: Try again later (a timeout, a 5xx, a 429): ``retry_after`` if the service said when.
    RETRY = "retry"
    #: Never worth retrying (a 4xx other than 429, a bad token): a dead letter.
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    detail: str = ""
    retry_after: float | None = None
    #: Tokens the service says are no longer valid (unregistered): not used again.
    stale_tokens: tuple[str, ...] = ()


class Provider(ABC):
    """One way to reach a device: a webhook, FCM, APNs."""

    #: The metric label: "webhook", "fcm", "apns".
    name: str

    @abstractmethod
    def serves(self, notification: Notification) -> bool:
        """Whether this provider has anything to send for ``notification``
        (the webhook: always; FCM: an Android token; APNs: an iOS token)."""

    @abstractmethod
    async def send(self, notification: Notification) -> Result:
        """Send once (no retries here: the queue retries with backoff). Never raises
        for a network or service failure: that is a RETRY or REJECTED result."""

    async def close(self) -> None:  # noqa: B027 (optional)
        """Release connections."""
