"""A loop-lag probe: how late the event loop wakes a sleeping task.

A blocking call anywhere in the agent shows up here as lag. The worst value
is exported in ``/metrics`` and the integration tests assert it stays under
100 ms while the agent creates, kills and restarts containers.
"""

from __future__ import annotations

import asyncio
import time
from typing import Optional


class LagProbe:
    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.max_lag = 0.0
        self.samples = 0
        self._task: Optional["asyncio.Task[None]"] = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag-probe")

    async def _run(self) -> None:
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(self.interval)
            lag = time.monotonic() - t0 - self.interval
            self.samples += 1
            if lag > self.max_lag:
                self.max_lag = lag

    def reset(self) -> float:
        worst, self.max_lag = self.max_lag, 0.0
        return worst

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
