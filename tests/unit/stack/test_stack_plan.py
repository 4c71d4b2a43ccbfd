"""Dry-run plans: what a deploy would create, update (field by field) and remove."""

from __future__ import annotations

import dataclasses

import pytest

from swarmlet.shipped.models import PortSpec, ServiceSpec, UpdateConfig
from swarmlet.stack import diff_specs, plan_deploy, render_plan
from swarmlet.stack.plan import ABSENT, FieldChange

pytestmark = pytest.mark.unit

STACK = """\
services:
  web:
    image: swarmlet-hello:2
    ports: ["8080:8080"]
    environment: {GREETING: hi}
    deploy: {replicas: 3}
    x-swarmlet: {health: /health}
  worker:
    image: swarmlet-hello:1
    deploy: {replicas: 4}
  db:
    image: swarmlet-hello:1
"""


@pytest.fixture(scope="module")
def stack(parse):
    return parse(STACK)


def owned(spec: ServiceSpec, stack: str = "demo", **changes) -> ServiceSpec:
    return dataclasses.replace(spec, labels={**spec.labels, "io.swarmlet.stack": stack}, **changes)


def test_everything_new_is_created(stack):
    plan = plan_deploy({}, stack, prune=False)
    assert [c.name for c in plan.create] == ["demo_db", "demo_web", "demo_worker"]
    assert plan.create[1].new == stack.service("web")
    assert not plan.update and not plan.remove and plan.has_changes


def test_the_same_specs_are_unchanged(stack):
    current = {s.name: s for s in stack.services}
    plan = plan_deploy(current, stack, prune=True)
    assert [c.name for c in plan.unchanged] == ["demo_db", "demo_web", "demo_worker"]
    assert not plan.has_changes and "Nothing to do." in render_plan(plan)


def test_updates_list_each_changed_field(stack):
    web = stack.service("web")
    old_web = dataclasses.replace(web, image="swarmlet-hello:1", env={"GREETING": "hello", "OLD": "x"},
                                  ports=(PortSpec(8080, published=9090),))
    old_worker = dataclasses.replace(stack.service("worker"), replicas=2,
                                     update=UpdateConfig(order="stop-first"))
    plan = plan_deploy({"demo_web": old_web, "demo_worker": old_worker,
                        "demo_db": stack.service("db")}, stack)
    web_change, worker_change = plan.update
    assert web_change.changes == (
        FieldChange("image", "swarmlet-hello:1", "swarmlet-hello:2"),
        FieldChange("env.GREETING", "hello", "hi"),
        FieldChange("env.OLD", "x", ABSENT),
        FieldChange("ports[0].published", 9090, 8080),
    )
    assert web_change.rollout
    assert worker_change.changes == (FieldChange("replicas", 2, 4),
                                     FieldChange("update.order", "stop-first", "start-first"))
    assert not worker_change.rollout       # rescale and new settings, no new containers
    assert [c.name for c in plan.unchanged] == ["demo_db"]


def test_prune_removes_only_this_stacks_services(stack):
    base = ServiceSpec(name="x", image="i")
    current = {
        "old": owned(dataclasses.replace(base, name="old")),                 # this stack, dropped
        "theirs": owned(dataclasses.replace(base, name="theirs"), "other"),  # another stack
        "adhoc": dataclasses.replace(base, name="adhoc"),                    # `swarmlet run`
    }
    kept = plan_deploy(current, stack, prune=False)
    assert [c.name for c in kept.kept] == ["old"] and not kept.remove
    pruned = plan_deploy(current, stack, prune=True)
    assert [c.name for c in pruned.remove] == ["old"] and not pruned.kept
    assert pruned.remove[0].old == current["old"]


def test_taking_over_a_service_from_elsewhere_warns(stack):
    adhoc = dataclasses.replace(stack.service("db"), labels={})
    plan = plan_deploy({"demo_db": adhoc}, stack)
    assert plan.update[0].changes == (
        FieldChange("labels.io.swarmlet.stack", ABSENT, "demo"),
        FieldChange("labels.io.swarmlet.stack.service", ABSENT, "db"))
    assert [str(w) for w in plan.warnings] == [
        "stack.yml:11:3: service 'demo_db' belongs to no stack (made by swarmlet run); "
        "this deploy takes it into stack 'demo'"]


def test_a_second_stack_with_the_same_service_names_touches_nothing_of_the_first(parse, stack):
    first = {s.name: s for s in stack.services}
    other = parse(STACK.replace('"8080:8080"', '"8081:8080"'), name="other")
    plan = plan_deploy(first, other, prune=True)
    assert [c.name for c in plan.create] == ["other_db", "other_web", "other_worker"]
    assert not plan.update and not plan.remove and not plan.kept and not plan.warnings


def test_legacy_services_keep_their_short_names(stack):
    """Services deployed before namespaces (named 'web', labelled with the stack) update in place."""
    legacy = {short: dataclasses.replace(stack.service(short), name=short,
                                         labels={"io.swarmlet.stack": "demo"})
              for short in ("web", "db")}
    legacy["web"] = dataclasses.replace(legacy["web"], image="swarmlet-hello:1")
    plan = plan_deploy(legacy, stack, prune=True)
    assert [c.name for c in plan.create] == ["demo_worker"]
    assert [c.name for c in plan.update] == ["db", "web"]
    assert not plan.remove and not plan.kept
    assert plan.update[1].new.name == "web" and plan.update[1].new.image == "swarmlet-hello:2"
    notes = [str(w) for w in plan.warnings]
    assert notes == [
        "stack.yml:2:3: service 'web' was deployed before stacks were namespaced and keeps its "
        "name (not demo_web); `swarmlet stack rm demo` and a new deploy rename it",
        "stack.yml:11:3: service 'db' was deployed before stacks were namespaced and keeps its "
        "name (not demo_db); `swarmlet stack rm demo` and a new deploy rename it"]
    # Once updated (now with the short-name label), the next deploy still finds them.
    after = {c.new.name: c.new for c in plan.update + plan.create}
    again = plan_deploy(after, stack, prune=True)
    assert not again.has_changes and [c.name for c in again.unchanged] == ["db", "demo_worker", "web"]


def test_a_run_service_named_like_a_short_name_is_not_legacy(stack):
    adhoc = ServiceSpec(name="db", image="redis:7")     # `swarmlet run db`: no stack label
    plan = plan_deploy({"db": adhoc}, stack, prune=True)
    assert "demo_db" in [c.name for c in plan.create] and not plan.remove


def test_stack_warnings_are_part_of_the_plan(parse):
    stack = parse("services:\n  w:\n    image: a\n    container_name: x\n")
    plan = plan_deploy({}, stack)
    assert [w.key for w in plan.warnings] == ["container_name"]
    assert "stack.yml:4:5: unsupported key 'container_name'" in render_plan(plan)


def test_diff_of_equal_specs_is_empty(stack):
    for spec in stack.services:
        assert diff_specs(spec, dataclasses.replace(spec)) == ()


def test_rendered_plan(stack):
    web = stack.service("web")
    current = {
        "demo_web": dataclasses.replace(web, image="swarmlet-hello:1",
                                        limits=dataclasses.replace(web.limits, memory=256 * 2 ** 20)),
        "demo_db": stack.service("db"),
        "demo_gone": owned(ServiceSpec(name="demo_gone", image="i")),
    }
    text = render_plan(plan_deploy(current, stack, prune=True))
    assert text == """\
Stack 'demo' from stack.yml

  + create     demo_worker: swarmlet-hello:1; 4 replicas
  ~ update     demo_web (rolling update)
      image: 'swarmlet-hello:1' -> 'swarmlet-hello:2'
      limits.memory: 256MiB -> None
  - remove     demo_gone
  = unchanged  demo_db

Plan: 1 to create, 1 to update, 1 to remove, 1 unchanged."""
