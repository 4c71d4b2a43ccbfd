"""The task ledger: everything the agent remembers about each task between passes. Pure.

One entry per task id (or per container key of a removal) instead of a dict
per fact: the restart record and the revision it belongs to, a definite
failure and its revision, how many actions are in flight, whether an action
finished since the last pass, the HTTP health tracker and the next probe time,
and the last verdict of the reconciler. Facts that belong to one revision of a
task (failures, restart counts) are dropped when the assignment brings another
revision (``assigned``), and entries of tasks no longer wanted are dropped
(``retain``), so the ledger never grows without bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, FrozenSet, Iterable, Iterator, Mapping, Optional, Tuple

from .health import HealthTracker
from .reconcile import RestartRecord, Verdict


@dataclass
class Entry:
    restart: Optional[RestartRecord] = None
    restart_rev: Optional[int] = None
    failed: Optional[str] = None           # a definite failure's reason (no retry of this revision)
    failed_rev: Optional[int] = None
    busy: int = 0                          # actions in flight
    touched: bool = False                  # an action finished since the pass began
    tracker: Optional[HealthTracker] = None
    next_probe: float = 0.0
    verdict: Optional[Verdict] = None

    @property
    def empty(self) -> bool:
        return (self.restart is None and self.failed is None and not self.busy
                and not self.touched and self.tracker is None and self.verdict is None)


class TaskLedger:
    def __init__(self) -> None:
        self._e: Dict[str, Entry] = {}

    def entry(self, key: str) -> Entry:
        e = self._e.get(key)
        if e is None:
            e = self._e[key] = Entry()
        return e

    def get(self, key: str) -> Optional[Entry]:
        return self._e.get(key)

    def items(self) -> Iterator[Tuple[str, Entry]]:
        return iter(list(self._e.items()))

    # --- what the pure planner reads ------------------------------------------------

    def restarts(self) -> Dict[str, RestartRecord]:
        return {k: e.restart for k, e in self._e.items() if e.restart is not None}

    def failures(self) -> Dict[str, str]:
        return {k: e.failed for k, e in self._e.items() if e.failed is not None}

    def busy(self) -> FrozenSet[str]:
        """Keys with an action in flight or one that finished during this pass."""
        return frozenset(k for k, e in self._e.items() if e.busy or e.touched)

    def verdicts(self) -> Dict[str, Verdict]:
        return {k: e.verdict for k, e in self._e.items() if e.verdict is not None}

    # --- what happened --------------------------------------------------------------

    def begin_pass(self) -> None:
        for e in self._e.values():
            e.touched = False

    def set_restarts(self, restarts: Mapping[str, RestartRecord],
                     revision_of: Mapping[str, int]) -> None:
        """The planner's restart records after a pass (others are cleared)."""
        for k, e in self._e.items():
            if k not in restarts:
                e.restart = None
        for k, rec in restarts.items():
            e = self.entry(k)
            e.restart = rec
            if k in revision_of:
                e.restart_rev = revision_of[k]

    def set_verdicts(self, verdicts: Mapping[str, Verdict]) -> None:
        for k, e in self._e.items():
            if k not in verdicts:
                e.verdict = None
        for k, v in verdicts.items():
            self.entry(k).verdict = v

    def fail(self, key: str, reason: str, revision: int) -> None:
        e = self.entry(key)
        e.failed, e.failed_rev = reason, revision

    def start_action(self, key: str) -> None:
        self.entry(key).busy += 1

    def end_action(self, key: str) -> None:
        e = self.entry(key)
        e.busy = max(0, e.busy - 1)
        e.touched = True

    def assigned(self, wanted: Mapping[str, int]) -> None:
        """A new assignment (task id -> revision): failures and restart counts belong to one
        revision of one task."""
        for k, e in self._e.items():
            if e.failed is not None and wanted.get(k) != e.failed_rev:
                e.failed = e.failed_rev = None
            if e.restart is not None and wanted.get(k) != e.restart_rev:
                e.restart = e.restart_rev = None

    def retain(self, keep: Iterable[str]) -> None:
        """Forget what only matters for wanted tasks (restarts, health tracking) of the others,
        and drop empty entries."""
        keep = set(keep)
        for k, e in list(self._e.items()):
            if k not in keep:
                e.restart = e.restart_rev = None
                e.tracker, e.next_probe = None, 0.0
            if e.empty:
                del self._e[k]

    def __len__(self) -> int:
        return len(self._e)
