"""Per-client-address upload rate limit: a token bucket per address, time passed in.

Each address may make ``per_minute`` uploads in a burst, then one every
``60 / per_minute`` seconds. The table is bounded: a bucket that has refilled
is forgotten (it equals a fresh one), and past ``max_addresses`` the stalest
are dropped first, so a flood of addresses costs a bounded amount of memory
(and at worst lets a forgotten address start afresh).
"""

from __future__ import annotations

from collections import OrderedDict


class RateLimiter:
    def __init__(self, per_minute: int, max_addresses: int = 100_000) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0  # tokens per second
        self.max_addresses = max_addresses
        # address -> (tokens, at); least recently used first
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, address: str, now: float) -> bool:
        """Take one upload from ``address``'s bucket; False when it is empty."""
        tokens, at = self._buckets.pop(address, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - at) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[address] = (tokens, now)
        while len(self._buckets) > self.max_addresses:
            self._buckets.popitem(last=False)
        return allowed

    def retry_after(self, address: str, now: float) -> float:
        """Seconds until ``address`` may upload again (0: now)."""
        tokens, at = self._buckets.get(address, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - at) * self.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def sweep(self, now: float) -> int:
        """Forget buckets that have refilled (the same as no bucket); how many."""
        full = [
            address
            for address, (tokens, at) in self._buckets.items()
            if tokens + (now - at) * self.rate >= self.capacity
        ]
        for address in full:
            del self._buckets[address]
        return len(full)
