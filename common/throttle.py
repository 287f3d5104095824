"""Rate-limited logging: one line per interval, counting what it swallowed."""

from __future__ import annotations

import time
from collections.abc import Callable


class Throttle:
    """Lets one event through per interval and counts the ones it swallowed."""

    __slots__ = ("clock", "interval", "next_at", "suppressed")

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self.next_at = 0.0
        self.suppressed = 0

    def ready(self) -> bool:
        now = self.clock()
        if now < self.next_at:
            self.suppressed += 1
            return False
        self.next_at = now + self.interval
        return True

    def more(self) -> str:
        """The suffix for the line being let through: how many were swallowed; resets the count."""
        text = f" ({self.suppressed} more since the last line)" if self.suppressed else ""
        self.suppressed = 0
        return text
