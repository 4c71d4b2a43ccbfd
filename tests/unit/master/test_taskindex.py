"""The master's task index: by node and by service, kept right through moves and drops."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from swarmlet.master.state import Task
from swarmlet.master.taskindex import TaskIndex


def test_by_node_and_by_service_follow_puts_moves_and_drops():
    ix = TaskIndex()
    ix.put(Task("a.1", "a", 1, 1, node="n1"))
    ix.put(Task("a.2", "a", 2, 1, node="n2"))
    ix.put(Task("b.1", "b", 1, 1, node="n1"))
    assert [t.task_id for t in ix.of("a")] == ["a.1", "a.2"]
    assert sorted(t.task_id for t in ix.on("n1")) == ["a.1", "b.1"]
    ix.put(Task("a.1", "a", 1, 1, node="n2"))            # moved: still one entry of its service
    assert [t.node for t in ix.of("a")] == ["n2", "n2"]
    assert [t.task_id for t in ix.on("n1")] == ["b.1"]
    ix.drop("b.1")
    ix.drop("nope")
    assert ix.of("b") == [] and ix.on("n1") == []
    assert sorted(ix) == ["a.1", "a.2"] and len(ix.values()) == 2


ops = st.lists(st.tuples(st.sampled_from(["put", "drop"]), st.integers(0, 6), st.sampled_from("xyz"),
                         st.sampled_from(["n1", "n2", None])), max_size=60)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_the_indexes_always_agree_with_a_scan(seq):
    ix = TaskIndex()
    for op, i, svc, node in seq:
        tid = f"t{i}"
        if op == "put":
            old = ix.get(tid)
            ix.put(Task(tid, old.service if old else svc, 1, 1, node=node))
        else:
            ix.drop(tid)
    for svc in "xyz":
        assert [t.task_id for t in ix.of(svc)] == [t.task_id for t in ix.values() if t.service == svc]
    for node in ("n1", "n2", None):
        assert sorted(t.task_id for t in ix.on(node)) == sorted(
            t.task_id for t in ix.values() if t.node == node)


def test_touched_nodes_and_version_tell_what_changed():
    ix = TaskIndex()
    v0 = ix.version
    ix.put(Task("a.1", "a", 1, 1, node="n1"))
    ix.put(Task("a.2", "a", 2, 1, node=None))
    assert ix.take_touched() == {"n1", None} and ix.take_touched() == set()
    ix.put(Task("a.1", "a", 1, 1, node="n2"))          # a move touches both nodes
    assert ix.take_touched() == {"n1", "n2"}
    ix.drop("a.2")
    ix.drop("nope")                                     # nothing there: nothing touched
    assert ix.take_touched() == {None}
    assert ix.version == v0 + 4
