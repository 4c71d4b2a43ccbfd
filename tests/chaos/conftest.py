"""Fixtures of the chaos tier: its own 3-node lab and cluster, the hello service.

The lab is named ``swt-chaos-<pid>`` (``scripts/test.sh`` removes ``swt-*``
leftovers of an interrupted run) with its own ``$SWARMLET_HOME``. It is
package-scoped, so it is torn down as soon as this tier is done instead of
living on beside the e2e lab until the end of the whole session.

The scenarios share the cluster and run in file order; each one starts from
and returns to the resting state (3 healthy replicas, one per node).

    python3 -m pytest tests/chaos -s          # the tier alone, figures printed
    SWARMLET_CHAOS_MASTER_DOWN=120 python3 -m pytest tests/chaos -k master_down

Figures: the terminal summary table and ``artifacts/chaos-report.json`` (one
row per scenario per run, appended).
"""

from __future__ import annotations

import os
from typing import Dict

import pytest

from tests.chaos import support
from tests.conftest import Cluster, free_port
from tests.support import CLI

HELLO_STACK = support.REPO / "examples" / "hello" / "stack.yml"


@pytest.fixture(scope="package")
def chaos_env(tmp_path_factory, docker_client) -> Dict[str, str]:
    env = dict(os.environ)
    env["SWARMLET_HOME"] = str(tmp_path_factory.mktemp("chaos-home"))
    env["SWARMLET_LAB"] = f"swt-chaos-{os.getpid()}"
    return env


@pytest.fixture(scope="package")
def chaos_lab(chaos_env):
    cli = CLI(chaos_env)
    try:
        cli("lab", "up", "--nodes", "3", check=True, timeout=600)
        yield cli.json("lab", "ls")
    finally:
        cli("master", "stop", timeout=60)
        cli("lab", "down", timeout=300)


class ChaosCluster(Cluster):
    """The e2e ``Cluster`` plus what the scenarios observe it through."""

    def __init__(self, cli: CLI, nodes, subnet: str, *, port: int, master: support.Master,
                 docker, network: str) -> None:
        super().__init__(cli, nodes, subnet)
        self.port = port            # the hello service's published port
        self.master = master        # the master's API (mutual TLS)
        self.docker = docker        # this host's dockerd (lab node containers)
        self.network = network      # the lab's Docker network


@pytest.fixture(scope="package")
def chaos(chaos_lab, chaos_env, docker_client) -> ChaosCluster:
    """The chaos lab joined into a cluster, with hello (3 replicas, /health) deployed."""
    cli = CLI(chaos_env)
    cli("init", "--name", "chaos", "--master-port", str(free_port()), check=True, timeout=120)
    cli("join", "-i", chaos_lab[0]["key"], "--accept-new-host-key", *[n["ssh"] for n in chaos_lab],
        check=True, timeout=600)
    for tag in ("1", "2"):
        cli("lab", "load", f"swarmlet-hello:{tag}", check=True, timeout=300)
    net = docker_client.networks.get(chaos_env["SWARMLET_LAB"])
    subnet = net.attrs["IPAM"]["Config"][0]["Subnet"]
    port = free_port()
    cli.env["HELLO_PORT"] = str(port)
    cli("deploy", "-f", str(HELLO_STACK), check=True, timeout=300)
    c = ChaosCluster(cli, chaos_lab, subnet, port=port,
                     master=support.Master(chaos_env["SWARMLET_HOME"]), docker=docker_client,
                     network=chaos_env["SWARMLET_LAB"])
    support.steady(docker_client, chaos_lab, c.master, timeout=180)
    return c


def pytest_terminal_summary(terminalreporter) -> None:
    if support.RUN_ROWS:
        terminalreporter.write_sep("=", "chaos report (also in artifacts/chaos-report.json)")
        terminalreporter.write_line(support.table(support.RUN_ROWS))
