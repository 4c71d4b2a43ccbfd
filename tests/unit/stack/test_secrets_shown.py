"""Finding 9: plans, events, errors and logs say that an env value changed, never the value."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging

import pytest

from swarmlet.master.views import plan_view
from swarmlet.shipped.models import ServiceSpec, TaskSpec
from swarmlet.stack import plan_deploy, render_plan
from swarmlet.stack.plan import diff_specs
from swarmlet_agent import reconcile as rc
from swarmlet_agent.executor import Executor
from swarmlet_agent.ledger import TaskLedger
from swarmlet_agent.status import StatusBook

pytestmark = pytest.mark.unit

OLD, NEW, GONE, ADDED = "old-pw-4f1c", "new-pw-9e2a", "gone-tok-77aa", "fresh-key-31bd"
SECRETS = (OLD, NEW, GONE, ADDED)

STACK = """\
services:
  web:
    image: swarmlet-hello:1
    environment: {DB_PASSWORD: new-pw-9e2a, API_KEY: fresh-key-31bd, MODE: prod}
"""


def _clean(text: str) -> None:
    for s in SECRETS:
        assert s not in text, f"secret {s!r} shown in: {text}"


def test_deploy_plan_shows_that_env_changed_never_the_value(parse):
    stack = parse(STACK)
    (new,) = stack.services
    old = dataclasses.replace(new, env={"DB_PASSWORD": OLD, "TOKEN": GONE, "MODE": "prod"})
    plan = plan_deploy({old.name: old}, stack, prune=False)
    text = render_plan(plan)
    _clean(text)
    assert "env.DB_PASSWORD: (changed)" in text
    assert "env.API_KEY: (added)" in text and "env.TOKEN: (removed)" in text
    assert "MODE" not in text   # unchanged: not listed at all
    view = plan_view(plan, text)
    _clean(json.dumps(view))
    change = next(c for c in view["update"][0]["changes"] if c["path"] == "env.DB_PASSWORD")
    assert change == {"path": "env.DB_PASSWORD", "old": "(hidden)", "new": "(hidden)", "secret": True}
    _clean(repr(diff_specs(old, new)))


def test_other_fields_still_show_old_and_new(parse):
    (new,) = parse(STACK).services
    old = dataclasses.replace(new, image="swarmlet-hello:0")
    assert "image: 'swarmlet-hello:0' -> 'swarmlet-hello:1'" in render_plan(
        plan_deploy({old.name: old}, parse(STACK), prune=False))


def test_specs_and_actions_print_without_their_env():
    spec = ServiceSpec("web", "img:1", env={"DB_PASSWORD": OLD})
    task = TaskSpec("web.1.abc", "web", 1, 1, "img:1", env={"DB_PASSWORD": NEW})
    for obj in (spec, task, rc.Create(task), rc.Start(task, "c0ffee")):
        _clean(repr(obj))
        _clean(str(obj))


def test_a_crashed_action_logs_no_env(caplog):
    class Broken:   # a bug inside the Docker shell: any exception but a DockerError
        async def ensure_image(self, image: str) -> None:
            raise RuntimeError("boom")

    async def go() -> None:
        ex = Executor(Broken(), StatusBook(), TaskLedger(), clock=lambda: 0.0, wake=lambda: None,
                      counters={"actions": 0, "restarts": 0}, stop_timeout=1, drain_delay=0)
        ex.launch(rc.Create(TaskSpec("web.1.abc", "web", 3, 1, "img:1",
                                     env={"DB_PASSWORD": NEW, "TOKEN": GONE})))
        await asyncio.gather(*ex.tasks())

    with caplog.at_level(logging.DEBUG, logger="swarmlet.agent"):
        asyncio.run(go())
    text = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert "Create of task web.1.abc (revision 3) crashed" in text, text
    _clean(text)
    for r in caplog.records:
        _clean(logging.Formatter().format(r))
