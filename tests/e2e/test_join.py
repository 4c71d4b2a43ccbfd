"""join, leave and their errors on the lab: real sshd, systemd as PID 1, real dockerd.

This module has its own lab (``swt-join-<pid>``) and $SWARMLET_HOME, because it
breaks nodes on purpose (stops dockerd, changes a host key, fills a disk).
The tests run in order and share the cluster.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List

import pytest
from aiohttp import web

from swarmlet import cluster as clusterlib
from swarmlet.client import Client, agent_peer, call_masters, master_peers
from swarmlet.shipped import tlsutil
from swarmlet.shipped.exceptions import ConfigError
from swarmlet.shipped.gossip.transport import start_gossip
from tests.support import CLI, ssh

pytestmark = pytest.mark.e2e

# A container the agent does not manage: join and leave must leave it running.
SLEEPER = ("docker image inspect sleeper:1 >/dev/null 2>&1 || tar -ch -C / usr/bin/sleep "
           "lib/x86_64-linux-gnu/libc.so.6 lib64/ld-linux-x86-64.so.2 | docker import - sleeper:1 >/dev/null; ")


@pytest.fixture(scope="module")
def env(tmp_path_factory, docker_client) -> Dict[str, str]:
    e = dict(os.environ)
    e["SWARMLET_HOME"] = str(tmp_path_factory.mktemp("join-home"))
    e["SWARMLET_LAB"] = f"swt-join-{os.getpid()}"
    return e


@pytest.fixture(scope="module")
def cli(env) -> CLI:
    return CLI(env)


@pytest.fixture(scope="module")
def nodes(cli) -> List[dict]:
    cli("lab", "up", "--nodes", "3", check=True, timeout=600)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    cli("init", "--name", "e2e", "--master-port", str(port), check=True, timeout=120)
    yield cli.json("lab", "ls")
    cli("master", "stop")
    cli("lab", "down", timeout=300)


def gossip_view(env: Dict[str, str], node: dict) -> Dict[str, str]:
    """name -> state, as ``node``'s agent sees the mesh (GET /v1/members over mTLS)."""
    c = clusterlib.load(Path(env["SWARMLET_HOME"]))

    async def get() -> list:
        async with Client.for_cluster(c) as client:
            return await client.members(agent_peer(node["name"], node["address"], c.api_port))
    return {m["name"]: m["state"] for m in asyncio.run(get())}


def run(node: dict, command: str) -> str:
    r = ssh(node, command)
    assert r.returncode == 0, f"{command}: {r.stderr}"
    return r.stdout.strip()


def join(cli: CLI, nodes: List[dict], *extra: str, timeout: float = 180) -> subprocess.CompletedProcess:
    r = cli("join", "-i", nodes[0]["key"], *extra, *[n["ssh"] for n in nodes], timeout=timeout)
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    return r


def node_rows(cli: CLI) -> Dict[str, dict]:
    return {r["name"]: r for r in cli.json("nodes")}


def test_unknown_host_keys_need_the_flag(cli, nodes):
    r = join(cli, nodes)
    assert r.returncode == 1
    assert r.stderr.count("unknown host key SHA256:") == 3
    assert "--accept-new-host-key" in r.stderr


def test_join_three_nodes(cli, nodes, env):
    r = join(cli, nodes, "--accept-new-host-key", "--label", "zone=a")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 joined, 0 failed" in r.stdout
    for step in ("connect", "probe", "upload", "install", "start", "healthy"):
        assert r.stdout.count(f" {step} ") >= 3, step
    for n in nodes:
        assert run(n, "systemctl is-active swarmlet-agent.service") == "active"
        assert run(n, "stat -c %a /etc/swarmlet/agent.key /etc/swarmlet/gossip.keys /etc/swarmlet") == "600\n600\n700"
        cfg = json.loads(run(n, "cat /etc/swarmlet/agent.json"))
        assert cfg["address"] == n["address"] and cfg["labels"] == {"zone": "a"}
    r = cli("nodes")
    assert "view from master" in r.stderr  # join registered the nodes with the running master
    rows = node_rows(cli)
    assert sorted(rows) == sorted(n["name"] for n in nodes)
    assert all(r["status"] == "ready" and r["labels"] == {"zone": "a"} for r in rows.values())
    kh = open(os.path.join(env["SWARMLET_HOME"], "known_hosts")).read()
    assert all(n["address"] in kh for n in nodes)


def test_join_again_upgrades_in_place_and_containers_keep_running(cli, nodes):
    n1 = nodes[0]
    cid = run(n1, SLEEPER + "docker run -d --name keepme sleeper:1 /usr/bin/sleep 3600")
    pid_before = run(n1, "systemctl show -p MainPID --value swarmlet-agent.service")
    old_bundle = run(n1, "readlink /opt/swarmlet/current").rsplit("/", 1)[-1]
    r = join(cli, nodes)  # no --label: the nodes keep the labels they have
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("upgraded") == 3
    uploads = [ln for ln in r.stdout.splitlines() if " upload " in ln]
    assert len(uploads) == 3
    # The same bundle is never sent twice (other sessions editing agent/ make a new one).
    for ln in uploads:
        assert ("already on host" in ln) == (old_bundle in ln), ln
    assert run(n1, "docker inspect -f '{{.State.Running}} {{.Id}}' keepme") == f"true {cid}"
    assert run(n1, "systemctl show -p MainPID --value swarmlet-agent.service") != pid_before
    assert json.loads(run(n1, "cat /etc/swarmlet/agent.json"))["labels"] == {"zone": "a"}
    assert len(node_rows(cli)) == 3


# --- trust (issue 13, findings 6 and 10) -----------------------------------------------------

SECRET = "ghost-test-secret-8c1f"


def _node_cert(node: dict, into: Path) -> Path:
    """A joined node's agent certificate and key, as a thief who owns that node has them."""
    into.mkdir(parents=True, exist_ok=True)
    for name in ("agent.crt", "agent.key"):
        (into / name).write_text(run(node, f"cat /etc/swarmlet/{name}") + "\n")
    (into / "agent.key").chmod(0o600)
    return into


async def _tls_probe(host: str, port: int, cert_dir: Path, ca: str) -> str:
    """"http NNN" if ``host:port`` answers a request made with ``cert_dir``'s certificate, else
    "refused" (with TLS 1.3 the server judges the client certificate after the client's
    handshake is done, so the answer, or its absence, is what tells)."""
    ctx = tlsutil.client_context(str(cert_dir / "agent.crt"), str(cert_dir / "agent.key"), ca,
                                 check_hostname=False)
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=ctx), 3)
        w.write(b"GET /v1/info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await w.drain()
        line = await asyncio.wait_for(r.readline(), 3)
        w.close()
    except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError):
        return "refused"
    return f"http {line.split()[1].decode()}" if line.startswith(b"HTTP/") else "refused"


def test_ghost_node_from_a_stolen_certificate_and_forged_gossip_gets_nothing(cli, nodes, env,
                                                                             docker_client, tmp_path):
    """A thief with node 1's certificate and the gossip key tries to announce "ghost" over real
    gossip: it cannot (gossip names a member by its certificate), so it announces node 1 with
    labels of its choosing and its own address instead. Nothing registers it, nothing reaches
    it."""
    c = clusterlib.load(Path(env["SWARMLET_HOME"]))
    stolen = _node_cert(nodes[0], tmp_path / "stolen")
    net = docker_client.networks.get(env["SWARMLET_LAB"])
    me = net.attrs["IPAM"]["Config"][0]["Gateway"]        # this host on the lab network
    r = cli("run", "vault", "--image", "swarmlet-hello:1", "--global", "--no-push",
            "-e", f"DB_PASSWORD={SECRET}", timeout=60)
    assert r.returncode == 0, r.stderr
    r = cli("run", "vault2", "--image", "swarmlet-hello:1", "--no-push", "--constraint",
            "node.labels.zone==ghost", "-e", f"DB_PASSWORD={SECRET}", timeout=60)
    assert r.returncode == 0, r.stderr

    async def go() -> Dict[str, object]:
        seen: List[str] = []

        async def record(request: web.Request) -> web.Response:
            seen.append(f"{request.method} {request.path} {await request.text()}")
            return web.json_response({"name": "ghost", "cluster_id": c.id, "version": 0, "tasks": []})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", record)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        ctx = tlsutil.server_context(str(stolen / "agent.crt"), str(stolen / "agent.key"),
                                     str(c.path("ca.crt")))
        site = web.TCPSite(runner, me, 0, ssl_context=ctx)
        await site.start()
        api_port = site._server.sockets[0].getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((me, 0))
            gport = u.getsockname()[1]
        files = dict(cert=str(stolen / "agent.crt"), key=str(stolen / "agent.key"),
                     ca=str(c.path("ca.crt")))
        with pytest.raises(ConfigError):        # a certificate speaks for its own name only
            await start_gossip("ghost", bind=(me, gport), keys=c.gossip_keys(), **files)
        ghost = await start_gossip(nodes[0]["name"], bind=(me, gport), keys=c.gossip_keys(),
                                   meta={"address": me, "api_port": api_port, "labels": {"zone": "ghost"}},
                                   seeds=[(n["address"], c.gossip_port) for n in nodes[1:]],
                                   **files)
        accepted = False
        nodes_seen: List[str] = []
        try:
            deadline = time.monotonic() + 12   # many master ticks (0.5 s) and member polls
            async with Client.for_cluster(c) as client:
                while time.monotonic() < deadline:
                    members = await client.members(agent_peer(nodes[1]["name"], nodes[1]["address"],
                                                              c.api_port))
                    accepted = accepted or any(m["name"] == "ghost" or m["address"] == me
                                               for m in members)
                    nodes_seen = [n["name"] for n in await call_masters(client, master_peers(c),
                                                                      "GET", "/v1/nodes")]
                    assert "ghost" not in nodes_seen
                    await asyncio.sleep(0.5)
        finally:
            await ghost.close()
            await runner.cleanup()
        return {"accepted": accepted, "seen": seen, "nodes": nodes_seen}

    out = asyncio.run(go())
    print(f"the thief's address in the agents' gossip view: {out['accepted']}; "
          f"sent to the thief: {out['seen']}")
    assert out["seen"] == []                    # not a poll, not an assignment, no env
    assert "ghost" not in out["nodes"] and len(out["nodes"]) == 3
    assert "ghost" not in [e["subject"] for e in cli.json("events", "-n", "1000")]
    for name in ("vault", "vault2"):
        assert cli("rm", name, timeout=60).returncode == 0


def test_wrong_key_and_unreachable(cli, nodes, tmp_path):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    r = cli("join", "-i", str(other), nodes[0]["ssh"], timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"{nodes[0]['ssh']}: authentication failed for user root" in r.stderr
    unused = nodes[0]["address"].rsplit(".", 1)[0] + ".250"
    # Two bad hosts in the same join as a good one: the good one still joins.
    r = cli("join", "-i", nodes[0]["key"], nodes[0]["ssh"], f"root@{nodes[0]['address']}:2", f"root@{unused}",
            timeout=90)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "unreachable: connection refused on port 2" in r.stderr
    # No such machine: "No route to host" (ARP fails) or a connect timeout, depending on the network.
    assert f"root@{unused}: unreachable: " in r.stderr
    assert "1 joined, 2 failed" in r.stdout


def test_node_without_running_dockerd(cli, nodes):
    n3 = nodes[2]
    run(n3, "systemctl stop docker.socket docker.service")
    try:
        r = join(cli, [n3])
        assert r.returncode == 1
        assert f"{n3['ssh']}: the Docker daemon is not running" in r.stderr
        assert "failed at probe" in r.stdout
    finally:
        run(n3, "systemctl start docker.service")


def test_changed_host_key_is_refused(cli, nodes):
    n3 = nodes[2]
    run(n3, "rm -f /etc/ssh/ssh_host_*; ssh-keygen -A >/dev/null; systemctl restart ssh")
    r = join(cli, [n3], "--accept-new-host-key")
    assert r.returncode == 1
    assert f"{n3['ssh']}: host key has CHANGED" in r.stderr
    assert "failed at connect" in r.stdout


def test_node_rm_revokes_its_certificate_everywhere_within_5s(cli, nodes, env, tmp_path):
    n2 = nodes[1]
    c = clusterlib.load(Path(env["SWARMLET_HOME"]))
    ca = str(c.path("ca.crt"))
    stolen = _node_cert(n2, tmp_path / "n2")
    targets = {"master": ("127.0.0.1", c.master_port),
               **{n["name"]: (n["address"], c.api_port) for n in nodes if n is not n2}}

    async def probe_all() -> Dict[str, str]:
        got = await asyncio.gather(*(_tls_probe(h, p, stolen, ca) for h, p in targets.values()))
        return dict(zip(targets, got))

    assert set(asyncio.run(probe_all()).values()) == {"http 403"}   # TLS passes; the role is refused
    lines: List[tuple] = []
    proc = subprocess.Popen([sys.executable, "-m", "swarmlet.cli.main", "node", "rm", n2["name"]],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def reader() -> None:
        for ln in proc.stdout:
            lines.append((time.monotonic(), ln.rstrip()))
    t = threading.Thread(target=reader, daemon=True)
    t.start()
    refused: Dict[str, float] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(refused) < len(targets):
        now = time.monotonic()
        for name, verdict in asyncio.run(probe_all()).items():
            if verdict == "refused" and name not in refused:
                refused[name] = now
        time.sleep(0.1)
    assert proc.wait(timeout=120) == 0, lines
    t.join(10)
    revoked_at = next(ts for ts, ln in lines if "certificate revoked" in ln)
    after = {name: round(ts - revoked_at, 2) for name, ts in refused.items()}
    print(f"refused after the revocation (s): {after}")
    assert set(after) == set(targets), (after, lines)
    assert all(v <= 5.0 for v in after.values()), after
    for n in nodes:
        if n is not n2:
            served = json.loads(run(n, "cat /var/lib/swarmlet/revoked.json"))
            assert n2["name"] in {e["name"] for e in served["revoked"]}
    r = join(cli, [n2])                       # back, with a new certificate, for the next tests
    assert r.returncode == 0, r.stdout + r.stderr
    assert set(asyncio.run(probe_all()).values()) == {"refused"}   # the stolen one stays refused


def test_leave_purges_and_peers_see_left(cli, nodes, env):
    n2 = nodes[1]
    run(n2, SLEEPER + "docker run -d --name ghost --label io.swarmlet.managed=1 --label io.swarmlet.node=ghost "
        "sleeper:1 /usr/bin/sleep 3600 >/dev/null; docker run -d --name plain sleeper:1 /usr/bin/sleep 3600")
    r = cli("leave", n2["name"], "--purge", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "left the gossip mesh" in r.stdout
    assert run(n2, "systemctl list-unit-files swarmlet-agent.service | grep -c swarmlet || true") == "0"
    assert run(n2, "ls -d /etc/swarmlet /opt/swarmlet /var/lib/swarmlet 2>/dev/null | wc -l") == "0"
    assert run(n2, "docker ps -a --format '{{.Names}}' | sort") == "plain"
    deadline = time.monotonic() + 20
    while gossip_view(env, nodes[0]).get(n2["name"]) != "left" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert gossip_view(env, nodes[0])[n2["name"]] == "left"
    assert n2["name"] not in node_rows(cli)  # the master forgot it


def test_upload_fails_cleanly_on_a_full_disk(cli, nodes):
    n2 = nodes[1]
    run(n2, "mkdir -p /opt/swarmlet && mount -t tmpfs -o size=1m tmpfs /opt/swarmlet")
    try:
        r = join(cli, [n2])
        assert r.returncode == 1
        assert "failed at upload" in r.stdout
        assert f"{n2['ssh']}: upload failed:" in r.stderr and "No space left on device" in r.stderr
        assert run(n2, "ls /opt/swarmlet/bundles") == ""  # no half bundle left behind
    finally:
        run(n2, "umount /opt/swarmlet; rm -rf /opt/swarmlet")


def test_supervised_agent_without_systemd_restarts_on_crash(cli, nodes):
    n2 = nodes[1]
    r = join(cli, [n2], "--supervised")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "will not survive a reboot" in r.stdout
    assert run(n2, "test -f /etc/systemd/system/swarmlet-agent.service && echo unit || echo none") == "none"
    sup = run(n2, "cat /run/swarmlet-agent.pid")
    agent = run(n2, f"pgrep -P {sup} -f swarmlet_agent")
    run(n2, f"kill -9 {agent}")
    deadline = time.monotonic() + 20
    new = ""
    while time.monotonic() < deadline:
        new = ssh(n2, f"pgrep -P {sup} -f swarmlet_agent").stdout.strip()
        if new and new != agent:
            break
        time.sleep(0.3)
    assert new and new != agent
    r = cli("leave", n2["name"], timeout=120)
    assert r.returncode == 0, r.stderr
    assert ssh(n2, f"kill -0 {sup}").returncode != 0


def test_docker_group_user_without_sudo_runs_the_agent_in_its_home(cli, nodes, env):
    n2 = nodes[1]
    run(n2, "id ops >/dev/null 2>&1 || useradd -m -G docker ops; install -d -o ops -m 700 /home/ops/.ssh; "
            "install -o ops -m 600 /root/.ssh/authorized_keys /home/ops/.ssh/authorized_keys")
    user = f"ops@{n2['address']}"
    r = cli("join", "-i", n2["key"], user, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ops has no root or sudo" in r.stdout and "will not survive a reboot" in r.stdout
    owner = run(n2, "ps -o user= -p $(pgrep -f 'swarmlet_agent --config /home/ops' | head -1)")
    assert owner == "ops"
    assert run(n2, "stat -c %a /home/ops/.swarmlet-agent/etc/agent.key") == "600"
    assert gossip_view(env, nodes[0]).get(n2["name"]) == "alive"
    r = cli("leave", n2["name"], timeout=120)
    assert r.returncode == 0, r.stderr
    assert run(n2, "ls -a /home/ops | grep -c swarmlet-agent || true") == "0"
    assert ssh(n2, "pgrep -f swarmlet_agent").returncode != 0
