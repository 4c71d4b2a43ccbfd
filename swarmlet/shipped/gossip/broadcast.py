"""The transmit-limited broadcast queue (memberlist's TransmitLimitedQueue).

Each membership change about a node is queued as one pre-encoded ``Item`` keyed by
the node's name; a newer change about the same node replaces the older one. Every
outgoing packet takes what fits, least-transmitted first (newest first within a
level), and an item is dropped once it has been sent ``limit`` times, with
limit = retransmit_mult * ceil(log10(N + 1)). Items live in per-level dicts so
filling a packet looks only at the few items it takes.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

from .wire import ITEM_OVERHEAD, Item


class _Entry:
    __slots__ = ("key", "item", "sent", "on_done")

    def __init__(self, key: str, item: Item, on_done: Optional[Callable[[], None]]) -> None:
        self.key = key
        self.item = item
        self.sent = 0
        self.on_done = on_done


class BroadcastQueue:
    def __init__(self) -> None:
        self._by_key: Dict[str, _Entry] = {}
        self._levels: List[Dict[str, _Entry]] = [{}]

    def __len__(self) -> int:
        return len(self._by_key)

    def queue(self, key: str, item: Item, on_done: Optional[Callable[[], None]] = None) -> None:
        """Queue ``item`` about ``key``, replacing any older one about the same key."""
        old = self._by_key.pop(key, None)
        if old is not None:
            del self._levels[old.sent][key]
        e = _Entry(key, item, on_done)
        self._by_key[key] = e
        self._levels[0][key] = e

    def take(self, room: int, limit: int) -> List[Item]:
        """Items fitting in ``room`` bytes, each counted as sent once more."""
        out: List[Item] = []
        if not self._by_key:
            return out
        taken: List[_Entry] = []
        for level in self._levels:
            if room < 16:
                break
            if not level:
                continue
            for e in reversed(level.values()):  # lazily: a packet takes few
                cost = len(e.item.fields) + ITEM_OVERHEAD
                if cost <= room:
                    room -= cost
                    taken.append(e)
                    out.append(e.item)
                    if room < 16:
                        break
        for e in taken:
            del self._levels[e.sent][e.key]
            e.sent += 1
            if e.sent >= limit:
                del self._by_key[e.key]
                if e.on_done is not None:
                    e.on_done()
            else:
                while len(self._levels) <= e.sent:
                    self._levels.append({})
                self._levels[e.sent][e.key] = e
        return out

    def pending(self, key: str) -> bool:
        return key in self._by_key
