"""When each ACME host name needs a certificate, and how long a failure waits. Pure.

- A host of a ``tls: acme`` service with no certificate is **due** at once
  (issuance on first deploy), unless it failed and is waiting.
- A certificate is **renewed** from ``renew_at``: ``renew_before_days`` (30)
  before its end, or a third of its lifetime before it if that is less (a
  90-day certificate: 30 days, as Let's Encrypt advises; a short test one: the
  last third).
- A failure waits ``base · 2^(n-1)`` (n failures in a row, capped at ``cap``):
  with the defaults 1 min, 2, 4 ... up to a day, so five failed validations
  never fit in Let's Encrypt's hour. A CA that says ``rateLimited`` is obeyed:
  its ``Retry-After``, at least an hour when it gives none; any other
  ``Retry-After`` is a floor too.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, List, Mapping, Optional, Tuple

DAY = 86400.0


@dataclass(frozen=True)
class HostState:
    failures: int = 0               # in a row
    next_attempt: float = 0.0       # UNIX time; 0: whenever due
    last_error: str = ""
    last_attempt: float = 0.0


@dataclass(frozen=True)
class Backoff:
    base: float = 60.0
    cap: float = DAY
    rate_limited: float = 3600.0    # when the CA says rateLimited without a Retry-After


def renew_at(not_before: float, not_after: float, renew_before_days: float) -> float:
    lifetime = max(0.0, not_after - not_before)
    return not_after - min(renew_before_days * DAY, lifetime / 3.0)


def due(hosts: List[str], certs: Mapping[str, Tuple[float, float]],
        states: Mapping[str, HostState], now: float,
        renew_before_days: float) -> List[Tuple[str, str]]:
    """(host, "issue" | "renew") for every host to ask the CA about now, in host order."""
    out = []
    for host in sorted(hosts):
        st = states.get(host, HostState())
        if now < st.next_attempt:
            continue
        have = certs.get(host)
        if have is None:
            out.append((host, "issue"))
        elif now >= renew_at(have[0], have[1], renew_before_days):
            out.append((host, "renew"))
    return out


def next_wake(hosts: List[str], certs: Mapping[str, Tuple[float, float]],
              states: Mapping[str, HostState], now: float, renew_before_days: float) -> float:
    """The earliest time something becomes due (``now`` if something is; inf if nothing)."""
    best = float("inf")
    for host in hosts:
        st = states.get(host, HostState())
        have = certs.get(host)
        when = now if have is None else renew_at(have[0], have[1], renew_before_days)
        best = min(best, max(when, st.next_attempt))
    return best


def after_failure(st: HostState, now: float, error: str, policy: Backoff,
                  retry_after: Optional[float] = None, rate_limited: bool = False) -> HostState:
    n = st.failures + 1
    delay = min(policy.base * 2 ** (n - 1), policy.cap)
    if rate_limited:
        delay = max(delay, retry_after if retry_after else policy.rate_limited)
    elif retry_after:
        delay = max(delay, retry_after)
    return replace(st, failures=n, next_attempt=now + delay, last_error=error, last_attempt=now)


def to_meta(st: HostState) -> Dict[str, object]:
    return {"failures": st.failures, "next_attempt": st.next_attempt,
            "last_error": st.last_error, "last_attempt": st.last_attempt}


def from_meta(value: object) -> HostState:
    if not isinstance(value, dict):
        return HostState()
    try:
        return HostState(int(value.get("failures", 0)), float(value.get("next_attempt", 0.0)),
                         str(value.get("last_error", "")), float(value.get("last_attempt", 0.0)))
    except (TypeError, ValueError):
        return HostState()
