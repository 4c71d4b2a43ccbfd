"""The agent applies a stack's container keys on the real dockerd (issue 16).

One task with every ``ContainerConfig`` field, tmpfs mounts and the stack's
short-name aliases; the container Docker made is inspected field by field,
and its stop_grace_period is what ``remove`` waits.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from swarmlet.shipped.models import (Assignment, ContainerConfig, LogConfig, Route, TaskState, Ulimit,
                             VolumeMount, to_wire)
from tests.integration.agent.conftest import wait_for, web_task

pytestmark = pytest.mark.integration


async def test_container_config_is_applied_by_docker(make_agent, api_for, agent_image, docker_client):
    agent = await make_agent()
    api = api_for(agent)
    node = agent.config.name
    cfg = ContainerConfig(
        user="0:0", working_dir="/www", hostname="{{.Service.Name}}-{{.Task.Slot}}",
        cap_add=("NET_ADMIN",), cap_drop=("MKNOD",), sysctls={"net.ipv4.ip_local_port_range": "20000 30000"},
        ulimits=(Ulimit("nofile", 512, 1024),), extra_hosts=("ext.local:192.0.2.1",),
        dns=("192.0.2.53",), dns_search=("example.org",), dns_options=("ndots:2",),
        stop_grace_period=3.0, stop_signal="SIGUSR1", init=True, read_only=True,
        logging=LogConfig("local", {"max-size": "1m"}))
    t = web_task(agent_image, service="shop_web", container=cfg, labels={"io.swarmlet.stack": "shop",
                                                                          "team": "core"},
                 volumes=(VolumeMount("", "/tmp", "tmpfs", size=8 << 20, mode=0o1777),),
                 command=("sh", "-c", "trap '' USR1; while true; do sleep 1; done"))
    # The routing table as a master sends it: shop_db (short name db in stack shop), and a
    # `swarmlet run db` outside any stack.
    routes = (Route("shop_db", None, 5432, vip="10.254.0.7", stack="shop", alias="db"),
              Route("db", None, 6379, vip="10.254.0.9"))
    wire = to_wire(Assignment(node=node, version=1, tasks=(t,), routes=routes))
    await api.request("PUT", "/v1/assignment", json=wire)
    row = (await wait_for(api, lambda ts: ts.get(t.task_id, {}).get("state") == int(TaskState.RUNNING),
                          what="running task"))[t.task_id]
    info = docker_client.api.inspect_container(row["container_id"])
    c, h = info["Config"], info["HostConfig"]
    assert (c["User"], c["WorkingDir"], c["Hostname"]) == ("0:0", "/www", "shop_web-1")
    assert (c["StopSignal"], c["StopTimeout"]) == ("SIGUSR1", 3)
    assert c["Labels"]["team"] == "core" and c["Labels"]["io.swarmlet.stack"] == "shop"
    assert h["CapAdd"] == ["NET_ADMIN"] and h["CapDrop"] == ["MKNOD"]
    assert h["Sysctls"] == {"net.ipv4.ip_local_port_range": "20000 30000"}
    assert h["Ulimits"] == [{"Name": "nofile", "Soft": 512, "Hard": 1024}]
    assert (h["Dns"], h["DnsSearch"], h["DnsOptions"]) == (["192.0.2.53"], ["example.org"], ["ndots:2"])
    assert h["Init"] is True and h["ReadonlyRootfs"] is True
    assert h["LogConfig"] == {"Type": "local", "Config": {"max-size": "1m"}}
    # The file's own entry first, then the stack's short name, then the full names.
    assert h["ExtraHosts"] == ["ext.local:192.0.2.1", "db:10.254.0.7", "shop_db:10.254.0.7"]
    assert agent.runtime.extra_hosts["db"] == "10.254.0.9"   # what a container outside the stack gets
    (m,) = [m for m in h["Mounts"] if m["Type"] == "tmpfs"]
    assert m["Target"] == "/tmp" and m["TmpfsOptions"] == {"SizeBytes": 8 << 20, "Mode": 0o1777}
    # Inside the container: the read-only root refuses a write, the tmpfs takes it.
    ex = docker_client.api.exec_create(row["container_id"], ["sh", "-c", "echo x > /www/f; echo $?; "
                                       "echo y > /tmp/f && cat /tmp/f; cat /etc/hosts"])
    out = docker_client.api.exec_start(ex).decode()
    assert out.splitlines()[0] != "0" and "y" in out.splitlines()
    assert "10.254.0.7\tdb" in out
    # A removal waits the container's own grace period: it ignores SIGUSR1 and dies at SIGKILL.
    started = time.monotonic()
    await agent.runtime.remove(row["container_id"], timeout=30)
    took = time.monotonic() - started
    assert 2.5 < took < 15, took
    await agent.stop()
    await asyncio.sleep(0)
