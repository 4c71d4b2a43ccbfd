"""Timed reconcile passes over settled state are skipped, and only then."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from swarmlet.master import reconciler as rc
from swarmlet.master import rollout as ro
from swarmlet.master.reconcile import Changes
from swarmlet.master.state import SHUTDOWN, Task
from swarmlet.master.taskindex import TaskIndex
from swarmlet.shipped.models import TaskState

pytestmark = pytest.mark.unit


def settled():
    idx = TaskIndex()
    for i in range(5):
        idx.put(Task(f"t{i}", "web", i, 1, node="n1", state=TaskState.RUNNING))
    m = SimpleNamespace(tasks=idx, rollouts={}, rebalance_services={}, rebalance_until=0.0,
                        clock=lambda: 100.0)
    r = rc.Reconciler(m)
    r._settled = r._settled_after(Changes())
    return m, r


def test_settled_state_skips_timed_passes_but_not_forever():
    m, r = settled()
    runs = [r._timed_pass_needed() for _ in range(3 * (rc.MAX_SKIPS + 1))]
    assert runs.count(True) == 3 and runs[rc.MAX_SKIPS] is True and not any(runs[:rc.MAX_SKIPS])


@pytest.mark.parametrize("unsettle", ["task_changed", "pending", "stopping", "rollout",
                                      "rebalance", "backoff", "changes"])
def test_anything_left_for_the_clock_runs_the_pass(unsettle):
    m, r = settled()
    if unsettle == "task_changed":
        m.tasks.put(Task("t9", "web", 9, 1, node="n1", state=TaskState.RUNNING))
    elif unsettle == "pending":
        m.tasks.put(Task("t9", "web", 9, 1))
        r._settled = r._settled_after(Changes())
    elif unsettle == "stopping":
        m.tasks.put(Task("t9", "web", 9, 1, node="n1", desired=SHUTDOWN, state=TaskState.STOPPED))
        r._settled = r._settled_after(Changes())
    elif unsettle == "rollout":
        m.rollouts["web"] = SimpleNamespace(status=ro.UPDATING)
    elif unsettle == "rebalance":
        m.rebalance_until = 200.0
    elif unsettle == "backoff":
        r.wake_at = 130.0
    elif unsettle == "changes":
        r._settled = r._settled_after(Changes(create=[m.tasks["t0"]]))
    assert all(r._timed_pass_needed() for _ in range(3))


def test_a_finished_rollout_does_not_keep_passes_running():
    m, r = settled()
    m.rollouts["web"] = SimpleNamespace(status=ro.COMPLETED)
    assert not r._timed_pass_needed()
