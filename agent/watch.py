"""Long polls on the task report: a sequence number and the requests waiting for it to move.

``GET /v1/tasks?since=SEQ&wait=S`` answers at once when the report's ``seq``
differs from ``SEQ``, else when it next moves (a task changed state, health,
reason, restarts or container; a task appeared or left; a new assignment was
stored) or after ``S`` seconds, whichever comes first. The master holds one such
request per node instead of polling every half second: an idle node costs one
answer per ``S``, and a change reaches the master as soon as it happens.

Everything runs on the agent's event loop (``bump`` is called from it).
"""

from __future__ import annotations

import asyncio
import random
from typing import Set

MAX_WAIT = 60.0   # seconds a long poll may be held at most


class ChangeWatch:
    def __init__(self) -> None:
        # Random start: a restarted agent never repeats the seq its master saw last.
        self.seq = random.randrange(1 << 30)
        self._waiters: Set["asyncio.Future[None]"] = set()

    def bump(self) -> None:
        self.seq += 1
        for w in self._waiters:
            if not w.done():
                w.set_result(None)
        self._waiters.clear()

    async def wait(self, since: int, timeout: float) -> int:
        """Until ``seq`` differs from ``since``, at most ``timeout`` seconds; the seq then."""
        if self.seq != since or timeout <= 0:
            return self.seq
        fut = asyncio.get_running_loop().create_future()
        self._waiters.add(fut)
        try:
            await asyncio.wait_for(fut, min(timeout, MAX_WAIT))
        except asyncio.TimeoutError:
            pass
        finally:
            self._waiters.discard(fut)
        return self.seq

    @property
    def waiting(self) -> int:
        return len(self._waiters)
