"""Garbage in, ``StackFileError`` out: the loader never raises anything else."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from swarmlet.shipped.exceptions import StackFileError
from swarmlet.stack import Stack

pytestmark = pytest.mark.unit

YAML_BITS = st.sampled_from([
    "services:", "  web:", "    image: a", "    image: swarmlet-hello:1", "    ports:", "      - 80:80",
    "      - {target: x}", "    deploy:", "      replicas: 3", "      replicas: -1", "  - ", ": ",
    "&a [*a]", "*a", "<<: *a", "x: &a {b: 1}", "volumes:", "  data:", "    volumes: [data:/d]",
    "{", "}", "[", "]", "'", '"', "\t", "${", "$X", "${X:?}", "!!int x", "!foo bar", "? complex",
    "---", "...", "# c", "    healthcheck: {test: [CMD]}", "    environment: [A=1, {B: 2}]",
    "    env_file: e.env", "    command: \"a 'b\"", "    x-swarmlet: {health: 1}", "\x00", "\ufeff",
])


def _settings():
    return settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(parse, text):
    try:
        result = parse(text, env={"X": "1"}, files={"/srv/app/e.env": "A=1\n$bad\n"})
    except StackFileError as exc:
        assert exc.location.startswith(("stack.yml", "e.env"))
        return
    assert isinstance(result, Stack)


@_settings()
@given(st.lists(YAML_BITS, max_size=14).map("\n".join))
def test_yaml_shaped_garbage(parse, text):
    check(parse, text)


@_settings()
@given(st.text(max_size=200))
def test_arbitrary_text(parse, text):
    check(parse, text)


@_settings()
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda kids: st.lists(kids, max_size=4)
                    | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=20))
def test_any_json_document_under_a_service(parse, doc):
    import json
    text = "services:\n  web:\n    image: a\n    deploy: " + json.dumps(doc) + "\n" \
           "  api: " + json.dumps(doc) + "\n"
    check(parse, text)


KEYS = st.sampled_from([
    "image", "ports", "volumes", "deploy", "healthcheck", "environment", "labels", "command",
    "x-swarmlet", "replicas", "resources", "limits", "test", "health", "lb", "autoscale", "restart",
    "env_file", "mode", "update_config", "placement", "constraints", "target", "published", "source",
    "type", "path", "port", "min", "max", "cpus", "memory", "interval", "external", "name"])
LEAVES = (st.none() | st.booleans() | st.integers(-5, 70000) | st.floats() | st.text(max_size=6)
          | st.sampled_from(["80:80", "a", "/x", "data:/d", "1s", "512M", "CMD", "${X}", "$", "x=y",
                             "node.labels.a==b", "", "e.env", "global", "/health"]))


@_settings()
@given(st.recursive(LEAVES, lambda kids: st.lists(kids, max_size=4)
                    | st.dictionaries(KEYS | st.text(max_size=4), kids, max_size=5), max_leaves=30))
def test_compose_shaped_documents(parse, doc):
    import json
    check(parse, "volumes: {data: }\nservices:\n  web: " + json.dumps(doc) + "\n")


def test_deep_nesting_is_an_error_not_a_crash(parse):
    with pytest.raises(StackFileError, match=r"^stack.yml:1:1: expected YAML nested at most"):
        parse("services: " + "[" * 5000)


def test_billion_laughs_is_bounded(parse):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    lines.append("services: {w: {image: a}}")
    with pytest.raises(StackFileError, match="expected at most 100000 values"):
        parse("\n".join(lines))
