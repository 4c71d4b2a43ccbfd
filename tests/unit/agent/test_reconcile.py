"""The pure local reconcile: desired tasks + observed containers + now -> actions."""

from __future__ import annotations

from typing import Dict, List

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmlet.shipped.models import RestartPolicy, TaskSpec, TaskState
from swarmlet_agent import reconcile as rc

pytestmark = pytest.mark.unit

NODE = "n1"


def task(tid: str = "t1", revision: int = 1, **kw) -> TaskSpec:
    return TaskSpec(task_id=tid, service="web", revision=revision, slot=1, image="img:1", **kw)


def ctr(cid: str, tid: str = "t1", status: str = "running", revision: int = 1, node: str = NODE,
        managed: str = "1", **kw) -> rc.Observed:
    labels = {rc.MANAGED: managed, rc.NODE: node, rc.TASK: tid, rc.REVISION: str(revision),
              rc.SERVICE: "web", rc.SLOT: "1"}
    return rc.Observed(cid, labels, status, **kw)


def kinds(p: rc.Plan) -> List[str]:
    return [type(a).__name__ for a in p.actions]


def test_missing_task_is_created():
    p = rc.plan(NODE, [task()], [], now=100.0)
    assert p.actions == (rc.Create(task()),)


def test_running_container_is_adopted_not_recreated():
    p = rc.plan(NODE, [task()], [ctr("c1", host_ports={"8080/tcp": 1234})], now=100.0)
    assert p.actions == ()
    v = p.verdicts["t1"]
    assert (v.state, v.container_id, v.host_ports) == (TaskState.RUNNING, "c1", {"8080/tcp": 1234})


def test_created_container_is_started():
    p = rc.plan(NODE, [task()], [ctr("c1", status="created")], now=1.0)
    assert p.actions == (rc.Start(task(), "c1"),)


def test_unassigned_container_is_removed():
    p = rc.plan(NODE, [], [ctr("c1", tid="gone")], now=1.0)
    assert p.actions == (rc.Remove("c1", "gone", "not assigned to this node"),)


def test_unknown_desired_state_touches_nothing():
    p = rc.plan(NODE, None, [ctr("c1", tid="x", status="exited", exit_code=1)], now=1.0)
    assert p.actions == () and p.verdicts == {}


@pytest.mark.parametrize("other", [
    dict(node="n2"), dict(managed="0"),
])
def test_foreign_containers_are_invisible(other):
    p = rc.plan(NODE, [], [ctr("c1", tid="t9", **other)], now=1.0)
    assert p.actions == ()


def test_container_without_task_label_is_foreign():
    c = rc.Observed("c1", {rc.MANAGED: "1", rc.NODE: NODE}, "running")
    assert rc.plan(NODE, [], [c], now=1.0).actions == ()


def test_duplicates_keep_the_running_one():
    cs = [ctr("old", status="exited", created_at=5.0), ctr("run", created_at=1.0),
          ctr("new", status="created", created_at=9.0)]
    p = rc.plan(NODE, [task()], cs, now=10.0)
    removed = sorted(a.container_id for a in p.actions if isinstance(a, rc.Remove))
    assert removed == ["new", "old"]
    assert p.verdicts["t1"].container_id == "run"
    assert not any(isinstance(a, (rc.Create, rc.Start)) for a in p.actions)


def test_stale_revision_is_replaced_stop_first():
    p = rc.plan(NODE, [task(revision=2)], [ctr("c1", revision=1)], now=1.0)
    assert p.actions == (rc.Remove("c1", "t1", "stale revision or dead"),)
    assert rc.plan(NODE, [task(revision=2)], [ctr("c1", revision=1, status="removing")],
                   now=1.0).actions == ()
    assert rc.plan(NODE, [task(revision=2)], [], now=1.0).actions == (rc.Create(task(revision=2)),)


def test_busy_task_gets_no_actions():
    p = rc.plan(NODE, [task()], [], now=1.0, busy=frozenset({"t1"}))
    assert p.actions == ()
    p = rc.plan(NODE, [], [ctr("c1", tid="t1")], now=1.0, busy=frozenset({"t1"}))
    assert p.actions == ()


def test_failed_task_is_not_recreated():
    p = rc.plan(NODE, [task()], [], now=1.0, failed={"t1": "pull img:1 failed: nope"})
    assert p.actions == ()
    assert p.verdicts["t1"].state is TaskState.FAILED
    assert "pull" in p.verdicts["t1"].reason


def test_crash_waits_for_backoff_then_restarts():
    t = task(restart=RestartPolicy(delay=0.5))
    c = ctr("c1", status="exited", exit_code=137, started_at=99.0, finished_at=100.0)
    early = rc.plan(NODE, [t], [c], now=100.2)
    assert early.actions == () and early.wake_at == pytest.approx(100.5)
    assert early.verdicts["t1"].down and "137" in early.verdicts["t1"].reason
    due = rc.plan(NODE, [t], [c], now=100.5)
    assert due.actions == (rc.Start(t, "c1", restart=True),)
    assert due.restarts["t1"] == rc.RestartRecord(total=1, streak=1)


def test_backoff_doubles_per_quick_crash_and_is_capped():
    t = task(restart=RestartPolicy(delay=0.5))
    pol = rc.BackoffPolicy(max_delay=3.0, reset_after=10.0)
    c = ctr("c1", status="exited", exit_code=1, started_at=99.0, finished_at=100.0)
    waits = []
    for streak in range(5):
        p = rc.plan(NODE, [t], [c], now=100.0, restarts={"t1": rc.RestartRecord(streak, streak)},
                    policy=pol)
        waits.append(p.wake_at - 100.0)
    assert waits == pytest.approx([0.5, 1.0, 2.0, 3.0, 3.0])


def test_long_run_resets_backoff():
    t = task(restart=RestartPolicy(delay=0.5))
    c = ctr("c1", status="exited", exit_code=1, started_at=50.0, finished_at=100.0)
    p = rc.plan(NODE, [t], [c], now=100.0, restarts={"t1": rc.RestartRecord(6, 6)})
    assert p.wake_at == pytest.approx(100.5)


@pytest.mark.parametrize("cond,code,state", [
    ("none", 0, TaskState.STOPPED), ("none", 3, TaskState.FAILED),
    ("on-failure", 0, TaskState.STOPPED),
])
def test_restart_policy_says_no(cond, code, state):
    t = task(restart=RestartPolicy(condition=cond))
    c = ctr("c1", status="exited", exit_code=code, finished_at=1.0)
    p = rc.plan(NODE, [t], [c], now=100.0)
    assert p.actions == () and p.verdicts["t1"].state is state


def test_on_failure_restarts_failures():
    t = task(restart=RestartPolicy(condition="on-failure"))
    c = ctr("c1", status="exited", exit_code=2, finished_at=1.0)
    assert kinds(rc.plan(NODE, [t], [c], now=100.0)) == ["Start"]


def test_max_attempts_gives_up():
    t = task(restart=RestartPolicy(max_attempts=2))
    c = ctr("c1", status="exited", exit_code=1, finished_at=1.0)
    p = rc.plan(NODE, [t], [c], now=100.0, restarts={"t1": rc.RestartRecord(2, 2)})
    assert p.actions == () and p.verdicts["t1"].state is TaskState.FAILED
    assert "gave up after 2 restarts" in p.verdicts["t1"].reason


def test_dead_container_is_replaced():
    p = rc.plan(NODE, [task()], [ctr("c1", status="dead")], now=1.0)
    assert kinds(p) == ["Remove"]


# -- properties ---------------------------------------------------------------

statuses = st.sampled_from(["created", "running", "exited", "dead", "paused", "restarting"])
observed_st = st.builds(
    lambda cid, tid, status, rev, node, code, fin: ctr(f"c{cid}", tid=f"t{tid}", status=status,
                                                       revision=rev, node=node, exit_code=code,
                                                       finished_at=fin, started_at=fin - 1),
    st.integers(0, 30), st.integers(0, 5), statuses, st.integers(1, 2), st.sampled_from([NODE, "n2"]),
    st.integers(0, 2), st.floats(0, 100),
)


@settings(max_examples=300, deadline=None)
@given(want=st.sets(st.integers(0, 5)), cs=st.lists(observed_st, max_size=12, unique_by=lambda c: c.container_id),
       busy=st.sets(st.integers(0, 5)), now=st.floats(0, 200))
def test_plan_invariants(want, cs, busy, now):
    desired = [task(f"t{i}", revision=2) for i in want]
    busy_ids = frozenset(f"t{i}" for i in busy)
    p = rc.plan(NODE, desired, cs, now=now, busy=busy_ids)
    ours = {c.container_id: c for c in cs if c.labels[rc.NODE] == NODE}
    creates: Dict[str, int] = {}
    for a in p.actions:
        if isinstance(a, rc.Create):
            creates[a.task.task_id] = creates.get(a.task.task_id, 0) + 1
            assert a.task.task_id not in busy_ids
        else:
            # never touch a foreign container, never one of a busy task
            assert a.container_id in ours
            assert ours[a.container_id].task_id not in busy_ids
    # at most one create per task, and only when no usable container of it survives
    for tid, n in creates.items():
        assert n == 1
    # after the plan, each desired, non-busy task keeps at most one container
    removed = {a.container_id for a in p.actions if isinstance(a, rc.Remove)}
    for t in desired:
        if t.task_id in busy_ids:
            continue
        kept = [c for c in ours.values() if c.task_id == t.task_id and c.container_id not in removed]
        assert len(kept) + creates.get(t.task_id, 0) <= 1
        leaving = [c for c in ours.values() if c.task_id == t.task_id and
                   (c.container_id in removed or c.status == "removing")]
        if not leaving:
            assert len(kept) + creates.get(t.task_id, 0) == 1
    # containers of tasks no longer wanted are all removed (unless busy)
    for c in ours.values():
        if c.task_id not in {t.task_id for t in desired} and c.task_id not in busy_ids:
            assert c.container_id in removed
