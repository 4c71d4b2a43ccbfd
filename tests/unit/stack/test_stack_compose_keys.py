"""The Compose keys issue 16 adds: honoured as `docker stack deploy` (or Compose) honours them."""

from __future__ import annotations

import pytest

from swarmlet.shipped.exceptions import StackFileError
from swarmlet.shipped.models import ContainerConfig, HealthCheck, LogConfig, PortSpec, Resources, Ulimit, VolumeMount

pytestmark = pytest.mark.unit


def one(stack):
    (spec,) = stack.services
    return spec


def error_lines(parse, text, **kw):
    with pytest.raises(StackFileError) as info:
        parse(text, **kw)
    return str(info.value).splitlines()


# --- names ---------------------------------------------------------------------------

def test_services_are_named_stack_underscore_service_with_their_short_name_as_a_label(parse):
    spec = one(parse("services:\n  db:\n    image: redis:7\n", name="shop"))
    assert spec.name == "shop_db"
    assert spec.labels == {"io.swarmlet.stack": "shop", "io.swarmlet.stack.service": "db"}


def test_a_full_name_longer_than_a_dns_label_is_refused_at_the_service(parse):
    long = "s" * 60
    assert error_lines(parse, f"services:\n  {long}:\n    image: a\n", name="shop") == [
        f"stack.yml:2:3: expected a service name that fits 63 characters with its stack prefix, "
        f"but 'shop_{long}' is 65"]


def test_stack_service_lookup_takes_both_names(parse):
    stack = parse("services:\n  db:\n    image: a\n", name="shop")
    assert stack.service("db") is stack.service("shop_db")


# --- every error at once ------------------------------------------------------------

def test_every_error_of_a_file_is_reported_at_once_in_file_order(parse):
    text = """\
services:
  web:
    image: a
    ports: ["80:80", "99999:1"]
    deploy:
      replicas: many
      update_config: {order: sideways}
    user: [1]
  db:
    command: x
  api:
    image: b
    healthcheck: {interval: soon}
    sysctls: ["bad"]
"""
    assert error_lines(parse, text) == [
        "stack.yml:4:22: expected port numbers from 1 to 65535 (ranges low-high) for services.web.ports[1], got '99999:1'",
        "stack.yml:6:17: expected an integer >= 0 for services.web.deploy.replicas, got 'many'",
        "stack.yml:7:30: expected one of start-first, stop-first for services.web.deploy.update_config.order, got 'sideways'",
        "stack.yml:8:11: expected a user like \"1000\", \"1000:1000\" or \"app\" for services.web.user, got a list",
        "stack.yml:10:5: expected an 'image' or a 'build' section for service 'db'",
        "stack.yml:13:29: expected a duration like \"10s\", \"1m30s\" or \"500ms\" for services.api.healthcheck.interval, got 'soon'",
        "stack.yml:14:15: expected a sysctl like \"net.core.somaxconn=1024\" for services.api.sysctls[0], got 'bad'",
    ]


def test_the_cli_prints_each_problem_on_its_own_error_line(tmp_path):
    from click.testing import CliRunner

    from swarmlet.cli.main import cli
    f = tmp_path / "stack.yml"
    f.write_text("services:\n  a:\n    image: 5\n  b:\n    image: x\n    scale: -2\n")
    result = CliRunner().invoke(cli, ["stack", "config", "-f", str(f)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines == [
        f"error: {f}:3:12: expected an image like \"swarmlet-hello:1\" for services.a.image, got 5",
        f"error: {f}:6:12: expected an integer >= 0 for services.b.scale, got -2"]
    assert "Traceback" not in result.output


def test_a_single_error_reads_as_before(parse):
    assert error_lines(parse, "services:\n  web:\n    image: a\n    deploy: {replicas: -1}\n") == [
        "stack.yml:4:24: expected an integer >= 0 for services.web.deploy.replicas, got -1"]


# --- the refusals fixed ----------------------------------------------------------------

def test_tcp_and_udp_on_the_same_port_number_are_two_ports(parse):
    stack = parse('services:\n  dns:\n    image: a\n    ports: ["5000:5000", "5000:5000/udp", '
                  '{target: 53, published: 53, protocol: udp, mode: host}, '
                  '{target: 53, published: 53, mode: host}]\n')
    spec = one(stack)
    assert spec.ports == (PortSpec(5000, 5000), PortSpec(5000, 5000, protocol="udp"),
                          PortSpec(53, host_port=53, protocol="udp"), PortSpec(53, host_port=53))
    # A UDP port cannot go through the (TCP) load balancer: said where it is written.
    assert [str(w) for w in stack.warnings] == [
        "stack.yml:4:26: UDP port 5000 is not load-balanced (the load balancer serves TCP); "
        "use mode: host to bind it on each node"]
    # The same number and protocol twice is still an error.
    assert error_lines(parse, 'services:\n  a:\n    image: a\n    ports: ["53:53/udp", "53:54/udp"]\n') == [
        "stack.yml:4:26: expected a published port not used twice (port 53/udp) for services.a.ports[1], got '53:54/udp'"]


def test_legacy_external_name_is_accepted_with_a_deprecation_warning(parse):
    stack = parse("services:\n  w:\n    image: a\n    volumes: [data:/d]\n"
                  "volumes:\n  data:\n    external: {name: shared-data}\n")
    assert one(stack).volumes == (VolumeMount("shared-data", "/d"),)
    assert stack.volumes["data"].external
    (w,) = stack.warnings
    assert w.location == "stack.yml:7:15" and "deprecated" in w.message
    assert error_lines(parse, "services:\n  w:\n    image: a\nvolumes:\n  data:\n"
                              "    name: other\n    external: {name: shared}\n") == [
        "stack.yml:6:11: expected the same name as external.name ('shared'), or only one of them "
        "for volumes.data.name, got 'other'"]


def test_tilde_in_a_bind_mount_is_the_clients_home(parse):
    spec = one(parse('services:\n  w:\n    image: a\n    volumes: ["~/data:/data", "~:/home/me:ro"]\n',
                     env={"HOME": "/home/alice"}))
    assert spec.volumes == (VolumeMount("/home/alice/data", "/data", "bind"),
                            VolumeMount("/home/alice", "/home/me", "bind", True))
    assert error_lines(parse, 'services:\n  w:\n    image: a\n    volumes: ["~bob/x:/x"]\n',
                       env={"HOME": "/home/alice"}) == [
        "stack.yml:4:15: expected an absolute, ./relative or ~/ host path (~user is not expanded) "
        "for services.w.volumes[0], got '~bob/x:/x'"]


def test_label_file_is_read_into_container_labels(parse):
    stack = parse("services:\n  w:\n    image: a\n    label_file: [./l1, {path: ./l2, required: false}]\n"
                  "    labels: {b: own}\n",
                  files={"/srv/app/l1": "a=1\nb=from-file\n"})
    spec = one(stack)
    assert spec.container.labels == {"a": "1", "b": "own"}
    assert "io.swarmlet.stack" in spec.labels and "a" not in spec.labels
    assert stack.warnings == ()


# --- health-check defaults -----------------------------------------------------------------

def test_file_health_checks_take_dockers_defaults(parse):
    spec = one(parse("services:\n  w:\n    image: a\n    healthcheck: {test: [CMD, ok], retries: 5}\n"))
    assert spec.health == HealthCheck(kind="cmd", command=("ok",), interval=30.0, timeout=30.0,
                                      retries=5, start_period=0.0)


def test_swarmlets_own_http_checks_keep_the_fast_defaults(parse):
    fast = one(parse("services:\n  w:\n    image: a\n    ports: ['80']\n    x-swarmlet: {health: /up}\n"))
    assert fast.health == HealthCheck(kind="http", path="/up")        # 2 s, 1 s, 3 retries
    assert (fast.health.interval, fast.health.timeout) == (2.0, 1.0)
    # Timings written in healthcheck: still apply to the HTTP check; the rest stays fast.
    tuned = one(parse("services:\n  w:\n    image: a\n    ports: ['80']\n"
                      "    healthcheck: {timeout: 5s}\n    x-swarmlet: {health: /up}\n"))
    assert (tuned.health.interval, tuned.health.timeout) == (2.0, 5.0)


# --- profiles, scale, mem_limit, cpus ---------------------------------------------------------

PROFILES = """\
services:
  vote:
    image: a
  seed:
    image: a
    profiles: [seed]
  debug:
    image: a
    profiles: [debug, dev]
"""


def test_a_service_with_profiles_is_skipped_unless_one_is_active(parse):
    stack = parse(PROFILES)
    assert [s.name for s in stack.services] == ["demo_vote"]
    assert stack.skipped == (("seed", ("seed",)), ("debug", ("debug", "dev")))
    from swarmlet.stack import plan_deploy, render_plan
    text = render_plan(plan_deploy({}, stack))
    assert "  . skip       seed (profile seed not active; --profile seed deploys it)" in text


def test_profiles_come_from_the_flag_or_compose_profiles(parse):
    from swarmlet.stack import parse_stack
    names = lambda st: [s.name for s in st.services]  # noqa: E731
    assert names(parse_stack(PROFILES, "stack.yml", {}, name="demo", profiles=["dev"])) == \
        ["demo_vote", "demo_debug"]
    assert names(parse(PROFILES, env={"COMPOSE_PROFILES": "seed, debug"})) == \
        ["demo_vote", "demo_seed", "demo_debug"]
    assert len(parse_stack(PROFILES, "stack.yml", {}, name="demo", profiles=["*"]).services) == 3


def test_a_skipped_service_is_still_checked(parse):
    assert error_lines(parse, "services:\n  a:\n    image: a\n  b:\n    image: 5\n    profiles: [x]\n") == [
        "stack.yml:5:12: expected an image like \"swarmlet-hello:1\" for services.b.image, got 5"]


def test_scale_mem_limit_and_cpus_as_compose_defines_them(parse):
    spec = one(parse("services:\n  w:\n    image: a\n    scale: 3\n    mem_limit: 256m\n"
                     "    cpus: 0.5\n    mem_reservation: 64m\n"))
    assert spec.replicas == 3
    assert spec.limits == Resources(cpus=0.5, memory=256 << 20)
    assert spec.reservations == Resources(memory=64 << 20)
    # With deploy: the same value twice is fine, the rest merges; a different one is an error.
    merged = one(parse("services:\n  w:\n    image: a\n    scale: 2\n    mem_limit: 1g\n"
                       "    deploy: {replicas: 2, resources: {limits: {cpus: '2'}}}\n"))
    assert merged.replicas == 2 and merged.limits == Resources(cpus=2.0, memory=1 << 30)
    assert error_lines(parse, "services:\n  w:\n    image: a\n    scale: 2\n    cpus: 1\n"
                              "    deploy: {replicas: 3, resources: {limits: {cpus: '2'}}}\n") == [
        "stack.yml:4:12: expected the same value as deploy.replicas (3), or only one of them "
        "for services.w.scale, got 2"]


# --- the container keys ------------------------------------------------------------------------

def test_container_keys_are_honoured(parse):
    stack = parse("""\
services:
  w:
    image: a
    user: 1000:1000
    working_dir: /app
    hostname: "{{.Service.Name}}-{{.Task.Slot}}"
    cap_add: [NET_ADMIN, sys_time]
    cap_drop: [ALL]
    sysctls: {net.core.somaxconn: 1024}
    ulimits: {nofile: {soft: 1024, hard: 2048}, nproc: 512}
    extra_hosts: ["db.local:10.0.0.9", "ext=192.0.2.1", "v6:[::1]"]
    dns: 9.9.9.9
    dns_search: [example.org]
    dns_opt: ["ndots:2"]
    stop_grace_period: 1m30s
    stop_signal: SIGQUIT
    init: true
    read_only: true
    tty: true
    stdin_open: true
    logging: {driver: local, options: {max-size: 10m, max-file: 3}}
    labels: {c: d}
    deploy: {labels: {s: t}}
""")
    spec = one(stack)
    assert spec.container == ContainerConfig(
        labels={"c": "d"}, user="1000:1000", working_dir="/app",
        hostname="{{.Service.Name}}-{{.Task.Slot}}", cap_add=("NET_ADMIN", "SYS_TIME"),
        cap_drop=("ALL",), sysctls={"net.core.somaxconn": "1024"},
        ulimits=(Ulimit("nofile", 1024, 2048), Ulimit("nproc", 512, 512)),
        extra_hosts=("db.local:10.0.0.9", "ext:192.0.2.1", "v6:::1"), dns=("9.9.9.9",),
        dns_search=("example.org",), dns_options=("ndots:2",), stop_grace_period=90.0,
        stop_signal="SIGQUIT", init=True, read_only=True, tty=True, stdin_open=True,
        logging=LogConfig("local", {"max-size": "10m", "max-file": "3"}))
    assert spec.labels["s"] == "t" and "c" not in spec.labels
    assert stack.warnings == ()
    assert stack.marks["services.w.logging.driver"] == "stack.yml:21:23"


@pytest.mark.parametrize("line, message", [
    ("working_dir: app", "expected an absolute path in the container for services.w.working_dir, got 'app'"),
    ("cap_add: [net admin]", "expected a capability like \"NET_ADMIN\" or \"ALL\" for services.w.cap_add[0], got 'net admin'"),
    ("ulimits: {nofile: {soft: 10}}", "expected a ulimit with 'soft' and 'hard' for services.w.ulimits.nofile, got a mapping"),
    ("ulimits: {nofile: {soft: 10, hard: 5}}", "expected a soft limit at most the hard one (5) for services.w.ulimits.nofile.soft, got 10"),
    ("extra_hosts: [nohost]", "expected a host entry like \"somehost:162.242.195.82\" or \"somehost=162.242.195.82\" for services.w.extra_hosts[0], got 'nohost'"),
    ("dns: [dns.google]", "expected a DNS server IP address like 8.8.8.8 for services.w.dns[0], got 'dns.google'"),
    ("stop_grace_period: soon", "expected a duration like \"10s\", \"1m30s\" or \"500ms\" for services.w.stop_grace_period, got 'soon'"),
    ("init: maybe", "expected true or false for services.w.init, got 'maybe'"),
    ("logging: {driver: 'a b'}", "expected a logging driver like json-file, local or syslog for services.w.logging.driver, got 'a b'"),
])
def test_bad_container_values_are_errors(parse, line, message):
    (got,) = error_lines(parse, f"services:\n  w:\n    image: a\n    {line}\n")
    assert got.split(": ", 1)[1] == message


def test_tmpfs_mounts_short_and_long(parse):
    spec = one(parse("services:\n  w:\n    image: a\n    tmpfs: [/run, '/tmp:size=64m,mode=1777']\n"
                     "    volumes:\n      - {type: tmpfs, target: /cache, tmpfs: {size: 1g, mode: 1770}}\n"))
    assert spec.volumes == (
        VolumeMount("", "/cache", "tmpfs", size=1 << 30, mode=0o1770),
        VolumeMount("", "/run", "tmpfs"),
        VolumeMount("", "/tmp", "tmpfs", size=64 << 20, mode=0o1777))


def test_expose_declares_ports_reached_by_name(parse):
    spec = one(parse('services:\n  db:\n    image: a\n    expose: ["5432", 6379, "9000-9001/udp"]\n'
                     '    ports: ["6379"]\n'))
    assert spec.ports == (PortSpec(6379), PortSpec(5432), PortSpec(9000, protocol="udp"),
                          PortSpec(9001, protocol="udp"))


def test_placement_preferences_and_endpoint_mode(parse):
    stack = parse("services:\n  w:\n    image: a\n    deploy:\n      endpoint_mode: dnsrr\n"
                  "      placement: {preferences: [{spread: node.labels.zone}, {spread: node.labels.rack}]}\n")
    spec = one(stack)
    assert spec.preferences == ("node.labels.zone", "node.labels.rack")
    assert spec.endpoint_mode == "dnsrr"
    (w,) = stack.warnings
    assert w.location == "stack.yml:5:22" and w.message.startswith("endpoint_mode dnsrr is served as vip")
    assert error_lines(parse, "services:\n  w:\n    image: a\n    ports: ['80:80']\n"
                              "    deploy: {endpoint_mode: dnsrr}\n") == [
        "stack.yml:4:12: expected no ports published in ingress mode with endpoint_mode dnsrr "
        "(Docker refuses them too; use mode: host) for services.w.ports, got a list"]


def test_build_section_gives_a_placeholder_image_and_a_build(parse):
    stack = parse("services:\n  api:\n    build:\n      context: ./api\n      dockerfile: Dockerfile.prod\n"
                  "      args: [VERSION=2, FROM_ENV]\n      target: run\n  web:\n    build: .\n"
                  "    image: myorg/web:1\n", env={"FROM_ENV": "x"})
    api, web = stack.services
    assert api.image == "demo_api:build" and web.image == "demo_web:build"
    b = stack.builds["demo_api"]
    assert (b.context, b.dockerfile, b.args, b.target) == ("/srv/app/api", "Dockerfile.prod",
                                                           {"VERSION": "2", "FROM_ENV": "x"}, "run")
    assert b.location == "stack.yml:3:5" and b.repository == "demo_api"
    assert stack.builds["demo_web"].also_tag == "myorg/web:1"
    assert error_lines(parse, "services:\n  a:\n    build: https://github.com/x/y.git\n") == [
        "stack.yml:3:12: expected a local build context folder (remote contexts are not built by "
        "swarmlet) for services.a.build, got 'https://github.com/x/y.git'"]


def test_node_role_constraints_are_read_and_manager_is_said_to_match_nothing(parse):
    """Swarm stacks pin to managers; every swarmlet node is a worker (the master runs no replicas)."""
    from swarmlet.master.scheduler import Request, schedule
    from swarmlet.shipped.models import NodeInfo
    stack = parse("services:\n  w:\n    image: a\n    deploy:\n      placement:\n"
                  "        constraints: [node.role == manager]\n  x:\n    image: a\n    deploy:\n"
                  "      placement: {constraints: [node.role == worker]}\n")
    w, x = stack.services
    assert w.constraints == ("node.role == manager",)
    (warn,) = stack.warnings
    assert warn.location == "stack.yml:6:23" and "matches no node" in warn.message
    nodes = [NodeInfo("n1", "10.0.0.1", mem_total=1 << 30), NodeInfo("n2", "10.0.0.2", mem_total=1 << 30)]
    plan = schedule(nodes, [Request("w.1", w, 1), Request("x.1", x, 1)])
    assert plan.unplaced == {"w.1": "2 nodes fail constraint node.role == manager"}
    assert plan.placements["x.1"] in ("n1", "n2")
