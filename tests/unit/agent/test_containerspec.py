"""The pure TaskSpec -> container mapping (agent/containerspec.py)."""

from __future__ import annotations

import dataclasses

import docker
import pytest

from swarmlet.shipped.models import (ContainerConfig, HealthCheck, LogConfig, PortSpec, Resources, TaskSpec,
                             Ulimit, VolumeMount)
from swarmlet_agent import containerspec as cs
from swarmlet_agent import reconcile as rc

pytestmark = pytest.mark.unit

T = TaskSpec(task_id="t1", service="web", revision=3, slot=2, image="img:1", env={"A": "1",
             "SWARMLET_NODE": "spoof"}, labels={"x": "y", rc.NODE: "spoof"})


def test_labels_and_env_cannot_be_spoofed_by_the_spec():
    spec = cs.build("n1", T)
    labels = spec.create["labels"]
    assert labels[rc.NODE] == "n1" and labels["x"] == "y"
    assert labels[rc.TASK] == "t1" and labels[rc.REVISION] == "3" and labels[rc.SLOT] == "2"
    assert rc.is_ours(labels, "n1")
    assert spec.create["environment"] == {"A": "1", "SWARMLET_NODE": "n1", "SWARMLET_SERVICE": "web",
                                          "SWARMLET_TASK": "t1"}


def test_container_name_is_deterministic_and_valid():
    n = cs.container_name("n 1", T)
    assert n == cs.build("n 1", T).name and " " not in n
    assert cs.container_name("n1", T) != cs.container_name("n1", TaskSpec(
        task_id="t2", service="web", revision=3, slot=2, image="img:1"))


def test_cmd_health_becomes_docker_healthcheck():
    t = TaskSpec(task_id="t", service="s", revision=1, slot=1, image="i",
                 health=HealthCheck(kind="cmd", command=("true",), interval=2.0, retries=2))
    hc = cs.build("n", t).create["healthcheck"]
    assert hc["test"] == ["CMD", "true"] and hc["interval"] == 2_000_000_000 and hc["retries"] == 2
    assert cs.build("n", T).create["healthcheck"] is None
    http = TaskSpec(task_id="t", service="s", revision=1, slot=1, image="i",
                    health=HealthCheck(kind="http", path="/health"))
    assert cs.healthcheck(http) is None     # the agent probes http itself


def test_minimal_task_has_no_optional_keys():
    spec = cs.build("n1", T)
    assert spec.host == {"port_bindings": None, "mounts": None, "restart_policy": {"Name": "no"},
                         "extra_hosts": None}
    assert "command" not in spec.create and "entrypoint" not in spec.create
    assert spec.create["image"] == "img:1" and spec.create["ports"] is None


def test_full_task_maps_every_field():
    t = TaskSpec(task_id="t", service="s", revision=1, slot=1, image="i", command=("run", "-x"),
                 entrypoint=("/bin/sh", "-c"),
                 ports=(PortSpec(8080), PortSpec(53, host_port=5353, protocol="udp")),
                 volumes=(VolumeMount("data", "/data"), VolumeMount("/etc/x", "/x", "bind", True),
                          VolumeMount("", "/tmp", "tmpfs", size=64 << 20, mode=0o1777),
                          VolumeMount("", "/run", "tmpfs")),
                 limits=Resources(cpus=0.5, memory=64 << 20))
    spec = cs.build("n", t, {"db": "10.99.0.2"})
    assert spec.create["command"] == ["run", "-x"] and spec.create["entrypoint"] == ["/bin/sh", "-c"]
    assert spec.create["ports"] == [(8080, "tcp"), (53, "udp")]
    assert spec.host["port_bindings"] == {"8080/tcp": None, "53/udp": 5353}
    assert spec.host["mounts"] == [
        {"Target": "/data", "Source": "data", "Type": "volume", "ReadOnly": False},
        {"Target": "/x", "Source": "/etc/x", "Type": "bind", "ReadOnly": True},
        {"Target": "/tmp", "Type": "tmpfs", "ReadOnly": False,
         "TmpfsOptions": {"SizeBytes": 64 << 20, "Mode": 0o1777}},
        {"Target": "/run", "Type": "tmpfs", "ReadOnly": False}]
    assert spec.host["nano_cpus"] == 500_000_000 and spec.host["mem_limit"] == 64 << 20
    assert spec.host["extra_hosts"] == ["db:10.99.0.2"]


def test_the_sdk_accepts_what_build_makes():
    """The docker SDK builds a host config from it without talking to any engine."""
    t = TaskSpec(task_id="t", service="s", revision=1, slot=1, image="i",
                 ports=(PortSpec(8080),), volumes=(VolumeMount("data", "/data"),),
                 limits=Resources(cpus=1.0, memory=1 << 30))
    spec = cs.build("n", t, {"db": "10.99.0.2"})
    api = docker.APIClient(base_url="unix:///nonexistent.sock", version="1.41")
    hc = api.create_host_config(**spec.host)
    assert hc["Mounts"][0]["Source"] == "data" and hc["NanoCpus"] == 1_000_000_000
    assert hc["RestartPolicy"] == {"Name": "no"} and hc["ExtraHosts"] == ["db:10.99.0.2"]
    assert hc["PortBindings"]["8080/tcp"][0]["HostPort"] == ""


FULL = ContainerConfig(
    user="1000:1000", working_dir="/app", hostname="{{.Service.Name}}-{{.Task.Slot}}.{{.Node.Hostname}}",
    cap_add=("NET_ADMIN",), cap_drop=("ALL",), sysctls={"net.core.somaxconn": "1024"},
    ulimits=(Ulimit("nofile", 1024, 2048),), extra_hosts=("db:10.0.0.9", "ext:192.0.2.1"),
    dns=("9.9.9.9",), dns_search=("example.org",), dns_options=("ndots:2",),
    stop_grace_period=1.5, stop_signal="SIGQUIT", init=True, read_only=True, tty=True,
    stdin_open=True, logging=LogConfig("local", {"max-size": "10m"}))


def test_container_config_reaches_docker_as_given():
    t = TaskSpec(task_id="t9", service="shop_web", revision=1, slot=3, image="i", container=FULL)
    spec = cs.build("node-2", t)
    c = spec.create
    assert (c["user"], c["working_dir"], c["hostname"]) == ("1000:1000", "/app", "shop_web-3.node-2")
    assert (c["stop_signal"], c["stop_timeout"], c["tty"], c["stdin_open"]) == ("SIGQUIT", 2, True, True)
    h = spec.host
    assert (h["cap_add"], h["cap_drop"], h["sysctls"]) == (["NET_ADMIN"], ["ALL"],
                                                           {"net.core.somaxconn": "1024"})
    assert h["ulimits"] == [{"name": "nofile", "soft": 1024, "hard": 2048}]
    assert (h["dns"], h["dns_search"], h["dns_opt"]) == (["9.9.9.9"], ["example.org"], ["ndots:2"])
    assert (h["init"], h["read_only"]) == (True, True)
    assert h["log_config"] == {"type": "local", "config": {"max-size": "10m"}}
    # The SDK turns it into the Engine API's HostConfig without complaint.
    api = docker.APIClient(base_url="unix:///nonexistent.sock", version="1.41")
    hc = api.create_host_config(**h)
    assert hc["Ulimits"] == [{"Name": "nofile", "Soft": 1024, "Hard": 2048}]
    assert hc["LogConfig"] == {"Type": "local", "Config": {"max-size": "10m"}}
    assert hc["CapAdd"] == ["NET_ADMIN"] and hc["ReadonlyRootfs"] is True and hc["Init"] is True


def test_stack_members_get_their_stack_short_names_first():
    """Inside stack shop, `db` is shop_db; the same short name in stack blog is blog_db."""
    names = {"shop_db": "10.254.0.1", "blog_db": "10.254.0.2", "db": "10.254.0.3"}
    aliases = {"shop": {"db": "10.254.0.1"}, "blog": {"db": "10.254.0.2"}}
    shop = TaskSpec(task_id="a", service="shop_web", revision=1, slot=1, image="i",
                    labels={"io.swarmlet.stack": "shop"})
    blog = dataclasses.replace(shop, service="blog_web", labels={"io.swarmlet.stack": "blog"})
    adhoc = dataclasses.replace(shop, service="tool", labels={})
    assert cs.build("n", shop, names, aliases).host["extra_hosts"] == [
        "db:10.254.0.1", "blog_db:10.254.0.2", "shop_db:10.254.0.1"]
    assert cs.build("n", blog, names, aliases).host["extra_hosts"][0] == "db:10.254.0.2"
    # Outside any stack only full names resolve, so `db` is the un-prefixed `swarmlet run db`.
    assert cs.build("n", adhoc, names, aliases).host["extra_hosts"] == [
        "blog_db:10.254.0.2", "db:10.254.0.3", "shop_db:10.254.0.1"]
    # The spec's own extra_hosts win over both.
    own = dataclasses.replace(shop, container=ContainerConfig(extra_hosts=("db:192.0.2.7",)))
    assert cs.build("n", own, names, aliases).host["extra_hosts"][0] == "db:192.0.2.7"
    assert "db:10.254.0.1" not in cs.build("n", own, names, aliases).host["extra_hosts"]
