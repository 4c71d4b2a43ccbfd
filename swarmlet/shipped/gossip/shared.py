"""What the parts of ``GossipCore`` share: addresses, outputs, a packet's sender, and the
timer kinds (``core`` assembles the parts; each part is a mixin over the core's state)."""

from __future__ import annotations

from typing import List, NamedTuple, Optional, Tuple

from .identity import PeerCert
from .members import MemberEvent

Addr = Tuple[str, int]

# Timer kinds.
_T_PROBE, _T_PROBE_TIMEOUT, _T_GOSSIP, _T_PUSH_PULL, _T_SUSPICION, _T_RELAY, _T_REAP, \
    _T_RECONNECT, _T_REJOIN, _T_META, _T_HOUSEKEEP, _T_CATCHUP = range(12)


class Output(NamedTuple):
    sends: List[Tuple[bytes, Addr]]
    events: List[MemberEvent]


class _From:
    """Who a packet came from: its (authenticated, unless plaintext) sender."""

    __slots__ = ("name", "peer", "addr")

    def __init__(self, name: str, peer: Optional[PeerCert], addr: Addr) -> None:
        self.name = name
        self.peer = peer
        self.addr = addr


def _rkey(name: str) -> str:
    # Broadcast-queue key of a member's record (its liveness news is keyed by its name).
    return name + "\x00"


def _ckey(name: str) -> str:
    # Broadcast-queue key of a member's certificate (sent beside its join news).
    return name + "\x01"
