"""The long-poll watch on the agent's task report (agent/watch.py, agent/status.py)."""

from __future__ import annotations

import asyncio

from swarmlet.shipped.models import TaskSpec, TaskState
from swarmlet_agent.status import StatusBook
from swarmlet_agent.watch import ChangeWatch


def _task(tid: str = "web.1.a") -> TaskSpec:
    return TaskSpec(task_id=tid, service="web", revision=1, slot=1, image="img")


def test_the_book_reports_each_change_and_only_changes():
    calls = []
    book = StatusBook(on_change=lambda: calls.append(1))
    t = _task()
    book.ensure(t, 1.0)
    book.ensure(t, 2.0)                                   # the same row: no change
    assert len(calls) == 1
    book.update(t, 3.0, TaskState.RUNNING)
    book.update(t, 4.0, TaskState.STARTING)               # never backwards: no change
    assert len(calls) == 2
    book.bump_restarts(t, 5.0)
    book.retain([t.task_id])                              # nothing removed
    assert len(calls) == 3
    book.retain([])
    assert len(calls) == 4 and book.rows() == []


async def test_a_wait_returns_on_a_bump_or_at_its_timeout():
    w = ChangeWatch()
    s0 = w.seq
    assert await w.wait(since=s0 - 1, timeout=10) == s0    # already different: at once
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert await w.wait(since=s0, timeout=0.05) == s0      # nothing moved: the timeout
    assert loop.time() - t0 >= 0.04
    waiting = asyncio.create_task(w.wait(since=s0, timeout=30))
    await asyncio.sleep(0.01)
    assert w.waiting == 1
    w.bump()
    assert await asyncio.wait_for(waiting, 1) == s0 + 1
    assert w.waiting == 0


def test_two_watches_rarely_start_alike():
    # a restarted agent must not answer its master's old seq with "nothing changed"
    assert len({ChangeWatch().seq for _ in range(20)}) > 15
