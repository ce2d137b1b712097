"""Timestamps: integer Unix seconds in the database, ISO 8601 with the caller's offset out.

``datetime.fromisoformat`` only exists from CPython 3.7 and accepts different inputs on
each version, so the agent parses the ISO subset orchesjob documents with one regex, and
behaves the same on every interpreter it runs on.
"""

import re
import time
from datetime import datetime, timedelta, timezone

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import Optional  # noqa: F401


_ISO = (
    r"^(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,6})\d*)?)?)?"
    r"(Z|[+-]\d{2}:?\d{2})?$"
)

ISO_HINT = "Use ISO 8601 format, e.g. 2026-01-01 or 2026-01-01T12:00:00+09:00"


def now_ts():
    # type: () -> int
    return int(time.time())


def to_iso(ts):
    # type: (Optional[int]) -> Optional[str]
    """Render a stored timestamp in the caller's local offset (TZ=Asia/Tokyo gives +09:00)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(int(ts), tz=timezone.utc).astimezone().isoformat()


def parse_datetime(value):
    # type: (str) -> int
    """Parse an ISO 8601 date or datetime to Unix seconds; naive values are local time."""
    m = re.match(_ISO, value.strip())  # re caches the compiled pattern; no compile at import
    if not m:
        raise ValueError(ISO_HINT)
    year, month, day, hh, mm, ss, frac, tz = m.groups()
    try:
        dt = datetime(
            int(year), int(month), int(day), int(hh or 0), int(mm or 0), int(ss or 0),
            int((frac or "0").ljust(6, "0")),
        )
    except ValueError:
        raise ValueError(ISO_HINT) from None
    if tz is None:
        dt = dt.astimezone()  # naive: the caller's local time
    elif tz == "Z":
        dt = dt.replace(tzinfo=timezone.utc)
    else:
        sign = -1 if tz[0] == "-" else 1
        digits = tz[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
        if offset >= timedelta(hours=24):
            raise ValueError(ISO_HINT)
        dt = dt.replace(tzinfo=timezone(sign * offset))
    return int(dt.timestamp())


_TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(value):
    # type: (str) -> int
    """``90``, ``90s``, ``2m``, ``1h``, ``1d`` to seconds, with orchesjob 1.1.0's exact messages."""
    value = value.strip().lower()
    if not value:
        raise ValueError("Invalid ttl: empty")
    unit, number = value[-1], value[:-1]
    try:
        amount = int(number) * _TTL_UNITS[unit] if unit in _TTL_UNITS else int(value)
    except ValueError:
        if unit in _TTL_UNITS:
            raise ValueError("Invalid ttl: {!r}".format(value)) from None
        raise ValueError("Invalid ttl: {!r}. Use seconds or suffix s/m/h/d".format(value)) from None
    if amount <= 0:
        raise ValueError("ttl must be positive")
    return amount
