"""Stack namespaces end to end in the pure parts: names, routes, aliases, CLI lookups, stack rm."""

from __future__ import annotations

import dataclasses

import pytest

from swarmlet.cli.names import pick
from swarmlet.cli.stack import normalized, stack_services
from swarmlet.shipped.discovery import aliases_for, hosts_for
from swarmlet.shipped.exceptions import UsageError
from swarmlet.master.state import Task, task_spec
from swarmlet.shipped.models import (ContainerConfig, Health, LogConfig, PortSpec, ServiceSpec, TaskState,
                             to_wire)
from swarmlet.shipped.routes import ReplicaView, build_routes
from swarmlet.stack import plan_deploy, render_plan
from swarmlet.stack.checks import log_driver_warnings

pytestmark = pytest.mark.unit

TWO = """\
services:
  web:
    image: swarmlet-hello:1
    ports: ["{port}:8080"]
  db:
    image: swarmlet-hello:1
    ports: ["8080"]
"""


@pytest.fixture
def stacks(parse):
    return parse(TWO.format(port=8081), name="shop"), parse(TWO.format(port=8082), name="blog")


def test_two_stacks_with_a_db_each_are_four_services(stacks):
    shop, blog = stacks
    current = {s.name: s for s in shop.services}
    plan = plan_deploy(current, blog, prune=True)
    assert [c.name for c in plan.create] == ["blog_db", "blog_web"]
    assert not plan.update and not plan.remove


def test_routes_carry_the_stack_and_short_name_and_agents_alias_them_per_stack(stacks):
    specs = [s for st in stacks for s in st.services] + [ServiceSpec("db", "redis", ports=(PortSpec(6379),))]
    vips = {"shop_db": "10.254.0.1", "blog_db": "10.254.0.2", "shop_web": "10.254.0.3",
            "blog_web": "10.254.0.4", "db": "10.254.0.5"}
    routes = build_routes(specs, [], {}, vips)
    by = {(r.service, r.target): r for r in routes}
    assert (by[("shop_db", 8080)].stack, by[("shop_db", 8080)].alias) == ("shop", "db")
    assert (by[("db", 6379)].stack, by[("db", 6379)].alias) == (None, None)
    assert hosts_for(routes)["db"] == "10.254.0.5"          # full names: from anywhere
    assert aliases_for(routes) == {"shop": {"db": "10.254.0.1", "web": "10.254.0.3"},
                                   "blog": {"db": "10.254.0.2", "web": "10.254.0.4"}}


def test_an_older_agent_reads_new_routes_and_tasks(stacks):
    """from_wire ignores fields it does not know, so an older agent decodes what a new master sends."""
    from swarmlet.shipped.models import Route, TaskSpec, from_wire
    spec = dataclasses.replace(stacks[0].service("web"),
                               container=ContainerConfig(user="1", logging=LogConfig("local")))
    task = task_spec(Task("t1", spec.name, 1, 1, node="n1"), spec)
    wire = to_wire(task)
    wire["a_field_from_the_future"] = {"x": 1}
    assert from_wire(TaskSpec, wire) == task
    old_route = {"service": "shop_db", "published": None, "target": 8080}
    assert from_wire(Route, old_route).alias is None


def test_task_labels_are_the_container_labels_plus_the_stack_not_deploy_labels(parse):
    spec = parse("services:\n  w:\n    image: a\n    labels: {c: 1}\n    deploy: {labels: {s: 2}}\n",
                 name="shop").services[0]
    t = task_spec(Task("t1", spec.name, 1, 1, node="n1"), spec)
    assert t.labels == {"c": "1", "io.swarmlet.stack": "shop", "io.swarmlet.stack.service": "w"}
    assert t.container.labels == {}        # one place for them: TaskSpec.labels


ROWS = [
    {"name": "shop_db", "spec": {"labels": {"io.swarmlet.stack": "shop", "io.swarmlet.stack.service": "db"}}},
    {"name": "blog_db", "spec": {"labels": {"io.swarmlet.stack": "blog", "io.swarmlet.stack.service": "db"}}},
    {"name": "shop_web", "spec": {"labels": {"io.swarmlet.stack": "shop", "io.swarmlet.stack.service": "web"}}},
    {"name": "cache", "spec": {"labels": {}}},
]


def test_cli_names_full_short_and_stack_slash_service():
    assert pick("shop_web", ROWS) == "shop_web"
    assert pick("web", ROWS) == "shop_web"            # only one stack has a web
    assert pick("blog/db", ROWS) == "blog_db"
    assert pick("cache", ROWS) == "cache"             # swarmlet run services: un-prefixed
    assert pick("nothing", ROWS) == "nothing"         # the master's 404 names it
    with pytest.raises(UsageError) as info:
        pick("db", ROWS)
    assert str(info.value) == "'db' is ambiguous: it is blog_db, shop_db; give the full name"
    # An exact full name always wins over a short one.
    assert pick("db", ROWS + [{"name": "db", "spec": {"labels": {}}}]) == "db"


def test_stack_rm_takes_only_that_stacks_services():
    assert stack_services(ROWS, "shop") == ["shop_db", "shop_web"]
    assert stack_services(ROWS, "blog") == ["blog_db"]
    assert stack_services(ROWS, "cache") == []


def test_prune_touches_only_its_own_stack(stacks):
    shop, blog = stacks
    current = {s.name: s for st in stacks for s in st.services}
    current["tool"] = ServiceSpec("tool", "i")
    smaller = dataclasses.replace(shop, services=(shop.service("web"),))
    plan = plan_deploy(current, smaller, prune=True)
    assert [c.name for c in plan.remove] == ["shop_db"]
    assert [c.name for c in plan.unchanged] == ["shop_web"]


def test_dry_run_with_no_master_says_so(stacks):
    plan = dataclasses.replace(plan_deploy({}, stacks[0]),
                               note="no master reachable (x): every service is shown as create")
    lines = render_plan(plan).splitlines()
    assert lines[:2] == ["Stack 'shop' from stack.yml",
                         "(no master reachable (x): every service is shown as create)"]
    assert sum(1 for ln in lines if "+ create" in ln) == 2


def test_a_logging_driver_a_node_lacks_is_a_warning_at_its_line(parse):
    stack = parse("services:\n  w:\n    image: a\n    logging:\n      driver: gelf\n")
    (w,) = [w for w in stack.warnings if "dual-logging" in w.message]   # said by the loader
    assert w.location == "stack.yml:5:15"
    got = log_driver_warnings(stack, {"n1": ["json-file", "local"], "n2": ["gelf", "json-file"],
                                      "n3": None})
    assert [str(x) for x in got] == [
        "stack.yml:5:15: logging driver 'gelf' cannot be honoured on n1 (its Docker lacks it): "
        "demo_w's replicas placed there will fail to start"]
    assert log_driver_warnings(stack, {"n2": ["gelf"]}) == []


def test_stack_config_document_is_the_normalized_stack(parse):
    stack = parse("services:\n  w:\n    image: a\n    user: '1'\n  x:\n    image: b\n    profiles: [p]\n")
    doc = normalized(stack)
    assert doc == {"name": "demo", "services": {"demo_w": {
        "image": "a", "labels": {"io.swarmlet.stack": "demo", "io.swarmlet.stack.service": "w"},
        "container": {"user": "1"}}}, "skipped": {"x": {"profiles": ["p"]}}}
    assert normalized(stack, full=True)["services"]["demo_w"]["replicas"] == 1


def test_routes_of_a_running_task_keep_backends(parse):
    spec = parse(TWO.format(port=8081), name="shop").service("db")
    r = ReplicaView("t1", spec.name, "n1", TaskState.RUNNING, Health.NONE, {"8080/tcp": 32768})
    (route,) = build_routes([spec], [r], {"n1": "10.0.0.1"}, {"shop_db": "10.254.0.9"})
    assert route.backends[0].port == 32768 and route.alias == "db" and route.vip == "10.254.0.9"
