"""``reconcile.in_chunks``: a pass's changes as store batches of a bounded size."""

from swarmlet.master.reconcile import Changes, Event, in_chunks
from tests.contracts.store import _task


def test_chunks_hold_every_change_once_and_the_pass_events_ride_first():
    ch = Changes(create=[_task(f"c{i}") for i in range(5)], update=[_task("u0")],
                 delete=[f"d{i}" for i in range(4)], events=[Event("service", "web", "scaled")],
                 wake_at=7.0)
    parts = in_chunks(ch, 4)
    assert [len(p.create) + len(p.update) + len(p.delete) for p in parts] == [4, 4, 2]
    assert [t.task_id for p in parts for t in p.create] == [f"c{i}" for i in range(5)]
    assert [t.task_id for p in parts for t in p.update] == ["u0"]
    assert [d for p in parts for d in p.delete] == [f"d{i}" for i in range(4)]
    assert parts[0].events == ch.events and parts[0].wake_at == 7.0
    assert all(not p.events and p.wake_at is None for p in parts[1:])


def test_nothing_to_store_is_one_empty_part_and_a_small_pass_is_one_batch():
    assert [p.empty for p in in_chunks(Changes(events=[Event("service", "w", "m")]), 10)] == [True]
    ch = Changes(create=[_task("a")], delete=["b"])
    (only,) = in_chunks(ch, 10)
    assert only.create == ch.create and only.delete == ["b"]
