"""Fixtures shared by every tier.

- ``docker_client``: the real local dockerd. When ``SWARMLET_REQUIRE_DOCKER=1``
  (always in CI) a missing engine fails the test instead of skipping it.
- ``swarmlet_home``: a private ``$SWARMLET_HOME`` for one test.
- ``lab``: a 3-node lab shared by the e2e session, named ``swt-<pid>`` so the
  test runner can clean up leftovers of an interrupted run.
- ``cli``: runs the real ``swarmlet`` CLI in a subprocess, as a user would.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support import CLI, ssh  # noqa: E402


def _require_docker() -> bool:
    return os.environ.get("SWARMLET_REQUIRE_DOCKER") == "1"


@pytest.fixture(autouse=True, scope="module")
def _harness_heap_frozen(request):
    """Before each integration, e2e and chaos module: the session's garbage collected, then
    what is left frozen out of later collections (``gc.freeze``).

    Agents, load balancers and masters run in this process beside everything the earlier
    tiers left behind, and their loop-lag bounds (100 ms) assert that none of *their* code
    blocks the loop. A full collection walks the whole process's heap, pytest's included:
    after the unit tier it took 174 ms during an agent test (measured with ``gc.callbacks``),
    and failed the bound at 163 ms in CI. Frozen, the earlier tiers' objects are no longer
    walked; what the code under test allocates still is, so its own collections still count."""
    if {"integration", "e2e", "chaos"} & set(Path(str(request.node.path)).parts):
        gc.collect()
        gc.freeze()
    yield


@pytest.fixture(scope="session")
def docker_client():
    import docker
    import docker.errors

    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except docker.errors.DockerException as exc:
        msg = f"no Docker engine reachable: {exc}"
        if _require_docker():
            pytest.fail(msg)
        pytest.skip(msg)
    return client


@pytest.fixture
def swarmlet_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "swarmlet-home"
    monkeypatch.setenv("SWARMLET_HOME", str(home))
    return home


@pytest.fixture
def cli(swarmlet_home) -> CLI:
    return CLI(dict(os.environ))


@pytest.fixture(scope="session")
def lab_env(tmp_path_factory, docker_client) -> Dict[str, str]:
    """Environment of the shared e2e lab: its own home and lab name."""
    env = dict(os.environ)
    env["SWARMLET_HOME"] = str(tmp_path_factory.mktemp("lab-home"))
    env["SWARMLET_LAB"] = f"swt-{os.getpid()}"
    return env


@pytest.fixture(scope="session")
def lab(lab_env) -> List[dict]:
    """A shared 3-node lab for e2e tests; removed at the end of the session."""
    cli = CLI(lab_env)
    cli("lab", "up", "--nodes", "3", check=True, timeout=600)
    nodes = cli.json("lab", "ls")
    yield nodes
    cli("lab", "down", timeout=300)


@pytest.fixture
async def aiohttp_server_factory():
    """Start real aiohttp servers on 127.0.0.1 with a given handler; returns their URL."""
    from aiohttp import web

    runners = []

    async def _start(handler) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/"

    yield _start
    for r in runners:
        await r.cleanup()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_pair() -> int:
    """A free port P with P + 1 free too (the master's API and its dashboard)."""
    import socket

    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", p + 1))
                return p
            except OSError:
                continue
    raise RuntimeError("no free port pair")


class Cluster:
    """A lab joined into a real cluster: the master runs on this host."""

    def __init__(self, cli: CLI, nodes: List[dict], subnet: str) -> None:
        self.cli = cli
        self.nodes = nodes
        self.subnet = subnet

    def node(self, name: str) -> dict:
        return next(n for n in self.nodes if n["name"] == name)


@pytest.fixture(scope="session")
def cluster(lab, lab_env, docker_client) -> Cluster:
    """The shared e2e lab, initialised and joined, with the demo images loaded."""
    cli = CLI(lab_env)
    cli("init", "--name", "e2e", "--master-port", str(free_port()), check=True, timeout=120)
    cli("join", "-i", lab[0]["key"], "--accept-new-host-key", *[n["ssh"] for n in lab],
        check=True, timeout=600)
    for tag in ("1", "2", "broken"):
        cli("lab", "load", f"swarmlet-hello:{tag}", check=True, timeout=300)
    net = docker_client.networks.get(lab_env["SWARMLET_LAB"])
    subnet = net.attrs["IPAM"]["Config"][0]["Subnet"]
    yield Cluster(cli, lab, subnet)
    cli("master", "stop", timeout=60)
