"""Anti-replay window for authenticated packets.

AES-GCM proves a packet came from a key holder, not that it is new. Every packet
carries ``(sender, epoch, seq)``: ``epoch`` is fixed per process start and only
grows across restarts (the transport uses wall-clock nanoseconds), ``seq`` counts
packets. Per sender we keep the newest epoch, the highest seq and a 64-packet
bitmap below it (as IPsec does), so reordering within the window is fine and
anything seen or older is a replay. Windows of senders silent for ``idle_ttl``
are forgotten (bounded memory; a peer whose clock stepped back recovers).
"""

from __future__ import annotations

from typing import Dict, List

WINDOW = 64


class ReplayGuard:
    def __init__(self, idle_ttl: float = 120.0, max_senders: int = 8192) -> None:
        self.idle_ttl = idle_ttl
        self.max_senders = max_senders
        # sender -> [epoch, top seq, bitmap (bit i = top - i seen), last seen]
        self._peers: Dict[str, List[float]] = {}

    def accept(self, sender: str, epoch: int, seq: int, now: float) -> bool:
        """True (and remembered) if this packet is new; False for a replay."""
        w = self._peers.get(sender)
        if w is None or now - w[3] > self.idle_ttl or epoch > w[0]:
            if w is None and len(self._peers) >= self.max_senders:
                self._evict(now)
            self._peers[sender] = [epoch, seq, 1, now]
            return True
        if epoch < w[0]:
            return False
        top = int(w[1])
        bits = int(w[2])
        if seq > top:
            shift = seq - top
            bits = ((bits << shift) | 1) & ((1 << WINDOW) - 1) if shift < WINDOW else 1
            w[1], w[2] = seq, bits
        else:
            off = top - seq
            if off >= WINDOW or bits >> off & 1:
                return False
            w[2] = bits | (1 << off)
        w[3] = now
        return True

    def _evict(self, now: float) -> None:
        stale = [s for s, w in self._peers.items() if now - w[3] > self.idle_ttl]
        for s in stale:
            del self._peers[s]
        if len(self._peers) >= self.max_senders:
            # Still full: drop the least recently heard half.
            order = sorted(self._peers, key=lambda s: self._peers[s][3])
            for s in order[: len(order) // 2]:
                del self._peers[s]
