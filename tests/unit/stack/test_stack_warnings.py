"""Keys swarmlet cannot use are warnings naming the key and its line; the rest still loads."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.unit


def test_unsupported_and_unknown_keys_are_named_with_their_line(parse):
    stack = parse("""\
version: "3.8"
networks:
  front: {}
services:
  web:
    image: a
    build: .
    depends_on: [db]
    imgae: typo
    x-custom: mine
    deploy:
      replicas: 2
      endpoint_mode: vip
      resources:
        limits: {pids: 10}
      placement:
        preferences: [{spread: node.labels.zone}]
      restart_policy: {window: 10s}
    healthcheck: {start_interval: 1s}
x-anchors: {a: 1}
""")
    got = [(w.location, w.key) for w in stack.warnings]
    # build, endpoint_mode and placement.preferences are honoured now: no warning.
    assert got == [("stack.yml:2:1", "networks"),
                   ("stack.yml:8:5", "depends_on"), ("stack.yml:9:5", "imgae"),
                   ("stack.yml:15:18", "pids"),
                   ("stack.yml:18:24", "window"),
                   ("stack.yml:19:19", "start_interval")]
    messages = {w.key: w.message for w in stack.warnings}
    assert messages["imgae"] == "unknown key 'imgae' (services.web.imgae) ignored; did you mean 'image'?"
    assert messages["depends_on"].startswith("unsupported key 'depends_on' (services.web.depends_on) ignored: ")
    assert str(stack.warnings[0]).startswith("stack.yml:2:1: unsupported key 'networks'")
    # What is supported still applies.
    web = stack.services[0]
    assert web.replicas == 2 and web.preferences == ("node.labels.zone",)
    assert stack.builds[web.name].context == "/srv/app"


def test_ignored_value_level_features_warn(parse):
    stack = parse("""\
services:
  w:
    image: a
    volumes:
      - /anon
      - type: tmpfs
        target: /tmp
      - ./c:/c:z
    ports:
      - {target: 80, published: 80, host_ip: 10.0.0.1}
    restart: always
    deploy:
      restart_policy: {condition: any}
""")
    locs = [w.location for w in stack.warnings]
    assert locs == ["stack.yml:5:9", "stack.yml:8:9", "stack.yml:10:46", "stack.yml:11:14"]
    tmp, bind = stack.services[0].volumes
    assert (tmp.kind, tmp.target, bind.target) == ("tmpfs", "/tmp", "/c")
    assert "restart ignored" in stack.warnings[-1].message


def test_unset_variables_warn_and_become_empty(parse):
    stack = parse("services:\n  w:\n    image: a\n    environment: {X: \"pre-${NOPE}-post\"}\n")
    assert stack.services[0].env == {"X": "pre--post"}
    (w,) = stack.warnings
    assert (w.location, w.message) == ("stack.yml:4:22", "variable NOPE is not set, using an empty string")


def test_clean_file_has_no_warnings(parse):
    assert parse("services:\n  w:\n    image: a\n    x-swarmlet: {max_per_node: 1}\n").warnings == ()


def test_a_warning_repeated_through_an_alias_is_given_once(parse):
    stack = parse("x-e: &e {A: $NOPE}\nservices:\n  a: {image: a, environment: *e}\n"
                  "  b: {image: b, environment: *e}\n")
    assert [(w.location, w.message) for w in stack.warnings] == [
        ("stack.yml:1:13", "variable NOPE is not set, using an empty string")]
