"""A loop-lag probe: how late the event loop wakes a sleeping task.

A blocking call anywhere in the agent shows up here as lag. The worst value
is exported in ``/metrics``. On a busy machine the kernel also keeps a runnable
loop thread off the CPU now and then (other processes' turn), which no code of
ours can avoid; ``/proc/thread-self/schedstat`` says how long the thread waited
on a run queue, and ``max_own_lag`` is the worst lag less that wait: what the
agent itself caused (a blocking call, a thread holding the GIL). The integration
tests assert it stays under 100 ms while the agent creates, kills and restarts
containers. Without schedstat (not Linux) it equals the plain lag.
"""

from __future__ import annotations

import asyncio
import time
from typing import Optional

_SCHEDSTAT = "/proc/thread-self/schedstat"


def _queued() -> Optional[float]:
    """Seconds this thread has spent runnable but waiting for a CPU, or None."""
    try:
        with open(_SCHEDSTAT) as fh:
            return int(fh.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


class LagProbe:
    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.max_lag = 0.0
        self.max_own_lag = 0.0
        self.samples = 0
        self._task: Optional["asyncio.Task[None]"] = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag-probe")

    async def _run(self) -> None:
        while True:
            t0, q0 = time.monotonic(), _queued()
            await asyncio.sleep(self.interval)
            lag = time.monotonic() - t0 - self.interval
            q1 = _queued()
            waited = q1 - q0 if q0 is not None and q1 is not None else 0.0
            self.samples += 1
            if lag > self.max_lag:
                self.max_lag = lag
            if lag - waited > self.max_own_lag:
                self.max_own_lag = lag - waited

    def reset(self) -> float:
        worst, self.max_lag, self.max_own_lag = self.max_lag, 0.0, 0.0
        return worst

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
