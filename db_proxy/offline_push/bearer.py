"""A bearer token made on demand and reused until it is due: FCM's OAuth2 access token, APNs' JWT.

Both services want the same token on many requests and punish making one per
request (Google rate-limits its token endpoint; Apple answers
TooManyProviderTokenUpdates). So the token is made once, by one caller while
the others wait for it, kept for its lifetime, and renewed early only when
the service refuses it; and then once, however many requests in flight were
refused with the same token.

Time is passed in (``clock``, monotonic seconds) so the lifetime is tested
without waiting for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

R = TypeVar("R")

#: Makes a token: returns it and how many seconds it may be used.
Make = Callable[[], Awaitable[tuple[str, float]]]


@dataclass(frozen=True, slots=True)
class _Held:
    token: str
    due: float  # clock time from which a new one is made


class Bearer:
    def __init__(self, make: Make, clock: Callable[[], float] = time.monotonic) -> None:
        self._make = make
        self._clock = clock
        self._held: _Held | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> str:
        """The current token, made first if there is none or it is due. Raises what ``make`` raises."""
        held = self._held
        if held is not None and self._clock() < held.due:
            return held.token
        async with self._lock:
            held = self._held  # another caller may have made it while this one waited
            if held is None or self._clock() >= held.due:
                token, lifetime = await self._make()
                held = self._held = _Held(token, self._clock() + lifetime)
            return held.token

    def refused(self, token: str) -> None:
        """The service refused ``token``: the next :meth:`get` makes a new one, unless one was
        made since (other requests refused with the same token must not renew it again)."""
        if self._held is not None and self._held.token == token:
            self._held = None

    async def use(self, request: Callable[[str], Awaitable[R]], refused: Callable[[R], bool]) -> R:
        """``request(token)``; if the answer says the token was refused, once more with a new one
        (once: a token refused again is not the token's fault, and renewing in a loop is what the
        services punish)."""
        token = await self.get()
        answer = await request(token)
        if refused(answer):
            self.refused(token)
            answer = await request(await self.get())
        return answer
