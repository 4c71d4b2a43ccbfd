"""Published ports across services: the one check the master, ``deploy`` and stacks share."""

from __future__ import annotations

import pytest

from swarmlet.shipped.exceptions import APIError, StackFileError
from swarmlet.shipped.models import PortSpec, ServiceSpec
from swarmlet.shipped.validate import check_ports, port_clashes, problems
from swarmlet.stack import parse_stack, plan_deploy
from swarmlet.stack.locate import port_location

pytestmark = pytest.mark.unit


def svc(name: str, *ports: PortSpec) -> ServiceSpec:
    return ServiceSpec(name, "img:1", ports=ports)


HELLO = svc("hello", PortSpec(8080, published=18080))


def test_a_published_port_of_another_service_is_refused_in_one_line():
    (c,) = port_clashes([svc("other", PortSpec(8080, published=18080))], {"hello": HELLO})
    assert (c.service, c.index, c.holder) == ("other", 0, "hello")
    assert c.message == "port 18080/tcp is published by service 'hello'"
    with pytest.raises(APIError, match=r"^port 18080/tcp is published by service 'hello'$") as e:
        check_ports([svc("other", PortSpec(8080, published=18080))], {"hello": HELLO})
    assert e.value.status == 409


def test_tcp_and_udp_on_the_same_number_are_two_ports():
    assert port_clashes([svc("dns", PortSpec(53, published=18080, protocol="udp"))], {"hello": HELLO}) == []
    (c,) = port_clashes([svc("dns", PortSpec(53, published=18053, protocol="udp"))],
                        {"d2": svc("d2", PortSpec(53, published=18053, protocol="udp"))})
    assert c.message == "port 18053/udp is published by service 'd2'"


def test_a_service_may_keep_its_own_port_and_a_removed_one_frees_it():
    assert port_clashes([svc("hello", PortSpec(9090, published=18080))], {"hello": HELLO}) == []
    assert port_clashes([svc("other", PortSpec(8080, published=18080))], {"hello": HELLO},
                        removing=["hello"]) == []
    # a stack that moves the port from one of its services to another in one write
    moved = [svc("hello", PortSpec(8080, published=18081)), svc("other", PortSpec(8080, published=18080))]
    assert port_clashes(moved, {"hello": HELLO}) == []


def test_two_services_written_together_clash_with_each_other():
    (c,) = port_clashes([svc("a", PortSpec(80, published=18000)), svc("b", PortSpec(80, published=18000))], {})
    assert (c.service, c.holder) == ("b", "a")


def test_a_clash_stored_before_the_check_existed_does_not_block_scaling():
    old = {"hello": HELLO, "other": svc("other", PortSpec(8080, published=18080))}
    scaled = ServiceSpec("other", "img:1", replicas=5, ports=(PortSpec(8080, published=18080),))
    assert port_clashes([scaled], old) == []


def test_host_mode_ports_clash_only_with_published_ones():
    host = svc("h", PortSpec(80, host_port=18080))
    (c,) = port_clashes([host], {"hello": HELLO})
    assert c.message == "port 18080/tcp is published by service 'hello'"
    (c,) = port_clashes([svc("other", PortSpec(8080, published=18080))], {"h": host})
    assert "bound on its nodes by service 'h' (host mode)" in c.message
    # two host-mode services share a number: the scheduler keeps them on different nodes
    assert port_clashes([svc("h2", PortSpec(81, host_port=18080))], {"h": host}) == []


def test_one_spec_publishing_a_port_twice_is_a_problem():
    twice = svc("x", PortSpec(80, published=18000), PortSpec(81, published=18000))
    assert [str(p) for p in problems(twice)] == [
        "ports: expected each published port once, got 18000/tcp twice"]
    assert problems(svc("x", PortSpec(80, published=18000), PortSpec(80, published=18000, protocol="udp"))) == []


STACK = """\
services:
  web:
    image: img:1
    ports:
      - "8000-8001:80-81"
      - target: 90
        published: 18080
"""


def test_the_clash_is_located_at_its_ports_entry():
    stack = parse_stack(STACK, "stack.yml", name="s")
    plan = plan_deploy({"hello": HELLO}, stack, prune=False)
    (c,) = port_clashes([ch.new for ch in plan.create], {"hello": HELLO})
    assert c.index == 2
    assert port_location(STACK, "stack.yml", {}, c.service, c.index) == "stack.yml:6:9"
    assert port_location(STACK, "stack.yml", {}, "web", 1) == "stack.yml:5:9"
    assert port_location(STACK, "stack.yml", {}, "nope", 0) == "stack.yml"
    assert port_location("services: [", "stack.yml", {}, "web", 0) == "stack.yml"
