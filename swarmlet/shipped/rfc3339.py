"""RFC 3339 timestamps as Docker writes them (nanoseconds, ``Z`` or an offset) -> unix seconds.

The one parser for them: the agent reads container start/finish times from
``docker inspect``, and ``swarmlet logs`` orders lines by the timestamp Docker
puts in front of each. Standard library only (shipped); Python 3.9's
``fromisoformat`` cannot read nanoseconds or ``Z``, so this parses by hand.
"""

from __future__ import annotations

import datetime
import re
from typing import Optional, Tuple

_RE = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?")


def parse_prefix(text: str) -> Optional[Tuple[float, int]]:
    """``(unix seconds, end)`` of a timestamp at the start of ``text`` (no zone means UTC), or None."""
    m = _RE.match(text)
    if not m:
        return None
    try:
        base = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return None
    tz = m.group(3) or "Z"
    offset = 0 if tz == "Z" else (1 if tz[0] == "+" else -1) * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60)
    frac = float("0." + m.group(2)) if m.group(2) else 0.0
    return base.replace(tzinfo=datetime.timezone.utc).timestamp() - offset + frac, m.end()


def parse(value: Optional[str]) -> float:
    """A whole timestamp -> unix seconds; 0.0 for Docker's zero time, empty or malformed text."""
    if not value or value.startswith("0001-01-01"):
        return 0.0
    got = parse_prefix(value)
    if got is None or got[1] != len(value):
        return 0.0
    return got[0]
