"""The master's garbage collector: tuned for a large long-lived heap, and its pauses counted.

A master of 1,000 nodes and 10,000 tasks holds millions of objects: tasks, route tables, the
history ring, connections. With CPython's default thresholds (700, 10, 10), a collection of the
oldest generation walked all of them every 0.8 s while a deploy allocated, and every 10 s at
idle. Each took 300-450 ms on the only event loop and freed almost nothing (bench/scale at
1,000 nodes: 200 such pauses, 61 s of a 220 s run). Nearly all of the master's garbage is freed
by reference counting, and its cycles are short-lived, so ``install`` makes the young
generations larger and a full collection rarer (``THRESHOLDS``). Memory held by cyclic garbage
stays bounded: a full collection still runs, only less often. ``install`` also hooks
``gc.callbacks`` to time each collection. ``stats`` gives counts and seconds per generation,
and a pause over ``LONG`` is logged.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any, Dict, List, Tuple

log = logging.getLogger("swarmlet.master.gc")
LONG = 0.05        # seconds: a pause worth a log line
# gen0 after 20,000 allocations (a few ms: young objects only), gen1 every 50 of those, and a
# full collection considered after 100 gen1 collections (and, as always, only once the
# long-lived objects grew by a quarter)
THRESHOLDS = (20_000, 50, 100)

_start: List[float] = [0.0, 0.0]
_count = [0, 0, 0]
_seconds = [0.0, 0.0, 0.0]


def _callback(phase: str, info: Dict[str, Any]) -> None:
    if phase == "start":
        _start[0], _start[1] = time.perf_counter(), time.thread_time()
        return
    gen = int(info.get("generation", 0))
    took = time.perf_counter() - _start[0]
    cpu = time.thread_time() - _start[1]      # less than ``took`` when the process was preempted
    _count[gen] += 1
    _seconds[gen] += took
    if took >= LONG:
        log.warning("gc pause %.0f ms, %.0f ms of CPU (generation %d, %d objects freed)",
                    took * 1000, cpu * 1000, gen, int(info.get("collected", 0)))


def install(thresholds: Tuple[int, int, int] = THRESHOLDS) -> None:
    gc.set_threshold(*thresholds)
    if _callback not in gc.callbacks:
        gc.callbacks.append(_callback)


def stats() -> Dict[str, Any]:
    return {"count": list(_count), "seconds": [round(s, 3) for s in _seconds]}
