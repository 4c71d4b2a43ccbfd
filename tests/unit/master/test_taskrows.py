"""The ps body: the same JSON as the row views, and encoded again only where a task changed."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import pytest

from swarmlet.master import taskrows, views
from swarmlet.master.state import SHUTDOWN, Task
from swarmlet.master.taskindex import TaskIndex
from swarmlet.shipped.exceptions import APIError
from swarmlet.shipped.models import Health, TaskState

pytestmark = pytest.mark.unit


def master(n: int = 30) -> SimpleNamespace:
    idx = TaskIndex()
    for i in range(n):
        idx.put(Task(f"t{i}", f"s{i % 3}", i // 3, 1, node=f"n{i % 5}", state=TaskState.RUNNING,
                     created_at=float(i)))
    idx.put(Task("old", "s0", 0, 1, node="n0", desired=SHUTDOWN, state=TaskState.STOPPED))
    return SimpleNamespace(tasks=idx, services={"s0": 1, "s1": 1, "s2": 1, "gone": 1})


@pytest.fixture
def encodes(monkeypatch):
    calls = []
    real = views.task_row

    def counting(t):
        calls.append(t.task_id)
        return real(t)
    monkeypatch.setattr(views, "task_row", counting)
    return calls


@pytest.mark.parametrize("service,all_tasks", [(None, False), (None, True), ("s1", False),
                                               ("s0", True), ("gone", False)])
def test_same_json_as_the_views(service, all_tasks):
    m = master()
    assert json.loads(taskrows.TaskRows().body(m, service, all_tasks)) == \
        views.tasks_view(m, service, all_tasks)


def test_unknown_service_is_404_even_when_cached():
    m, rows = master(), taskrows.TaskRows()
    rows.body(m)
    with pytest.raises(APIError) as e:
        rows.body(m, "nope")
    assert e.value.status == 404


def test_one_change_encodes_one_row(encodes):
    m, rows = master(), taskrows.TaskRows()
    first = rows.body(m)
    assert len(encodes) == 30
    assert rows.body(m) is first and len(encodes) == 30       # nothing changed: the same bytes
    t = m.tasks["t7"]
    m.tasks.put(dataclasses.replace(t, health=Health.UNHEALTHY))
    after = rows.body(m)
    assert encodes[30:] == ["t7"]
    assert next(r for r in json.loads(after) if r["task"] == "t7")["health"] == "unhealthy"
    assert json.loads(after) == views.tasks_view(m)


def test_rows_of_dropped_tasks_do_not_pile_up():
    m, rows = master(10), taskrows.TaskRows()
    for gen in range(300):     # every task replaced by a new one, 300 times over
        for i in range(10):
            m.tasks.drop(f"g{gen - 1}-{i}" if gen else f"t{i}")
            m.tasks.put(Task(f"g{gen}-{i}", "s0", i, 1, node="n0", state=TaskState.RUNNING))
        rows.body(m)
    assert len(rows._rows) <= 2 * len(m.tasks) + taskrows.PRUNE_SLACK
    assert len(rows._bodies) <= taskrows.BODIES
