"""Why msfs refuses an upload, each with its own ``error_code``.

TeamTalk's msfs answers ``error_code`` 1 for a body over 10 MiB, 2-11 for as
many ways its hand-written parser can fail (all "格式错误", wrong format), and
``error_code`` 0 with an empty ``path`` for a file it then declines to
store. Here every refusal has a non-zero code of its own, a message saying
what to change, and a series in ``imcluster_msfs_refusals_total{reason}``.
Code 1 keeps TeamTalk's meaning (too large).
"""

from __future__ import annotations

from dataclasses import dataclass

from common.errors import ImError


@dataclass(frozen=True, slots=True)
class Reason:
    name: str  # the metric label
    error_code: int
    server_fault: bool = False


TOO_LARGE = Reason("too_large", 1)
MALFORMED = Reason("malformed", 2)
NO_FILE = Reason("no_file", 3)
EMPTY = Reason("empty", 4)
TYPE_NOT_ALLOWED = Reason("type_not_allowed", 5)
TYPE_MISMATCH = Reason("type_mismatch", 6)
RATE_LIMITED = Reason("rate_limited", 7)
BUSY = Reason("busy", 8)
TIMEOUT = Reason("timeout", 9)
STORE_FAILED = Reason("store_failed", 10, server_fault=True)
ABORTED = Reason("aborted", 11)  # the client went away mid-upload (no one to answer)

REASONS = (
    TOO_LARGE,
    MALFORMED,
    NO_FILE,
    EMPTY,
    TYPE_NOT_ALLOWED,
    TYPE_MISMATCH,
    RATE_LIMITED,
    BUSY,
    TIMEOUT,
    STORE_FAILED,
    ABORTED,
)


class UploadRefused(ImError):
    """An upload msfs will not store; ``reason`` says which and carries the wire code."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.server_fault = reason.server_fault
