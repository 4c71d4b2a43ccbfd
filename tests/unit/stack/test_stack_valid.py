"""Valid stack files become the ServiceSpecs they describe."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarmlet.shipped.models import (AutoscaleSpec, ContainerConfig, HealthCheck, LBOptions, PortSpec,
                             Resources, RestartPolicy, UpdateConfig, VolumeMount)
from swarmlet.stack import load_stack

pytestmark = pytest.mark.unit

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def test_minimal_service_takes_model_defaults(parse):
    stack = parse("services:\n  web:\n    image: swarmlet-hello:1\n")
    (web,) = stack.services
    assert web.name == "demo_web" and web.image == "swarmlet-hello:1"
    assert web.replicas == 1 and web.mode == "replicated"
    assert web.update == UpdateConfig()            # start-first, rollback
    assert web.health == HealthCheck()             # none
    assert web.labels == {"io.swarmlet.stack": "demo", "io.swarmlet.stack.service": "web"}
    assert web.container == ContainerConfig()
    assert stack.warnings == ()


def test_full_service(parse):
    stack = parse("""
services:
  api:
    image: registry.local:5000/team/api:2.1
    command: serve --port 8080 "two words"
    entrypoint: ["/bin/tini", "--"]
    environment:
      - MODE=prod
      - EMPTY=
      - FROM_HOST
    labels: [team=core, "tier=back"]
    ports:
      - "8080:80"
      - 9000
      - "127.0.0.1:8443:443/tcp"
      - target: 53
        published: 5353
        protocol: udp
        mode: host
    volumes:
      - data:/var/lib/api
      - ./conf:/etc/api:ro
      - type: bind
        source: /var/log
        target: /logs
        read_only: true
    healthcheck:
      test: ["CMD", "wget", "-q", "-O-", "http://localhost/health"]
      interval: 1m30s
      timeout: 500ms
      retries: 5
      start_period: 10s
    deploy:
      replicas: 4
      labels: {owner: me}
      resources:
        limits: {cpus: "0.5", memory: 512M}
        reservations: {cpus: 0.25, memory: 64m}
      placement:
        constraints: ["node.labels.zone==a", "node.hostname != node-3"]
        max_replicas_per_node: 2
      update_config: {parallelism: 2, delay: 10s, failure_action: pause, monitor: 1m,
                      max_failure_ratio: 0.2, order: stop-first}
      rollback_config: {parallelism: 0, failure_action: continue}
      restart_policy: {condition: on-failure, delay: 2s, max_attempts: 3}
volumes:
  data:
""", env={"FROM_HOST": "yes"})
    (api,) = stack.services
    assert api.image == "registry.local:5000/team/api:2.1"
    assert api.command == ("serve", "--port", "8080", "two words")
    assert api.entrypoint == ("/bin/tini", "--")
    assert api.env == {"MODE": "prod", "EMPTY": "", "FROM_HOST": "yes"}
    # Docker keeps them apart: `labels` on the containers, `deploy.labels` on the service.
    assert api.container.labels == {"team": "core", "tier": "back"}
    assert api.labels == {"owner": "me", "io.swarmlet.stack": "demo",
                          "io.swarmlet.stack.service": "api"}
    assert api.ports == (PortSpec(80, published=8080), PortSpec(9000), PortSpec(443, published=8443),
                         PortSpec(53, host_port=5353, protocol="udp"))
    assert api.volumes == (VolumeMount("demo_data", "/var/lib/api"),
                           VolumeMount("/srv/app/conf", "/etc/api", "bind", True),
                           VolumeMount("/var/log", "/logs", "bind", True))
    assert api.health == HealthCheck(kind="cmd", command=("wget", "-q", "-O-", "http://localhost/health"),
                                     interval=90.0, timeout=0.5, retries=5, start_period=10.0)
    assert api.replicas == 4
    assert api.limits == Resources(cpus=0.5, memory=512 * 1024 ** 2)
    assert api.reservations == Resources(cpus=0.25, memory=64 * 1024 ** 2)
    assert api.constraints == ("node.labels.zone==a", "node.hostname != node-3")
    assert api.max_per_node == 2
    assert api.update == UpdateConfig(2, 10.0, "pause", 60.0, 0.2, "stop-first")
    assert api.rollback == UpdateConfig(parallelism=0, failure_action="continue")
    assert api.restart == RestartPolicy("on-failure", 3, 2.0)
    # The host IP cannot be honoured by the load balancer: said, not hidden.
    assert [w.location for w in stack.warnings] == ["stack.yml:15:9"]
    assert "127.0.0.1" in stack.warnings[0].message


def test_environment_map_with_numbers_booleans_and_pass_through(parse):
    stack = parse("""
services:
  web:
    image: a
    environment: {N: 3, F: 1.5, B: true, S: yes, FROM_HOST: null, MISSING: }
""", env={"FROM_HOST": "h"})
    # YAML 1.2 as in Compose: `yes` is the text "yes", not True.
    assert stack.services[0].env == {"N": "3", "F": "1.5", "B": "true", "S": "yes", "FROM_HOST": "h"}


DOCKER = dict(interval=30.0, timeout=30.0, retries=3, start_period=0.0)   # Docker's defaults


@pytest.mark.parametrize("test, expected", [
    ('"wget -q localhost"', HealthCheck(kind="cmd", command=("/bin/sh", "-c", "wget -q localhost"),
                                        **DOCKER)),
    ('["CMD-SHELL", "exit 0"]', HealthCheck(kind="cmd", command=("/bin/sh", "-c", "exit 0"), **DOCKER)),
    ('["NONE"]', HealthCheck(kind="none", **DOCKER)),
])
def test_healthcheck_test_forms(parse, test, expected):
    stack = parse(f"services:\n  w:\n    image: a\n    healthcheck:\n      test: {test}\n")
    assert stack.services[0].health == expected


def test_healthcheck_disable(parse):
    stack = parse("services:\n  w:\n    image: a\n    healthcheck: {test: [CMD, x], disable: true}\n")
    assert stack.services[0].health.kind == "none"


def test_x_swarmlet_extras(parse):
    stack = parse("""
services:
  web:
    image: a
    ports: ["8080:8080"]
    healthcheck: {interval: 3s, retries: 4}
    x-swarmlet:
      health: {path: /up, port: 9000}
      lb: {algorithm: least_conn, sticky: true, connect_timeout: 2s, timeout: 1m}
      autoscale: {min: 2, max: 6, cpu: 75, down_window: 2m}
      max_per_node: 1
""")
    web = stack.services[0]
    assert web.health == HealthCheck(kind="http", path="/up", port=9000, interval=3.0, retries=4)
    assert web.lb == LBOptions("least_conn", True, 2.0, 60.0)
    assert web.autoscale == AutoscaleSpec(2, 6, 75.0, down_window=120.0)
    assert web.max_per_node == 1


def test_ports_ranges_and_sexagesimal_trap(parse):
    # `80:80` unquoted is the number 4880 in YAML 1.1; Compose (YAML 1.2) reads a port mapping.
    stack = parse("services:\n  w:\n    image: a\n    ports: [80:80, \"9000-9001:8000-8001\"]\n")
    assert stack.services[0].ports == (PortSpec(80, 80), PortSpec(8000, 9000), PortSpec(8001, 9001))


def test_global_mode_and_restart_shorthand(parse):
    stack = parse("services:\n  w:\n    image: a\n    restart: on-failure:4\n    deploy: {mode: global}\n")
    w = stack.services[0]
    assert w.mode == "global" and w.restart == RestartPolicy("on-failure", 4)


def test_named_volumes_namespaced_unless_named_or_external(parse):
    stack = parse("""
services:
  w:
    image: a
    volumes: ["plain:/a", "named:/b", "ext:/c"]
volumes:
  plain:
  named: {name: shared-data}
  ext: {external: true}
""")
    assert [v.source for v in stack.services[0].volumes] == ["demo_plain", "shared-data", "ext"]
    assert stack.volumes["ext"].external and not stack.volumes["plain"].external


def test_merge_keys_and_anchors(parse):
    stack = parse("""
x-base: &base
  image: base:1
  environment: {A: "1"}
services:
  one:
    <<: *base
  two:
    <<: *base
    image: other:2
""")
    one, two = stack.services
    assert (one.image, one.env, two.image, two.env) == ("base:1", {"A": "1"}, "other:2", {"A": "1"})


def test_interpolation_types_like_compose(parse):
    stack = parse("services:\n  w:\n    image: app:${TAG:-latest}\n    deploy:\n"
                  "      replicas: ${N}\n    x-swarmlet: {lb: {sticky: \"${STICKY}\"}}\n",
                  env={"N": "5", "STICKY": "true"})
    w = stack.services[0]
    assert (w.image, w.replicas, w.lb.sticky) == ("app:latest", 5, True)


def test_env_files_relative_to_the_stack_file_and_overridden_by_environment(parse):
    files = {"/srv/app/common.env": "# shared\nexport A=1\nB='lit $X'\nC=\"x\\ty\" # c\nD=${A}2\nHOST_ONLY\n",
             "/srv/app/conf/more.env": "A=override\n"}
    stack = parse("""
services:
  w:
    image: a
    env_file: [common.env, {path: conf/more.env}, {path: absent.env, required: false}]
    environment: {B: from-environment}
""", env={"HOST_ONLY": "h"}, files=files)
    assert stack.services[0].env == {"A": "override", "B": "from-environment", "C": "x\ty",
                                     "D": "12", "HOST_ONLY": "h"}


def test_stack_name_from_folder_or_name_key():
    from swarmlet.stack import parse_stack
    assert parse_stack("services: {w: {image: a}}", "deploy/My App/stack.yml").name == "myapp"
    assert parse_stack("name: shop\nservices: {w: {image: a}}", "x/stack.yml").name == "shop"
    assert parse_stack("services: {w: {image: a}}", "x/stack.yml", name="Other").name == "other"


def test_examples_load_cleanly():
    hello = load_stack(str(EXAMPLES / "hello" / "stack.yml"), {})
    (web,) = hello.services
    assert (web.image, web.replicas, web.health.kind, web.health.path) == \
        ("swarmlet-hello:1", 3, "http", "/health")
    assert web.ports == (PortSpec(8080, published=8080),)
    assert hello.warnings == ()
    multi = load_stack(str(EXAMPLES / "multi" / "stack.yml"), {})
    names = {s.name: s for s in multi.services}
    assert set(names) == {"multi_web", "multi_store"}
    assert names["multi_store"].volumes == (VolumeMount("multi_store-data", "/data"),)
    assert all(s.image.startswith("swarmlet-hello:") for s in multi.services)
    assert multi.warnings == ()
