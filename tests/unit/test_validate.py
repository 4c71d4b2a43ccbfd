"""One validator: the stack loader, the CLI and the master judge a spec the same way."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings, strategies as st

from swarmlet.cli.services import build_spec
from swarmlet.master.scheduler import STRATEGIES
from swarmlet.shipped import validate
from swarmlet.shipped.exceptions import StackFileError, UsageError
from swarmlet.shipped.models import AutoscaleSpec, ServiceSpec
from swarmlet.stack import parse_stack

pytestmark = pytest.mark.unit


def _stack(name: str, extra: str = "") -> str:
    return f'services:\n  "{name}":\n    image: img:1\n{extra}'


def _loader_accepts(text: str) -> bool:
    try:
        parse_stack(text, name="s")
    except StackFileError:
        return False
    return True


def _cli_accepts(name: str, constraints=()) -> bool:
    try:
        build_spec(name, "img:1", 1, (), (), None, None, None, tuple(constraints), None, "spread",
                   "replicated", ())
    except UsageError:
        return False
    return True


def _master_accepts(spec: ServiceSpec) -> bool:
    try:
        validate.validate_spec(spec)
    except UsageError:
        return False
    return True


def test_a_service_named_Web_is_refused_everywhere():
    with pytest.raises(StackFileError, match=r"stack.yml:2:3: expected a service name of lower-case"):
        parse_stack(_stack("Web"), name="s")
    assert not _cli_accepts("Web")
    assert not _master_accepts(ServiceSpec("Web", "img:1"))
    assert _loader_accepts(_stack("web")) and _cli_accepts("web")
    assert _master_accepts(ServiceSpec("web", "img:1"))


@pytest.mark.parametrize("expr,ok", [
    ("node.labels.zone==a", True), ("node.hostname != node-3", True), ("node.name==n1", True),
    ("node.role==manager", True), ("node.platform.os==linux", False), ("zone=a", False),
])
def test_constraints_are_judged_by_one_grammar(expr, ok):
    text = _stack("web", f'    deploy:\n      placement:\n        constraints: ["{expr}"]\n')
    assert _loader_accepts(text) is ok
    assert _cli_accepts("web", [expr]) is ok
    assert _master_accepts(ServiceSpec("web", "img:1", constraints=(expr,))) is ok


def test_the_validators_placements_are_the_schedulers():
    assert tuple(validate.PLACEMENTS) == tuple(STRATEGIES)


def test_problems_name_every_field():
    spec = ServiceSpec("Bad Name", "", replicas=-1, mode="x", placement="y", max_per_node=0,
                       constraints=("nope",))
    fields = [p.field for p in validate.problems(spec)]
    assert fields == ["name", "image", "replicas", "mode", "placement", "max_per_node", "constraints"]
    assert validate.problems(dataclasses.replace(spec, name="ok", image="i", replicas=0, mode="global",
                                                 placement="binpack", max_per_node=1,
                                                 constraints=())) == []


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="abcXYZ019_.- ", min_size=1, max_size=70))
def test_loader_cli_and_master_agree_on_every_name(name):
    master = _master_accepts(ServiceSpec(name, "img:1"))
    assert _cli_accepts(name) is master
    assert _loader_accepts(_stack(name)) is master


def test_stack_fields_are_judged_too():
    import dataclasses
    ok = ServiceSpec("web", "img:1", endpoint_mode="dnsrr", preferences=("node.labels.zone",))
    assert validate.problems(ok) == []
    bad = dataclasses.replace(ok, endpoint_mode="rr", preferences=("zone",))
    assert [p.field for p in validate.problems(bad)] == ["endpoint_mode", "preferences"]


@pytest.mark.parametrize("auto,ok", [
    (dict(min=1, max=3, cpu=70), True),
    (dict(min=0, max=1, cpu=70), True),
    (dict(min=1, max=3, cpu=70, down_window=15), True),
    (dict(min=3, max=2, cpu=70), False),              # the CLI and stack files refuse it too
    (dict(min=0, max=0, cpu=70), False),
    (dict(min=1, max=2, cpu=0), False),
    (dict(min=1, max=2, cpu=float("nan")), False),
    (dict(min=1, max=2, cpu=70, down_window=0.5), False),
    (dict(min=1, max=2, cpu=70, down_window=7200), False),
])
def test_the_master_refuses_an_autoscale_the_cli_would(auto, ok):
    assert _master_accepts(ServiceSpec("web", "img:1", autoscale=AutoscaleSpec(**auto))) is ok
