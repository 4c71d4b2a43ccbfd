"""Secrets on the lab (issue 17): a stack whose web service reads ``/run/secrets/db-password``
(named ``secweb``: the shared cluster runs the hello stack's ``web`` too).

On the shared e2e cluster (real sshd, systemd, dockerd and agents in every node):

- the value reaches the container (the demo app's ``/file`` answers its sha256);
- ``docker inspect`` on the node shows no value (env, labels, mounts);
- a search of the node's disk outside tmpfs finds nothing, and ``/run`` (where the
  agent keeps values) is a tmpfs there;
- a node that runs no such task never receives it (its agent's state and secrets dir);
- ``secret rotate`` under counted load: 0 failed requests, every replica on the new
  version; a rotation to a value that makes the app unhealthy rolls back by itself;
- after a master restart (while the holders' agents restart with their tmpfs copies
  gone) the master decrypts and sends the value again, the running tasks keep their
  files, and a new replica gets the value;
- removing the service removes the value and the task files from the nodes;
- nothing swarmlet printed or logged during all this (CLI output, the master's log,
  every agent's journal, events, ps, services, the plan, the dashboard's overview)
  contains any of the values.

The tests share one stack and run in order; timings are short (health every 0.5 s,
monitor 2 s).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets as random
import time
from pathlib import Path
from typing import Callable, Dict, List

import pytest

from swarmlet import cluster as clusterlib
from swarmlet.client import call_master
from swarmlet.stack import load_stack
from tests.conftest import free_port
from tests.e2e.test_services import finish, load
from tests.support import ssh

pytestmark = pytest.mark.e2e

STACK = """\
name: sec
services:
  secweb:
    image: swarmlet-hello:1
    ports:
      - "{port}:8080"
    environment:
      HELLO_HEALTH_FILE: /run/secrets/db-password
    secrets:
      - source: db-password
        mode: 0400
    deploy:
      replicas: 2
      placement:
        constraints: ["node.name!={spare}"]
      update_config:
        parallelism: 1
        order: start-first
        failure_action: rollback
        monitor: 2s
    healthcheck:
      interval: 0.5s
      timeout: 1s
      retries: 2
    x-swarmlet:
      health: /health
secrets:
  db-password:
    file: ./db-password.txt
"""


class Printed:
    """Everything the CLI printed in this module (stdout and stderr)."""

    def __init__(self) -> None:
        self.text: List[str] = []


@pytest.fixture(scope="module")
def printed() -> Printed:
    return Printed()


@pytest.fixture(scope="module")
def values() -> Dict[str, str]:
    # "fail…" makes the demo app unhealthy (HELLO_HEALTH_FILE): the rollback case
    return {"v1": "pw1-" + random.token_hex(16), "v2": "pw2-" + random.token_hex(16),
            "bad": "fail-" + random.token_hex(16)}


@pytest.fixture(scope="module")
def sec(cluster, tmp_path_factory, values, printed):
    """The stack deployed; ``spare`` is the node that must never see the secret."""
    d = tmp_path_factory.mktemp("sec-stack")
    port = free_port()
    spare = cluster.nodes[-1]["name"]
    (d / "db-password.txt").write_text(values["v1"])
    (d / "stack.yml").write_text(STACK.format(port=port, spare=spare))
    stack = load_stack(str(d / "stack.yml"), {})
    ns = {"dir": d, "port": port, "spare": spare, "svc": stack.services[0].name,
          "secret": stack.values[0].name, "cluster": cluster}
    run(cluster, printed, "deploy", "-f", str(d / "stack.yml"), "--dry-run")
    r = run(cluster, printed, "deploy", "-f", str(d / "stack.yml"), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    yield ns
    # the shared cluster goes on to other modules: leave it as it was (after a failure too)
    cluster.cli("rm", ns["svc"], timeout=60)
    cluster.cli("secret", "rm", ns["secret"], timeout=60)


def run(cluster, printed: Printed, *args: str, timeout: float = 300):
    r = cluster.cli(*args, timeout=timeout)
    printed.text += [r.stdout, r.stderr]
    return r


def cli_json(sec, printed: Printed, *args: str):
    r = run(sec["cluster"], printed, *args, "-o", "json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def wait_until(what: str, pred: Callable[[], bool], timeout: float = 90.0, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def serving(sec, printed) -> List[dict]:
    rows = cli_json(sec, printed, "ps", sec["svc"])
    return [r for r in rows if r["desired"] == "running" and r["state"] == "running"
            and r["health"] == "healthy"]


def node(sec, name: str) -> dict:
    return next(n for n in sec["cluster"].nodes if n["name"] == name)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def hashes_seen(sec, n: int = 12) -> set:
    """The sha256 the replicas report for /run/secrets/db-password, through every node's
    ingress (round robin: every replica answers)."""
    import urllib.request
    out = set()
    nodes = sec["cluster"].nodes
    for i in range(n):
        url = (f"http://{nodes[i % len(nodes)]['address']}:{sec['port']}"
               "/file?path=/run/secrets/db-password")
        with urllib.request.urlopen(url, timeout=5) as resp:
            out.add(json.loads(resp.read())["sha256"])
    return out


def replica_hashes(sec, printed, rows: List[dict] = None) -> Dict[str, str]:
    """Each serving replica's own answer (asked inside its container, so none is missed by
    the routing): task id -> the sha256 it reports for /run/secrets/db-password.
    ``rows``: these replicas (from an earlier ``ps``) rather than the master's list now."""
    out = {}
    for r in serving(sec, printed) if rows is None else rows:
        got = ssh(node(sec, r["node"]),
                  f"docker exec $(docker ps -q --filter label=io.swarmlet.task={r['task']}) "
                  "wget -qO- 'http://127.0.0.1:8080/file?path=/run/secrets/db-password'")
        assert got.returncode == 0, got.stdout + got.stderr
        out[r["task"]] = json.loads(got.stdout)["sha256"]
    return out


def test_the_value_reaches_the_container_and_nowhere_else(sec, values, printed):
    wait_until("2 healthy replicas", lambda: len(serving(sec, printed)) == 2)
    rows = serving(sec, printed)
    assert sec["spare"] not in {r["node"] for r in rows}
    assert hashes_seen(sec) == {sha(values["v1"])}
    assert list(replica_hashes(sec, printed).values()) == [sha(values["v1"])] * 2
    for r in rows:
        nd = node(sec, r["node"])
        # /run is a tmpfs on the lab's systemd nodes: where the agent keeps values
        fs = ssh(nd, "stat -f -c %T /run/swarmlet/secrets")
        assert fs.stdout.strip() in ("tmpfs", "ramfs"), fs.stdout + fs.stderr
        # the container sees the file read-only with its mode
        got = ssh(nd, f"docker exec $(docker ps -q --filter label=io.swarmlet.task={r['task']}) "
                      "ls -ln /run/secrets/db-password")
        assert got.stdout.split()[0] == "-r--------", got.stdout + got.stderr
        # docker inspect holds no value: env, labels and mounts name a path only
        inspect = ssh(nd, f"docker inspect $(docker ps -q --filter label=io.swarmlet.service={sec['svc']})")
        assert inspect.returncode == 0 and sec["svc"] in inspect.stdout
        assert values["v1"] not in inspect.stdout
        assert "/run/swarmlet/secrets/tasks/" in inspect.stdout
        # the node's disk outside tmpfs: nothing (the agent's state, docker's, everything);
        # a canary written to disk shows the search finds what is there
        canary = "canary-" + random.token_hex(8)
        assert ssh(nd, f"echo {canary} > /var/tmp/swt-canary").returncode == 0
        try:
            assert disk_hits(nd, values["v1"], canary) == ["/var/tmp/swt-canary"], r["node"]
        finally:
            ssh(nd, "rm -f /var/tmp/swt-canary")
    # a node that runs the task holds the value in its tmpfs and only a reference (name and
    # version) in its agent's persisted assignment; the spare node never received either
    for r in rows:
        nd = node(sec, r["node"])
        assert held_values(nd, sec) == [f"{sec['secret']}@1"], r["node"]
        state = agent_state(nd)
        assert sec["secret"] in state and values["v1"] not in state
    spare = node(sec, sec["spare"])
    state = agent_state(spare)
    assert '"tasks"' in state and sec["svc"] not in state and sec["secret"] not in state, state[:2000]
    assert held_values(spare, sec) == []
    assert disk_hits(spare, values["v1"]) == []
    held = ssh(spare, f"grep -rlF '{values['v1']}' /run/swarmlet /var/lib/swarmlet 2>/dev/null")
    assert held.stdout == "", held.stdout


def agent_state(nd: dict) -> str:
    """The agent's persisted assignment (``/var/lib/swarmlet/assignment.json``)."""
    r = ssh(nd, "cat /var/lib/swarmlet/assignment.json")
    assert r.returncode == 0, r.stderr
    return r.stdout


def held_values(nd: dict, sec) -> List[str]:
    """The versions of the test's secret in the node agent's tmpfs (``name@version``)."""
    r = ssh(nd, "ls -A /run/swarmlet/secrets/values/secret 2>/dev/null")
    return sorted(x for x in r.stdout.split() if x.startswith(sec["secret"] + "@"))


_MEMORY_OR_VIRTUAL = ("tmpfs", "ramfs", "proc", "sysfs", "devtmpfs", "devpts", "mqueue", "overlay",
                      "nsfs", "securityfs", "debugfs", "tracefs", "fusectl", "configfs",
                      "binfmt_misc", "pstore", "bpf", "hugetlbfs", "autofs", "cgroup", "cgroup2")


def disk_hits(nd: dict, *needles: str) -> List[str]:
    """Files on the node's disk (every file system but memory and virtual ones; the root is
    the lab container's overlay, /var/lib/docker a volume) that hold one of ``needles``."""
    kinds = "|".join(_MEMORY_OR_VIRTUAL)
    script = (
        f"prune=$(awk '$2!=\"/\" && $3 ~ /^({kinds})$/ {{printf \"-path %s -o \", $2}}' /proc/mounts); "
        "find / \\( $prune -path /proc \\) -prune -o -type f -print0 2>/dev/null | "
        "xargs -0 grep -lsF " + " ".join(f"-e '{n}'" for n in needles) + " 2>/dev/null | head -20")
    r = ssh(nd, script, timeout=300)
    return [line for line in r.stdout.split() if line]


def test_rotate_under_load_fails_no_request(sec, values, printed):
    before = {r["task"] for r in serving(sec, printed)}
    new = sec["dir"] / "v2.txt"
    new.write_text(values["v2"])
    url = f"http://{sec['cluster'].nodes[0]['address']}:{sec['port']}/"
    t, stop, out = load(sec["cluster"], url, 120)
    r = run(sec["cluster"], printed, "secret", "rotate", sec["secret"], str(new), timeout=240)
    time.sleep(1.0)
    res = finish(t, stop, out)
    figure("rotate under load", res)
    assert r.returncode == 0, r.stdout + r.stderr
    assert res.failed == 0 and res.served > 0, res.summary()
    rows = serving(sec, printed)
    assert len(rows) == 2 and not before & {x["task"] for x in rows}
    # the old version leaves the nodes once no task there mounts it
    for nd in {x["node"] for x in rows}:
        wait_until(f"only version 2 on {nd}",
                   lambda: held_values(node(sec, nd), sec) == [f"{sec['secret']}@2"], timeout=30)
    svc = cli_json(sec, printed, "services")
    spec = next(s for s in svc if s["name"] == sec["svc"])["spec"]
    assert spec["secrets"][0]["version"] == 2
    assert hashes_seen(sec) == {sha(values["v2"])}
    assert list(replica_hashes(sec, printed).values()) == [sha(values["v2"])] * 2
    inspect = cli_json(sec, printed, "secret", "inspect", sec["secret"])
    assert inspect["version"] == 2 and inspect["services"] == [sec["svc"]]


def test_a_rotation_that_breaks_the_app_rolls_back_by_itself(sec, values, printed):
    bad = sec["dir"] / "bad.txt"
    bad.write_text(values["bad"])
    url = f"http://{sec['cluster'].nodes[1]['address']}:{sec['port']}/"
    t, stop, out = load(sec["cluster"], url, 180)
    r = run(sec["cluster"], printed, "secret", "rotate", sec["secret"], str(bad), timeout=240)
    res = finish(t, stop, out)
    figure("rotate to an unhealthy value (rolled back)", res)
    assert r.returncode == 1 and "rolled back" in r.stderr, r.stdout + r.stderr
    assert res.failed == 0 and res.served > 0, res.summary()
    wait_until("2 healthy replicas after the rollback", lambda: len(serving(sec, printed)) == 2)
    spec = next(s for s in cli_json(sec, printed, "services") if s["name"] == sec["svc"])["spec"]
    assert spec["secrets"][0]["version"] == 2            # the rollback restores the old version
    assert cli_json(sec, printed, "secret", "inspect", sec["secret"])["version"] == 3
    assert hashes_seen(sec) == {sha(values["v2"])}
    assert list(replica_hashes(sec, printed).values()) == [sha(values["v2"])] * 2
    for nd in {x["node"] for x in serving(sec, printed)}:
        wait_until(f"only version 2 on {nd} after the rollback",
                   lambda: held_values(node(sec, nd), sec) == [f"{sec['secret']}@2"], timeout=30)


def test_restarts_keep_the_files_and_new_replicas_get_the_value(sec, values, printed):
    """The master stops; meanwhile each holder's agent restarts with its tmpfs copy of the
    value gone (as after a reboot, but with the containers left running). The restarted
    master must unwrap its data key and decrypt the value to send it again; the running
    tasks keep their files throughout."""
    rows = serving(sec, printed)
    cluster = sec["cluster"]
    assert run(cluster, printed, "master", "stop", timeout=60).returncode == 0
    holders = sorted({r["node"] for r in rows})
    for name in holders:
        r = ssh(node(sec, name), "systemctl stop swarmlet-agent && "
                                 f"rm -f /run/swarmlet/secrets/values/secret/{sec['secret']}@* && "
                                 "systemctl start swarmlet-agent")
        assert r.returncode == 0, r.stdout + r.stderr
        assert held_values(node(sec, name), sec) == []
    assert list(replica_hashes(sec, printed, rows).values()) == [sha(values["v2"])] * 2
    assert run(cluster, printed, "master", "start", timeout=120).returncode == 0
    for name in holders:
        wait_until(f"the restarted master sends version 2 to {name} again",
                   lambda: held_values(node(sec, name), sec) == [f"{sec['secret']}@2"], timeout=60)
    wait_until("the same 2 replicas, healthy", lambda: {r["task"] for r in serving(sec, printed)}
               == {r["task"] for r in rows})
    assert hashes_seen(sec) == {sha(values["v2"])}
    assert list(replica_hashes(sec, printed).values()) == [sha(values["v2"])] * 2
    r = run(cluster, printed, "scale", f"{sec['svc']}=3")
    assert r.returncode == 0, r.stderr
    wait_until("3 healthy replicas", lambda: len(serving(sec, printed)) == 3)
    assert hashes_seen(sec, 18) == {sha(values["v2"])}
    assert list(replica_hashes(sec, printed).values()) == [sha(values["v2"])] * 3
    r = run(cluster, printed, "secret", "rm", sec["secret"])
    assert r.returncode != 0 and f"in use by service {sec['svc']}" in r.stderr


def test_what_swarmlet_shows_names_no_value(sec, values, printed):
    """Every view a user has, read while the service runs (the last test searches them)."""
    cluster = sec["cluster"]
    for args in (("events", "-n", "10000"), ("ps",), ("services",),
                 ("secret", "ls"), ("secret", "inspect", sec["secret"]), ("status",),
                 ("history", sec["svc"]), ("nodes",)):
        cli_json(sec, printed, *args)
    for args in (("secret", "inspect", sec["secret"]), ("top", "--once"),
                 ("deploy", "-f", str(sec["dir"] / "stack.yml"), "--dry-run"),
                 ("logs", sec["svc"], "--tail", "200"), ("events", "-n", "10000")):
        assert run(cluster, printed, *args).returncode == 0, args
    # what the dashboard and the API serve
    c = clusterlib.load(Path(cluster.cli.env["SWARMLET_HOME"]))
    for path in ("/v1/overview", "/v1/dashboard", "/v1/tasks?all=1", "/v1/history",
                 f"/v1/services/{sec['svc']}", f"/v1/services/{sec['svc']}/revisions"):
        printed.text.append(json.dumps(asyncio.run(call_master(c, "GET", path))))


def test_removing_the_service_removes_the_values_from_the_nodes(sec, values, printed):
    cluster = sec["cluster"]
    holders = {r["node"] for r in serving(sec, printed)}
    for name in holders:          # what must go is there
        nd = node(sec, name)
        assert held_values(nd, sec) == [f"{sec['secret']}@2"], name
        files = ssh(nd, f"ls -A /run/swarmlet/secrets/tasks | grep -F '{sec['svc']}.'").stdout
        assert files.strip(), name
    assert run(cluster, printed, "rm", sec["svc"]).returncode == 0
    for name in sorted(holders):
        nd = node(sec, name)
        wait_until(f"no value and no task file left on {name}",
                   lambda: held_values(nd, sec) == [] and ssh(
                       nd, f"docker ps -aq --filter label=io.swarmlet.service={sec['svc']}; "
                           f"ls -A /run/swarmlet/secrets/tasks | grep -F '{sec['svc']}.'"
                   ).stdout.strip() == "", timeout=60)
    r = run(cluster, printed, "secret", "rm", sec["secret"])
    assert r.returncode == 0, r.stdout + r.stderr


def test_nothing_swarmlet_printed_or_logged_holds_a_value(sec, values, printed):
    cluster = sec["cluster"]
    run(cluster, printed, "events", "-n", "10000")
    home = Path(cluster.cli.env["SWARMLET_HOME"])
    logs = "".join(printed.text)
    logs += (home / "master" / "master.log").read_text(errors="replace")
    for nd in cluster.nodes:
        j = ssh(nd, "journalctl -u swarmlet-agent --no-pager -o cat | tail -n 20000", timeout=120)
        assert j.returncode == 0, j.stderr
        logs += j.stdout
    assert len(logs) > 10_000 and sec["secret"] in logs        # the search did search
    print(f"\nFIGURE searched {len(logs)} characters of output, logs and events")
    for name, v in values.items():
        assert v not in logs, f"the {name} value was printed or logged"
    # and every node's disk outside tmpfs, after the rotations and the restarts
    for nd in cluster.nodes:
        assert disk_hits(nd, *values.values()) == [], nd["name"]


def figure(what: str, res) -> None:
    print(f"\nFIGURE {what}: {res.summary()}")
