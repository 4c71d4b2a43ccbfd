"""The observed status of this node's tasks, as reported up to the master.

Owns the ``TaskStatus`` table. States only move forward (``TaskState.advance``):
a crashed task that the agent restarts stays ``running`` with health
``unhealthy`` and a reason until it is back, and its ``restarts`` count
grows; ``failed``/``stopped`` are final for a task id. Pure apart from the
timestamps it is handed. ``on_change`` is called after every change of the table
(the long polls of ``GET /v1/tasks`` wait for it, see ``watch``).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Optional

from swarmlet.shipped.models import Health, TaskSpec, TaskState, TaskStatus


class StatusBook:
    def __init__(self, on_change: Optional[Callable[[], None]] = None) -> None:
        self._rows: Dict[str, TaskStatus] = {}
        self._on_change = on_change or (lambda: None)

    def get(self, task_id: str) -> Optional[TaskStatus]:
        return self._rows.get(task_id)

    def ensure(self, task: TaskSpec, now: float) -> TaskStatus:
        row = self._rows.get(task.task_id)
        if row is None or row.revision != task.revision:  # a new revision starts afresh
            row = TaskStatus(task.task_id, task.service, task.revision, TaskState.ASSIGNED,
                             updated_at=now)
            self._rows[task.task_id] = row
            self._on_change()
        return row

    def update(self, task: TaskSpec, now: float, state: Optional[TaskState] = None,
               **changes: object) -> TaskStatus:
        row = self.ensure(task, now)
        new_state = row.state.advance(state) if state is not None else row.state
        if row.state.terminal and new_state != row.state:
            new_state = row.state  # a final verdict is final
        merged = dataclasses.replace(row, state=new_state, **changes)  # type: ignore[arg-type]
        if merged != row:
            merged = dataclasses.replace(merged, updated_at=now)
            self._rows[task.task_id] = merged
            self._on_change()
        return self._rows[task.task_id]

    def bump_restarts(self, task: TaskSpec, now: float) -> None:
        row = self.ensure(task, now)
        self._rows[task.task_id] = dataclasses.replace(row, restarts=row.restarts + 1, updated_at=now)
        self._on_change()

    def retain(self, task_ids: List[str]) -> None:
        keep = set(task_ids)
        gone = [tid for tid in self._rows if tid not in keep]
        for tid in gone:
            del self._rows[tid]
        if gone:
            self._on_change()

    def rows(self) -> List[TaskStatus]:
        return sorted(self._rows.values(), key=lambda r: (r.service, r.task_id))

    def counts(self) -> Dict[str, int]:
        out: Dict[str, int] = {}
        for r in self._rows.values():
            key = r.state.name.lower()
            out[key] = out.get(key, 0) + 1
        return out


def down_health(row: TaskStatus) -> Health:
    """Health to show while a task's container is not running."""
    return Health.UNHEALTHY if row.state >= TaskState.RUNNING else row.health
