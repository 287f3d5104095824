"""When to restart a child of ``imctl up`` that died: exponential backoff, sans I/O.

A child that keeps dying right after its start is restarted after 1 s, 2 s,
4 s ... up to 30 s, so a broken config does not spin; one that had run for a
minute before dying starts again from 1 s (it was healthy: this is a new
failure, not the same one). Times are the caller's ``now`` (a monotonic
clock), so the policy is tested with a fake one.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass


@dataclass
class Backoff:
    initial: float = 1.0
    maximum: float = 30.0
    reset_after: float = 60.0  # a run this long resets the delay to ``initial``
    _next: float = 0.0
    _started_at: float | None = None

    def __post_init__(self) -> None:
        self._next = self.initial

    def started(self, now: float) -> None:
        self._started_at = now

    def exited(self, now: float) -> float:
        """The child exited at ``now``: the seconds to wait before starting it again."""
        ran = now - self._started_at if self._started_at is not None else 0.0
        if ran >= self.reset_after:
            self._next = self.initial
        delay = self._next
        self._next = min(delay * 2, self.maximum)
        self._started_at = None
        return delay


def describe_exit(returncode: int) -> str:
    """``signal 9, SIGKILL``, ``exit code 1``: how a child ended, for its log line."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
        return f"signal {-returncode}, {name}"
    return f"exit code {returncode}"


def seconds(delay: float) -> str:
    return f"{delay:g} s"
