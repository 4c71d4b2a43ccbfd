"""Anti-replay for authenticated packets: a freshness check and a per-sender window.

The envelope proves who sent a packet, not that it is new. Every packet carries a
``stamp`` (``wire.Stamper``: the sender's clock in ms, strictly increasing), inside
the authenticated envelope, so:

1. a stamp more than ``skew`` seconds away from our clock is refused (``fresh``);
2. per sender we keep the ``WINDOW`` highest stamps seen; a stamp seen before, or
   below all of them once the window is full, is a replay (reordering within the
   window is fine).

A window may be forgotten once its sender has been silent for ``2 * skew`` (plus a
margin): any packet it had accepted is by then stale by rule 1, so a recorded packet
fails for good either way. Windows exist only for authenticated senders, so there
are at most as many as certificates; past ``max_senders`` the least recently heard
are dropped and ``floor`` rises to their newest stamp, which keeps the check closed.
"""

from __future__ import annotations

import bisect
from typing import Dict, List

from .wire import stamp_time

WINDOW = 32


class _Window:
    __slots__ = ("recent", "last")

    def __init__(self, stamp: int, now: float) -> None:
        self.recent: List[int] = [stamp]
        self.last = now


class ReplayGuard:
    def __init__(self, skew: float = 60.0, max_senders: int = 16384) -> None:
        self.skew = skew
        self.idle_ttl = 2 * skew + 5.0
        self.max_senders = max_senders
        self.floor = 0
        self._peers: Dict[str, _Window] = {}

    def __len__(self) -> int:
        return len(self._peers)

    def fresh(self, stamp: int, wall: float) -> bool:
        """Within ``skew`` seconds of our clock, either way."""
        return abs(stamp_time(stamp) - wall) <= self.skew

    def accept(self, sender: str, stamp: int, now: float) -> bool:
        """True (and remembered) if this packet is new; False for a replay."""
        w = self._peers.get(sender)
        if w is None or now - w.last > self.idle_ttl:
            if stamp <= self.floor:
                return False
            if w is None and len(self._peers) >= self.max_senders:
                self._evict(now)
            self._peers[sender] = _Window(stamp, now)
            return True
        recent = w.recent
        if stamp > recent[-1]:
            recent.append(stamp)
        else:
            if len(recent) >= WINDOW and stamp < recent[0]:
                return False
            i = bisect.bisect_left(recent, stamp)
            if i < len(recent) and recent[i] == stamp:
                return False
            recent.insert(i, stamp)
        if len(recent) > WINDOW:
            del recent[0]
        w.last = now
        return True

    def forget(self, sender: str) -> None:
        """Drop a sender's window (its certificate was revoked)."""
        self._peers.pop(sender, None)

    def expire(self, now: float) -> None:
        for s in [s for s, w in self._peers.items() if now - w.last > self.idle_ttl]:
            del self._peers[s]

    def _evict(self, now: float) -> None:
        self.expire(now)
        if len(self._peers) >= self.max_senders:
            # Still full: drop the least recently heard half, and close the door behind them.
            order = sorted(self._peers, key=lambda s: self._peers[s].last)
            for s in order[: len(order) // 2]:
                self.floor = max(self.floor, self._peers[s].recent[-1])
                del self._peers[s]
