"""Membership records: what callers see (``Member``, ``MemberEvent``) and the core's
mutable bookkeeping (``Node``, ``Suspicion``).

A ``Node`` keeps liveness (``inc``, ``state``) apart from metadata (``mver``, ``meta``,
``host``, ``port``), and the signed statements behind them (``record``, ``live``) so
they can be relayed as they are. ``signed_inc`` is the highest incarnation the member
itself signed: no claim about it by others may go higher.

``Suspicion`` is Lifeguard's shrinking timeout: it starts at ``max`` and falls
towards ``min`` as independent members confirm the suspicion, following
``max - (max - min) * log(c + 1) / log(k + 1)`` for ``c`` of ``k`` expected
confirmations (memberlist's suspicion.go).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Set

from .wire import ST_ALIVE, ST_DEAD, ST_LEFT, ST_SUSPECT


class MemberState(str, enum.Enum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


STATE_OF_CODE = {ST_ALIVE: MemberState.ALIVE, ST_SUSPECT: MemberState.SUSPECT,
                 ST_DEAD: MemberState.DEAD, ST_LEFT: MemberState.LEFT}


class EventKind(str, enum.Enum):
    JOIN = "join"        # new, or back from dead/left
    UPDATE = "update"    # metadata or address changed
    SUSPECT = "suspect"
    ALIVE = "alive"      # a suspicion was refuted
    DEAD = "dead"        # failed (suspicion timed out)
    LEAVE = "leave"      # left gracefully


@dataclass(frozen=True)
class Member:
    name: str
    host: str
    port: int
    state: MemberState
    incarnation: int
    meta: Dict[str, Any] = field(default_factory=dict)
    meta_version: int = 0

    def to_dict(self) -> Dict[str, Any]:
        """The ``GET /v1/members`` shape."""
        return {"name": self.name, "address": self.host, "port": self.port,
                "state": self.state.value, "incarnation": self.incarnation,
                "meta_version": self.meta_version, "meta": dict(self.meta)}


@dataclass(frozen=True)
class MemberEvent:
    kind: EventKind
    member: Member


class Suspicion:
    __slots__ = ("k", "min", "max", "start", "confirmed", "deadline")

    def __init__(self, frm: str, k: int, lo: float, hi: float, start: float) -> None:
        self.k = k
        self.min = lo
        self.max = hi
        self.start = start
        self.confirmed: Set[str] = {frm}   # the accuser does not count as a confirmation
        self.deadline = start + (lo if k < 1 else hi)

    def confirm(self, frm: str) -> bool:
        """Count an independent confirmation; True if it was new (and shortened the timer)."""
        if len(self.confirmed) - 1 >= self.k or frm in self.confirmed:
            return False
        self.confirmed.add(frm)
        self.deadline = self.start + suspicion_timeout(len(self.confirmed) - 1, self.k,
                                                       self.min, self.max)
        return True


def suspicion_timeout(c: int, k: int, lo: float, hi: float) -> float:
    if k < 1:
        return lo
    frac = math.log(c + 1) / math.log(k + 1)
    return max(lo, hi - frac * (hi - lo))


class Node:
    """The core's mutable record of one member."""

    __slots__ = ("name", "host", "port", "inc", "state", "meta", "mver", "changed", "suspicion",
                 "signed_inc", "record", "rec_inc", "live", "live_inc", "cert")

    def __init__(self, name: str, host: str, port: int, inc: int, meta: Dict[str, Any],
                 now: float, mver: int = 0) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.inc = inc
        self.state = ST_ALIVE
        self.meta = meta
        self.mver = mver
        self.changed = now
        self.suspicion: Optional[Suspicion] = None
        self.signed_inc = inc
        self.record: Any = None   # wire.Item of its latest RECORD
        self.rec_inc = inc
        self.live: Any = None     # wire.Item of its latest ALIVE/LEAVE above the record, if any
        self.live_inc = -1
        self.cert: Any = None     # identity.PeerCert (None in plaintext clusters)

    @property
    def addr(self) -> "tuple[str, int]":
        return (self.host, self.port)

    def snapshot(self) -> Member:
        return Member(self.name, self.host, self.port, STATE_OF_CODE[self.state], self.inc,
                      dict(self.meta), self.mver)
