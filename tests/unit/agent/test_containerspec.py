"""The pure TaskSpec -> container mapping (agent/containerspec.py)."""

from __future__ import annotations

import docker
import pytest

from swarmlet.shipped.models import HealthCheck, PortSpec, Resources, TaskSpec, VolumeMount
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
                          VolumeMount("t", "/tmp", "tmpfs")),
                 limits=Resources(cpus=0.5, memory=64 << 20))
    spec = cs.build("n", t, {"db": "10.99.0.2"})
    assert spec.create["command"] == ["run", "-x"] and spec.create["entrypoint"] == ["/bin/sh", "-c"]
    assert spec.create["ports"] == [(8080, "tcp"), (53, "udp")]
    assert spec.host["port_bindings"] == {"8080/tcp": None, "53/udp": 5353}
    assert spec.host["mounts"] == [
        {"Target": "/data", "Source": "data", "Type": "volume", "ReadOnly": False},
        {"Target": "/x", "Source": "/etc/x", "Type": "bind", "ReadOnly": True}]
    assert spec.host["nano_cpus"] == 500_000_000 and spec.host["mem_limit"] == 64 << 20
    assert spec.host["extra_hosts"] == {"db": "10.99.0.2"}


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
