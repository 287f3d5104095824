"""Points in time as admins type them: ISO 8601 dates and times, or Unix seconds.

Shared by the admin API's query parameters (``since``, ``until``) and
imctl's options, so both read the same text the same way. A date or time
without an offset is local time (of the process reading it: imctl turns it
into Unix seconds before sending).
"""

from __future__ import annotations

import datetime
import math
import re

_NUMBER = re.compile(r"^\d{1,12}(\.\d{1,6})?$")
MAX_SECONDS = 253402300799  # 9999-12-31T23:59:59Z


def parse_time(text: str) -> float:
    """Unix seconds of ``text``: ``1767225600``, ``2026-01-01``, ``2026-01-01T08:30``,
    ``2026-01-01 08:30:00+01:00``, ``...Z``. ValueError (with a message) otherwise."""
    value = text.strip()
    if _NUMBER.match(value):
        seconds = float(value)
    else:
        try:
            moment = datetime.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"{text!r} is not a time: give ISO 8601 (2026-01-31, 2026-01-31T08:00, ...Z) or Unix seconds"
            ) from None
        seconds = moment.timestamp()  # naive: local time
    if not 0 <= seconds <= MAX_SECONDS or math.isnan(seconds):
        raise ValueError(f"{text!r} is out of range")
    return seconds


def to_ms(seconds: float) -> int:
    return round(seconds * 1000)
