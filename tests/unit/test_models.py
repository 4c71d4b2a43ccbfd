"""The wire codec round-trips every model and rejects wrong types; task
states only move forward."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from swarmlet.shipped.exceptions import ProtocolError
from swarmlet.shipped.models import (Assignment, Health, PortSpec, ServiceSpec, TaskSpec, TaskState,
                             TaskStatus, from_wire, to_wire)

pytestmark = pytest.mark.unit

names = st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=8)
ports = st.builds(PortSpec, target=st.integers(1, 65535),
                  published=st.none() | st.integers(1, 65535), host_port=st.none() | st.integers(1, 65535))
tasks = st.builds(TaskSpec, task_id=names, service=names, revision=st.integers(0, 10**6),
                  slot=st.integers(0, 100), image=names,
                  command=st.none() | st.tuples(names, names),
                  env=st.dictionaries(names, names, max_size=3), ports=st.tuples(ports))


@given(st.builds(Assignment, node=names, version=st.integers(0, 2**40), tasks=st.tuples(tasks, tasks)))
def test_assignment_round_trips(assignment):
    assert from_wire(Assignment, to_wire(assignment)) == assignment


@given(st.builds(TaskStatus, task_id=names, service=names, revision=st.integers(0, 9),
                 state=st.sampled_from(TaskState), health=st.sampled_from(Health)))
def test_status_round_trips(status):
    assert from_wire(TaskStatus, to_wire(status)) == status


def test_service_spec_defaults_round_trip():
    spec = ServiceSpec(name="web", image="swarmlet-hello:1", replicas=3, ports=(PortSpec(8080, 8080),))
    assert from_wire(ServiceSpec, to_wire(spec)) == spec


@pytest.mark.parametrize("bad, field", [
    ({"node": "n", "version": "7"}, "Assignment.version"),
    ({"node": 3, "version": 1}, "Assignment.node"),
    ({"node": "n", "version": 1, "tasks": [{"task_id": "t"}]}, "Assignment.tasks[0]"),
    ({"node": "n", "version": True}, "Assignment.version"),
    ([1, 2], "Assignment"),
])
def test_wrong_types_are_refused_with_the_field(bad, field):
    with pytest.raises(ProtocolError) as err:
        from_wire(Assignment, bad)
    assert field in str(err.value)


def test_unknown_enum_value_is_refused():
    with pytest.raises(ProtocolError, match="not a valid TaskState"):
        from_wire(TaskStatus, {"task_id": "t", "service": "s", "revision": 1, "state": 99})


@given(st.lists(st.sampled_from(TaskState), min_size=1, max_size=20))
def test_task_state_never_goes_backwards(observed):
    state = TaskState.NEW
    for new in observed:
        nxt = state.advance(new)
        assert nxt >= state
        state = nxt
    assert state == max(observed + [TaskState.NEW])
