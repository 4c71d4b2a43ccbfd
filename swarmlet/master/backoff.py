"""Replacement backoff: a slot whose task keeps failing is retried ever more slowly. Pure.

The agent restarts a crashed container in place with exponential backoff
(``agent/reconcile.py``). A task that cannot start at all (its image does not
pull, its container cannot be created, or the agent gave up restarting it)
fails, and the master replaces it with a new task. Without a pause that is a
tight loop: a new task every poll, each with its own events, until the bounded
event log holds nothing else. So replacements back off the same way restarts
do:

- the successor of a failed task waits ``restart.delay * 2**(n-1)`` seconds,
  ``n`` being the slot's failures in a row, capped at ``max_delay`` (30 s,
  the agent's default cap);
- a task that served for ``reset_after`` seconds (10 s, as the agent) before
  it failed starts the count again;
- while it waits, the successor is a pending task whose reason is the last
  failure ("pull x:1 failed: …; failure 3, next try in 4s"), so ``swarmlet
  ps`` says why; once placed, ``ps`` keeps showing that failure until the new
  task runs;
- the events of a failing slot carry a ``key`` (``event_key``): the store
  keeps one event per key, so identical failures in a row are one event whose
  message counts them ("(7 times in a row)").

A new revision of the service (an update or a rollback) starts afresh.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional, Tuple

from ..shipped.models import TaskState
from .state import Task


@dataclass(frozen=True)
class Backoff:
    max_delay: float = 30.0      # the cap of the wait between two attempts of one slot
    reset_after: float = 10.0    # a task that served this long starts the count again


def delay(base: float, failures: int, policy: Backoff) -> float:
    """The wait before attempt ``failures + 1`` (``failures`` >= 1 in a row so far)."""
    return min(policy.max_delay, max(0.0, base) * (2 ** min(max(0, failures - 1), 30)))


def failed(t: Task) -> bool:
    """Whether ``t`` ended as a failed attempt (not stopped on purpose, not lost with a node)."""
    return t.state == TaskState.FAILED


def successor(prev: Task, base: float, policy: Backoff) -> Tuple[int, float, str]:
    """(failures in a row, not before, pending reason) for the task that replaces ``prev``,
    a failed task that was shut down (its ``updated_at``: when the wait starts)."""
    served = prev.serving_since and prev.updated_at - prev.serving_since >= policy.reset_after
    n = 1 if served else prev.failures + 1
    wait = delay(base, n, policy)
    error = prev.last_error or prev.reason or "task failed"
    return n, prev.updated_at + wait, f"{error}; failure {n}, next try in {wait:.0f}s"


def times(n: int) -> str:
    """The count suffix of a coalesced event (nothing for the first one)."""
    return f" ({n} times in a row)" if n > 1 else ""


def event_key(kind: str, service: str, slot: int, reason: str = "") -> str:
    """One key per slot, kind and failure text: identical failures in a row are one event."""
    digest = hashlib.sha1(reason.encode("utf-8", "replace")).hexdigest()[:12] if reason else ""
    return f"{kind}:{service}:{slot}:{digest}"


def last_error(t: Task) -> Optional[str]:
    """The failure ``ps`` shows for a task that has not run yet (None: nothing to show)."""
    if t.last_error and t.state < TaskState.RUNNING and not t.reason:
        return t.last_error
    return None
