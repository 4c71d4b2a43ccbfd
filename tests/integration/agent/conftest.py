"""Fixtures for the agent's integration tests: real dockerd, real TLS, real agent.

- ``agent_image``: a tiny image built locally (``FROM scratch`` + busybox-static,
  ``busybox httpd`` on 8080 serving ``/`` and ``/health``); never pulled.
- ``pki``: a throwaway cluster CA with master, cli and agent certificates, and
  a foreign CA, written to files.
- ``make_agent``: starts an ``Agent`` in the test's own event loop (so its
  loop-lag probe watches the same loop) with a unique node name; at teardown
  it stops the agent and removes every container labelled with that name.
- ``api``: an mTLS client for an agent, with a chosen certificate.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import uuid
from pathlib import Path
from typing import Any, Dict, List

import aiohttp
import pytest

from swarmlet import pki
from swarmlet.shipped.models import Assignment, PortSpec, TaskSpec, to_wire
from swarmlet.shipped.tlsutil import client_context
from swarmlet_agent.config import AgentConfig
from swarmlet_agent.daemon import Agent

IMAGE = "swarmlet-agent-test:1"
_BUSYBOX = next((p for p in ("/bin/busybox", "/usr/bin/busybox") if os.path.exists(p)), None)
_DOCKERFILE = b"""FROM scratch
COPY rootfs/ /
ENV PATH=/bin
EXPOSE 8080
CMD ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]
"""


def _context() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
        add("Dockerfile", _DOCKERFILE)
        add("rootfs/bin/busybox", Path(_BUSYBOX).read_bytes(), 0o755)
        for app in ("sh", "httpd", "sleep", "echo", "cat", "wget", "true", "false", "kill"):
            info = tarfile.TarInfo(f"rootfs/bin/{app}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        add("rootfs/www/index.html", b"hello from the agent test image\n")
        add("rootfs/www/health", b"ok\n")
        add("rootfs/tmp/.keep", b"")
    return buf.getvalue()


@pytest.fixture(scope="session")
def agent_image(docker_client) -> str:
    if _BUSYBOX is None:
        pytest.fail("busybox-static is not installed (scripts/bootstrap.sh installs it: "
                    "apt-get install -y busybox-static)")   # a missing prerequisite fails
    ctx = _context()
    digest = hashlib.sha256(ctx).hexdigest()[:12]
    try:
        img = docker_client.images.get(IMAGE)
        if img.labels.get("io.swarmlet.test.hash") == digest:
            return IMAGE
    except Exception:  # docker.errors.ImageNotFound: build it
        pass
    docker_client.images.build(fileobj=io.BytesIO(ctx), custom_context=True, tag=IMAGE,
                               labels={"io.swarmlet.test.hash": digest}, rm=True, pull=False)
    return IMAGE


@pytest.fixture(scope="session")
def pki_files(tmp_path_factory) -> Dict[str, str]:
    d = tmp_path_factory.mktemp("pki")
    ca = pki.create_ca("test-cluster")
    other = pki.create_ca("other-cluster")
    out = {"ca": str(d / "ca.crt"), "ca_key": str(d / "ca.key")}
    (d / "ca.crt").write_bytes(ca.cert_pem)
    (d / "ca.key").write_bytes(ca.key_pem)
    for name, role, issuer in (("agent", "agent", ca), ("master", "master", ca), ("cli", "cli", ca),
                               ("peer", "agent", ca), ("foreign", "master", other)):
        kp = pki.issue(issuer, name if name != "agent" else "localhost", role,
                       sans=["127.0.0.1", "localhost"])
        (d / f"{name}.crt").write_bytes(kp.cert_pem)
        (d / f"{name}.key").write_bytes(kp.key_pem)
        out[name] = str(d / name)
    return out


def _cleanup(docker_client, node: str) -> None:
    for c in docker_client.containers.list(all=True, filters={"label": f"io.swarmlet.node={node}"}):
        try:
            c.remove(force=True)
        except Exception:  # already gone
            pass


@pytest.fixture
async def make_agent(tmp_path, pki_files, docker_client):
    started: List[Agent] = []
    nodes: List[str] = []

    async def make(name: str = "", state_dir: str = "", **over: Any) -> Agent:
        name = name or f"t-{uuid.uuid4().hex[:10]}"
        if name not in nodes:
            nodes.append(name)
        kw: Dict[str, Any] = dict(
            name=name, address="127.0.0.1", api_port=0, api_bind="127.0.0.1", gossip=False,
            ingress=False, discovery=False,  # in-process agents would fight over ports and VIPs
            state_dir=state_dir or str(tmp_path / name), cert=pki_files["agent"] + ".crt",
            key=pki_files["agent"] + ".key", ca=pki_files["ca"], stats_interval=1.0,
            resync_interval=5.0, stop_timeout=1, lag_probe_interval=0.02)
        kw.update(over)
        agent = Agent(AgentConfig(**kw))
        await agent.start()
        started.append(agent)
        return agent

    yield make
    for a in started:
        if not a._stopping.is_set() or a._api_runner is not None:
            try:
                await a.stop()
            except Exception:  # already stopped by the test
                pass
    for n in nodes:
        _cleanup(docker_client, n)
    shutil.rmtree(tmp_path, ignore_errors=True)


class Api:
    """An mTLS client for one agent."""

    def __init__(self, port: int, cert: str, ca: str) -> None:
        self.base = f"https://127.0.0.1:{port}"
        self.ssl = client_context(cert + ".crt", cert + ".key", ca)
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))

    async def request(self, method: str, path: str, **kw: Any):
        async with self.session.request(method, self.base + path, ssl=self.ssl, **kw) as r:
            ctype = r.headers.get("Content-Type", "")
            body = await (r.json() if "json" in ctype else r.text())
            return r.status, body

    async def close(self) -> None:
        await self.session.close()


@pytest.fixture
async def api_for(pki_files):
    clients: List[Api] = []

    def make(agent: Agent, who: str = "master") -> Api:
        c = Api(agent.api_port, pki_files[who], pki_files["ca"])
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.close()


def web_task(image: str, tid: str = "", service: str = "web", revision: int = 1, slot: int = 1,
             **kw: Any) -> TaskSpec:
    kw.setdefault("ports", (PortSpec(target=8080),))
    return TaskSpec(task_id=tid or f"{service}-{uuid.uuid4().hex[:8]}", service=service,
                    revision=revision, slot=slot, image=image, **kw)


def assignment(node: str, version: int, *tasks: TaskSpec) -> Dict[str, Any]:
    return to_wire(Assignment(node=node, version=version, tasks=tuple(tasks)))


async def wait_for(api: Api, pred, timeout: float = 15.0, what: str = "condition"):
    """Poll ``GET /v1/tasks`` until ``pred(tasks_by_id)`` holds; returns the tasks."""
    import asyncio
    import time
    deadline = time.monotonic() + timeout
    tasks: Dict[str, Any] = {}
    while time.monotonic() < deadline:
        status, body = await api.request("GET", "/v1/tasks")
        assert status == 200, body
        tasks = {t["task_id"]: t for t in body["tasks"]}
        if pred(tasks):
            return tasks
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; tasks: {tasks}")
