"""join's error paths over real SSH to an in-process asyncssh server.

Each case must end as one clear line for that host, at the right step, and
never stop the other hosts of the same join.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys

import asyncssh
import pytest

from swarmlet.provision import plan
from swarmlet.provision.join import JoinOptions, Progress, join_all

from .conftest import GOOD_PROBE, canned

pytestmark = pytest.mark.integration


def target(port: int, user: str = "root") -> plan.Target:
    return plan.Target(user, "127.0.0.1", port)


def opts(cluster, key_path, **kw) -> JoinOptions:
    return JoinOptions(known_hosts=cluster.known_hosts, identity=key_path, healthy_timeout=2, **kw)


async def test_wrong_key_is_authentication_failed(cluster, ssh_server_factory, client_key, tmp_path):
    server_key = asyncssh.generate_private_key("ssh-ed25519")
    host = await ssh_server_factory(server_key, canned())  # authorizes another key than ours
    (res,) = await join_all(cluster, [target(host.port)], opts(cluster, client_key[1], accept_new=True))
    assert not res.ok and res.step == "connect"
    assert res.error == "authentication failed for user root"
    assert host.commands == []


async def test_unknown_host_key_needs_the_flag_then_is_stored(cluster, ssh_server_factory, client_key, prebuilt_deps):
    host = await ssh_server_factory(client_key[0], canned(upload=(1, "stop here")))
    fp = host.host_key.get_fingerprint("sha256")
    (res,) = await join_all(cluster, [target(host.port)], opts(cluster, client_key[1]))
    assert not res.ok and res.step == "connect"
    assert res.error == f"unknown host key {fp}" and "--accept-new-host-key" in res.hint
    assert cluster.known_hosts.read_text() == ""

    events = []
    (res,) = await join_all(cluster, [target(host.port)], opts(cluster, client_key[1], accept_new=True),
                            events.append)
    assert res.step == "upload", res  # got past connect and probe
    assert any(e.state == "note" and fp in e.detail for e in events)
    stored = cluster.known_hosts.read_text()
    assert stored.startswith(f"[127.0.0.1]:{host.port} ssh-ed25519 ")
    # Now known: no flag needed, and nothing is appended again.
    (res,) = await join_all(cluster, [target(host.port)], opts(cluster, client_key[1]))
    assert res.step == "upload" and cluster.known_hosts.read_text() == stored


async def test_changed_host_key_is_always_refused(cluster, ssh_server_factory, client_key):
    old = asyncssh.generate_private_key("ssh-ed25519")
    host = await ssh_server_factory(client_key[0], canned())
    algo, blob = old.export_public_key().decode().split()[:2]
    cluster.known_hosts.write_text(f"[127.0.0.1]:{host.port} {algo} {blob}\n")
    (res,) = await join_all(cluster, [target(host.port)], opts(cluster, client_key[1], accept_new=True))
    assert not res.ok and res.step == "connect"
    assert res.error.startswith("host key has CHANGED")
    assert host.host_key.get_fingerprint("sha256") in res.error
    assert cluster.known_hosts.read_text() == f"[127.0.0.1]:{host.port} {algo} {blob}\n"
    assert host.commands == []


async def test_unreachable(cluster, client_key):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    (res,) = await join_all(cluster, [target(port)], opts(cluster, client_key[1], accept_new=True))
    assert not res.ok and res.step == "connect"
    assert res.error == f"unreachable: connection refused on port {port}"


async def test_no_python3_on_a_real_shell(cluster, ssh_server_factory, client_key, path_without_python):
    host = await ssh_server_factory(client_key[0], canned(), real_probe_path=path_without_python)
    (res,) = await join_all(cluster, [target(host.port)], opts(cluster, client_key[1], accept_new=True))
    assert not res.ok and res.step == "probe"
    assert res.error == "no python3 found (the agent needs python3 3.9 or newer)"


@pytest.mark.parametrize("probe_edit,needle", [
    (("python=3.11.2", "python=3.7.3"), "python3 3.7.3 is too old"),
    (("docker=ok 24.0.7", "docker=refused"), "the Docker daemon is not running"),
    (("docker=ok 24.0.7", "docker=nosocket"), "the Docker daemon is not running (no /var/run/docker.sock)"),
    (("docker_installed=yes", "docker_installed=no").__add__(()), None),
])
async def test_host_lacking_what_the_agent_needs(cluster, ssh_server_factory, client_key, probe_edit, needle):
    if needle is None:  # Docker not installed at all
        probe = GOOD_PROBE.replace("docker_installed=yes", "docker_installed=no").replace(
            "docker=ok 24.0.7", "docker=nosocket")
        needle = "Docker is not installed"
    else:
        probe = GOOD_PROBE.replace(*probe_edit)
    host = await ssh_server_factory(client_key[0], canned(probe=probe))
    (res,) = await join_all(cluster, [target(host.port)], opts(cluster, client_key[1], accept_new=True))
    assert not res.ok and res.step == "probe" and needle in res.error


async def test_no_permission_to_use_docker(cluster, ssh_server_factory, client_key):
    probe = GOOD_PROBE.replace("uid=0", "uid=1000").replace("user=root", "user=bob").replace(
        "docker=ok 24.0.7", "docker=denied")
    host = await ssh_server_factory(client_key[0], canned(probe=probe))
    (res,) = await join_all(cluster, [target(host.port, "bob")], opts(cluster, client_key[1], accept_new=True))
    assert not res.ok and res.step == "probe"
    assert res.error.startswith("no permission to use Docker: bob is not root")


async def test_upload_failure_disk_full(cluster, ssh_server_factory, client_key, prebuilt_deps):
    err = "tar: swarmlet/shipped/models.py: Cannot write: No space left on device\ntar: Exiting with failure status\n"
    host = await ssh_server_factory(client_key[0], canned(upload=(3, err)))
    (res,) = await join_all(cluster, [target(host.port)], opts(cluster, client_key[1], accept_new=True))
    assert not res.ok and res.step == "upload"
    assert res.error == "upload failed: No space left on device"
    # The whole bundle went over the wire on stdin.
    bundle = next(prebuilt_deps.parent.glob("*.tar.gz"))
    assert bundle.stat().st_size in host.stdin_sizes


async def test_one_failing_host_never_stops_the_others(cluster, ssh_server_factory, client_key, prebuilt_deps):
    bad = await ssh_server_factory(client_key[0], canned(probe=GOOD_PROBE.replace("docker=ok 24.0.7", "docker=refused")))
    slow_ok = await ssh_server_factory(client_key[0], canned(upload=(1, "disk full")))
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = s.getsockname()[1]
    s.close()
    events: list = []
    results = await join_all(cluster, [target(bad.port), target(slow_ok.port), target(dead)],
                             opts(cluster, client_key[1], accept_new=True), events.append)
    assert [r.step for r in results] == ["probe", "upload", "connect"]
    assert [r.target for r in results] == [str(target(p)) for p in (bad.port, slow_ok.port, dead)]
    fails = [e for e in events if e.state == "fail"]
    assert len(fails) == 3 and all(isinstance(e, Progress) for e in fails)


async def test_cli_prints_a_summary_and_exits_nonzero_without_traceback(cluster, ssh_server_factory, client_key):
    host = await ssh_server_factory(client_key[0], canned(probe=GOOD_PROBE.replace("python=3.11.2", "python=missing")))
    env = dict(os.environ, SWARMLET_HOME=str(cluster.home))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "swarmlet.cli.main", "join", "-i", client_key[1], "--accept-new-host-key",
        f"root@127.0.0.1:{host.port}", "root@127.0.0.1:1", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    out, err = out.decode(), err.decode()
    assert proc.returncode == 1
    assert "Traceback" not in out + err
    assert "HOST" in out and "RESULT" in out and "failed at probe" in out and "failed at connect" in out
    assert "0 joined, 2 failed" in out
    assert "no python3 found" in err and "unreachable: connection refused on port 1" in err


async def test_non_root_user_with_sudo_runs_every_root_step_through_sudo(
        cluster, ssh_server_factory, client_key, prebuilt_deps):
    probe = GOOD_PROBE.replace("uid=0", "uid=1000").replace("user=root", "user=ops").replace(
        "sudo=no", "sudo=yes").replace("docker=ok 24.0.7", "docker=denied")
    host = await ssh_server_factory(client_key[0], canned(probe=probe))
    (res,) = await join_all(cluster, [target(host.port, "ops")], opts(cluster, client_key[1], accept_new=True))
    # No agent can answer here, so it stops at healthy; every step before ran through sudo -n.
    assert res.step == "healthy" and not res.ok
    upload, install, start = host.commands[1:4]
    assert upload.startswith("sudo -n sh -c ") and "tar -xzf -" in upload
    assert install == "sudo -n sh -s" and start == "sudo -n sh -s"
    # The node's private key went on stdin (the install script), never on a command line.
    assert not any("PRIVATE KEY" in c for c in host.commands)
    assert host.stdin_sizes[2] > 0


async def test_docker_group_user_without_sudo_installs_in_home(cluster, ssh_server_factory, client_key,
                                                              prebuilt_deps):
    probe = GOOD_PROBE.replace("uid=0", "uid=1000").replace("user=root", "user=ops").replace(
        "home=/root", "home=/home/ops").replace("groups=root", "groups=ops docker")
    host = await ssh_server_factory(client_key[0], canned(probe=probe))
    events: list = []
    (res,) = await join_all(cluster, [target(host.port, "ops")], opts(cluster, client_key[1], accept_new=True),
                            events.append)
    assert res.step == "healthy" and res.init == "supervised"
    upload = host.commands[1]
    assert upload.startswith("sh -c ") and "/home/ops/.swarmlet-agent/bundles/" in upload
    assert host.commands[2:4] == ["sh -s", "sh -s"]  # no sudo anywhere
    assert any("runs as ops under /home/ops/.swarmlet-agent" in e.detail and "reboot" in e.detail
               for e in events if e.state == "note")
    rec = cluster_nodes(cluster)[0]
    assert rec.privilege == "user" and rec.agent_home == "/home/ops"


def cluster_nodes(cluster):
    from swarmlet import cluster as clusterlib
    return clusterlib.nodes(cluster)
