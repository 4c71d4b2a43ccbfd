"""The agent's task ledger (agent/ledger.py): one entry per task instead of a dict per fact."""

from __future__ import annotations

import pytest

from swarmlet.shipped.models import HealthCheck, TaskState
from swarmlet_agent.health import HealthTracker
from swarmlet_agent.ledger import TaskLedger
from swarmlet_agent.reconcile import RestartRecord, Verdict

pytestmark = pytest.mark.unit


def _verdict():
    return Verdict(TaskState.RUNNING)


def test_busy_covers_actions_in_flight_and_those_finished_this_pass():
    led = TaskLedger()
    led.start_action("a")
    led.start_action("a")
    led.start_action("b")
    assert led.busy() == {"a", "b"}
    led.end_action("b")                 # finished during this pass: still busy for the planner
    assert led.busy() == {"a", "b"}
    led.begin_pass()
    assert led.busy() == {"a"}
    led.end_action("a")
    led.begin_pass()
    assert led.busy() == {"a"}          # one more in flight
    led.end_action("a")
    led.begin_pass()
    assert led.busy() == frozenset()


def test_failures_and_restarts_belong_to_one_revision():
    led = TaskLedger()
    led.fail("a", "image missing", revision=1)
    led.set_restarts({"b": RestartRecord(2, 1)}, {"b": 3})
    assert led.failures() == {"a": "image missing"} and set(led.restarts()) == {"b"}
    led.assigned({"a": 1, "b": 3})      # same revisions: kept
    assert led.failures() == {"a": "image missing"} and set(led.restarts()) == {"b"}
    led.assigned({"a": 2, "b": 3})      # a new revision of a starts afresh
    assert led.failures() == {} and set(led.restarts()) == {"b"}
    led.assigned({})                    # b no longer assigned
    assert led.restarts() == {}


def test_set_restarts_and_verdicts_replace_the_previous_pass():
    led = TaskLedger()
    led.set_restarts({"a": RestartRecord(1, 1)}, {"a": 1})
    led.set_restarts({"b": RestartRecord(1, 0)}, {"b": 1})
    assert set(led.restarts()) == {"b"}
    led.set_verdicts({"a": _verdict()})
    led.set_verdicts({"b": _verdict()})
    assert set(led.verdicts()) == {"b"}


def test_retain_forgets_unwanted_tasks_and_never_grows_without_bound():
    led = TaskLedger()
    for i in range(100):
        k = f"t{i}"
        led.set_restarts({k: RestartRecord(1, 1)}, {k: 1})
        led.entry(k).tracker = HealthTracker(HealthCheck(kind="http"), 0.0)
        led.start_action(k)
        led.end_action(k)
        led.set_verdicts({})
        led.begin_pass()
        led.retain([])
    assert len(led) == 0
    led.start_action("busy")
    led.retain([])
    assert led.busy() == {"busy"}       # an action in flight keeps its entry
