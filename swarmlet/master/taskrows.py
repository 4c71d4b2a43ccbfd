"""The ``ps`` answer (``GET /v1/tasks``) as JSON bytes, encoded once per change.

At 10,000 tasks the list is 3.4 MB of JSON. Building 10,000 row dicts and one
``json.dumps`` of them on the master's only event loop took 80-170 ms a call, with a p99 of
0.4-0.5 s at 1,000 nodes (bench/scale). Tasks are frozen, and a changed task is a new object,
so each row's bytes are kept beside the ``Task`` they were made from and reused while it is
still that object (``is``). The whole body is kept per (tasks version, service, all) until a
task changes. A call at idle then costs the write of the body. After one health flip it costs
a sort and a join, and only the changed row is encoded again.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any, Dict, Optional, Tuple

from . import views
from .state import Task

BODIES = 8      # bodies kept for the current tasks version (filters: a service, all or not)
PRUNE_SLACK = 1024   # rows of gone tasks tolerated before a prune


class TaskRows:
    def __init__(self) -> None:
        self._rows: Dict[str, Tuple[Task, bytes]] = {}
        self._bodies: "OrderedDict[Tuple[Any, ...], bytes]" = OrderedDict()

    def body(self, m: Any, service: Optional[str] = None, all_tasks: bool = False) -> bytes:
        """The JSON list ``views.tasks_view`` describes (404 for an unknown service)."""
        version = getattr(m.tasks, "version", None)
        key = (version, service, all_tasks)
        cached = self._bodies.get(key) if version is not None else None
        if cached is not None:
            return cached
        rows = views.task_list(m, service, all_tasks)   # raises the 404
        body = b"[" + b",".join([self._row(t) for t in rows]) + b"]"
        if version is None:
            return body
        for k in [k for k in self._bodies if k[0] != version]:
            del self._bodies[k]
        self._bodies[key] = body
        while len(self._bodies) > BODIES:
            self._bodies.popitem(last=False)
        self._prune(m)
        return body

    def _row(self, t: Task) -> bytes:
        hit = self._rows.get(t.task_id)
        if hit is not None and hit[0] is t:
            return hit[1]
        b = json.dumps(views.task_row(t)).encode()
        self._rows[t.task_id] = (t, b)
        return b

    def _prune(self, m: Any) -> None:
        # rows of tasks gone from the master: dropped once they outnumber the live ones
        if len(self._rows) > 2 * len(m.tasks) + PRUNE_SLACK:
            self._rows = {i: r for i, r in self._rows.items() if i in m.tasks}
