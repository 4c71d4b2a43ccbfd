"""The lab: bare servers with their own sshd, dockerd and python3 (no pip),
reachable from each other, idempotent `up`, `load`, and a `down` that leaves
nothing behind."""

from __future__ import annotations

import os

import pytest

from tests.support import CLI, ssh

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def own_lab(tmp_path_factory, docker_client):
    env = dict(os.environ)
    env["SWARMLET_HOME"] = str(tmp_path_factory.mktemp("lab-test-home"))
    env["SWARMLET_LAB"] = f"swt-labtest-{os.getpid()}"
    cli = CLI(env)
    cli("lab", "up", "--nodes", "3", check=True, timeout=600)
    yield cli, env["SWARMLET_LAB"]
    cli("lab", "down", timeout=300)


def _lab_objects(docker_client, name):
    flt = {"label": f"io.swarmlet.lab={name}"}
    return (docker_client.containers.list(all=True, filters=flt),
            docker_client.networks.list(filters=flt),
            docker_client.volumes.list(filters=flt))


def test_nodes_are_bare_servers_reachable_over_ssh(own_lab):
    cli, _ = own_lab
    nodes = cli.json("lab", "ls")
    assert len(nodes) == 3
    for node in nodes:
        assert {"name", "address", "ssh", "key"} <= set(node)
        assert node["ssh"] == f"root@{node['address']}"
        assert os.stat(node["key"]).st_mode & 0o077 == 0
        info = ssh(node, "docker info --format '{{.ServerVersion}}'")
        assert info.returncode == 0 and info.stdout.strip(), info.stderr
        assert ssh(node, "python3 -c 'import sys; print(sys.version_info >= (3, 9))'").stdout.strip() == "True"
        pip = ssh(node, "python3 -m pip --version")
        assert pip.returncode != 0 and "No module named pip" in pip.stderr
        assert ssh(node, "command -v swarmlet").returncode != 0
        assert ssh(node, "ps -p 1 -o comm=").stdout.strip() == "systemd"
        others = [n["address"] for n in nodes if n is not node]
        for addr in others:
            assert ssh(node, f"ping -c1 -W2 {addr}").returncode == 0, f"{node['name']} cannot reach {addr}"


def test_every_node_has_its_own_host_key(own_lab):
    cli, _ = own_lab
    keys = {ssh(n, "cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[1] for n in cli.json("lab", "ls")}
    assert len(keys) == 3


def test_up_is_idempotent(own_lab, docker_client):
    cli, name = own_lab
    before = sorted(c.id for c in _lab_objects(docker_client, name)[0])
    cli("lab", "up", "--nodes", "3", check=True)
    after = sorted(c.id for c in _lab_objects(docker_client, name)[0])
    assert before == after


def test_a_restarted_node_keeps_its_address(own_lab):
    """As a server does. Docker gives a restarting container the next free address of its
    network otherwise, and with node 1 stopped a restarted node 2 took node 1's: its etcd
    could not bind its own peer URL (CI of c285d31)."""
    cli, _ = own_lab
    before = {n["name"]: n["address"] for n in cli.json("lab", "ls")}
    first, second = sorted(before)[:2]
    cli("lab", "stop", first, check=True, timeout=120)
    cli("lab", "stop", second, check=True, timeout=120)
    cli("lab", "start", second, check=True, timeout=180)
    cli("lab", "start", first, check=True, timeout=180)
    after = {n["name"]: n["address"] for n in cli.json("lab", "ls")}
    assert after == before


def test_load_copies_an_image_into_every_node(own_lab):
    cli, _ = own_lab
    res = cli("lab", "load", "swarmlet-hello:1", check=True)
    assert res.stdout.count("loaded swarmlet-hello:1") == 3
    for node in cli.json("lab", "ls"):
        assert ssh(node, "docker image inspect -f '{{.Id}}' swarmlet-hello:1").returncode == 0


def test_load_of_a_missing_image_is_a_clear_error(own_lab):
    cli, _ = own_lab
    res = cli("lab", "load", "no-such-image:7")
    assert res.returncode == 1
    assert res.stderr.strip() == "error: no local image no-such-image:7"


def test_down_leaves_nothing(own_lab, docker_client):
    cli, name = own_lab
    assert all(_lab_objects(docker_client, name))
    cli("lab", "down", check=True)
    assert _lab_objects(docker_client, name) == ([], [], [])
    assert cli.json("lab", "ls") == []
