"""The master's tasks in memory, indexed by node. Read as a mapping of task id -> ``Task``.

Owns the one index the hot paths need: a node's tasks (``on(node)``) without
scanning every task, for assignments, views and polling. Only the daemon's
commit path writes it (``put``/``drop``), after the store has the change.
"""

from __future__ import annotations

from typing import Dict, Iterator, List, Mapping, Optional, Set

from .state import Task


class TaskIndex(Mapping[str, Task]):
    def __init__(self) -> None:
        self._tasks: Dict[str, Task] = {}
        self._by_node: Dict[Optional[str], Set[str]] = {}

    def __getitem__(self, task_id: str) -> Task:
        return self._tasks[task_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)

    def put(self, t: Task) -> None:
        old = self._tasks.get(t.task_id)
        if old is not None:
            self._by_node.get(old.node, set()).discard(t.task_id)
        self._tasks[t.task_id] = t
        self._by_node.setdefault(t.node, set()).add(t.task_id)

    def drop(self, task_id: str) -> None:
        old = self._tasks.pop(task_id, None)
        if old is not None:
            self._by_node.get(old.node, set()).discard(task_id)

    def on(self, node: str) -> List[Task]:
        """The tasks placed on ``node`` (any desired state)."""
        return [self._tasks[i] for i in self._by_node.get(node, ())]
