"""Faults under counted load on a 3-node lab (issue 9, scenarios 1-8).

Each scenario starts from the resting state (hello: 3 healthy replicas, one
per node), injects one fault while ``Load`` counts every request, measures the
time to full capacity and the leftovers, records them in
``artifacts/chaos-report.json`` and asserts the issue's targets. Bounds on
times are generous (a busy 2-core machine); the real figures are in the
report, and ``bench/soak`` repeats the faults for longer.

The scenarios share one cluster and run in file order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.chaos.support import (REPLICAS, Load, containers, healthy, leftovers, node_exec, record,
                                 steady, wait_until)
from tests.conftest import free_port
from tests.support import ssh

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(420)]

# Scenario 4: how long the master stays down (the issue says 2 minutes; the
# soak runs that, CI uses a shorter default).
MASTER_DOWN = float(os.environ.get("SWARMLET_CHAOS_MASTER_DOWN", "20"))
AGENT_DOWN = 5.0     # scenario 5: seconds systemd waits to restart the killed agent


def lb_url(c) -> str:
    return f"http://127.0.0.1:{c.port}/"


def ingress_urls(c) -> list:
    return [f"http://{n['address']}:{c.port}/" for n in c.nodes]


def live(c, dead: str):
    return [n for n in c.nodes if n["name"] != dead]


def full_on(c, nodes) -> bool:
    """3 healthy replicas, all on ``nodes``."""
    rows = c.master.try_tasks()
    names = {n["name"] for n in nodes}
    return rows is not None and len([r for r in healthy(rows) if r["node"] in names]) == REPLICAS


def node_status(c, name: str) -> str:
    try:
        return next(r["status"] for r in c.master.nodes() if r["name"] == name)
    except (OSError, AssertionError, StopIteration, ValueError):
        return "unknown"


def test_1_killed_replica_fails_no_request(chaos):
    c = chaos
    steady(c.docker, c.nodes, c.master)
    node = c.nodes[0]
    victim = containers(c.docker, [node])[node["name"]][0]
    with Load([lb_url(c)], [c.subnet]) as load:
        time.sleep(1.0)                         # traffic flowing before the fault
        r = ssh(node, f"docker kill $(docker ps -q --filter label=io.swarmlet.task={victim})")
        assert r.returncode == 0, r.stderr

        def back() -> bool:
            rows = c.master.try_tasks() or []
            row = next((x for x in rows if x["task"] == victim), None)
            return len(healthy(rows)) == REPLICAS and (row is None or row["restarts"] > 0)
        cap = wait_until("the killed replica back", back, timeout=60)
        time.sleep(1.0)                         # and some traffic after it
    left = leftovers(c.docker, c.nodes, c.master)
    record("1 replica docker kill", load, capacity_s=cap, **left,
           outcome="ok" if load.failed == 0 else "FAILED REQUESTS")
    assert load.failed == 0, load.summary()
    assert left["extra_containers"] == 0 and left["over_replicated"] == 0, left


def test_2_killed_node_at_most_0_1_percent_failed(chaos):
    c = chaos
    steady(c.docker, c.nodes, c.master)
    victim = c.nodes[2]
    with Load([lb_url(c)], [c.subnet]) as load:
        time.sleep(1.0)
        t_fault = time.monotonic()
        c.cli("lab", "stop", victim["name"], check=True, timeout=60)
        cap = wait_until("3 healthy replicas on the 2 live nodes",
                         lambda: full_on(c, live(c, victim["name"])), timeout=60)
        cap = time.monotonic() - t_fault         # from the stop command, not its return
        time.sleep(1.0)
    total = load.served + load.failed
    left = leftovers(c.docker, live(c, victim["name"]), c.master)
    # the node's return: it comes back with a stale replica that must go
    t_back = time.monotonic()
    c.cli("lab", "start", victim["name"], check=True, timeout=120)
    steady(c.docker, c.nodes, c.master, timeout=180)
    rebalance = time.monotonic() - t_back
    after = leftovers(c.docker, c.nodes, c.master)
    record("2 node killed", load, capacity_s=cap, capacity_target_s=10.0,
           extra_containers=left["extra_containers"], over_replicated=left["over_replicated"],
           node_return_rebalanced_s=rebalance, leftovers_after_return=after,
           outcome="ok" if load.failed * 1000 <= total else "over 0.1% failed")
    assert load.failed * 1000 <= total, load.summary()      # at most 0.1 %
    assert cap <= 10.0, cap                                  # the target: capacity back in 10 s
    assert after["extra_containers"] == 0 and after["over_replicated"] == 0, after


def test_3_cut_off_node_leaves_no_over_replication_after_heal(chaos):
    c = chaos
    steady(c.docker, c.nodes, c.master)
    victim = c.nodes[1]
    net = c.docker.networks.get(c.network)
    ct = c.docker.containers.get(victim["name"])
    with Load([lb_url(c)], [c.subnet]) as load:
        time.sleep(1.0)
        t_fault = time.monotonic()
        net.disconnect(ct)
        try:
            wait_until("3 healthy replicas on the connected nodes",
                       lambda: full_on(c, live(c, victim["name"])), timeout=90)
            cap = time.monotonic() - t_fault
            time.sleep(5.0)                      # the cut lasts a while longer (gossip: dead)
            # the cut-off node keeps its replica running: the data plane outlives the link
            stale = len(containers(c.docker, [victim])[victim["name"]])
        finally:
            net.connect(ct)
        t_heal = time.monotonic()
        ct.reload()
        addr = ct.attrs["NetworkSettings"]["Networks"][c.network]["IPAddress"]
        assert addr == victim["address"], f"the node came back as {addr}, not {victim['address']}"
        ready = wait_until("the node ready again", lambda: node_status(c, victim["name"]) == "ready",
                           timeout=60)
        # the check: 30 s after the heal, nothing is over-replicated
        time.sleep(max(0.0, 30.0 - (time.monotonic() - t_heal)))
        left = leftovers(c.docker, c.nodes, c.master)
    record("3 node cut off, healed", load, capacity_s=cap, stale_replicas_while_cut=stale,
           node_ready_after_heal_s=ready, **left,
           outcome="ok" if left["extra_containers"] == left["over_replicated"] == 0 else "OVER-REPLICATED")
    assert left["extra_containers"] == 0 and left["over_replicated"] == 0, left
    steady(c.docker, c.nodes, c.master, timeout=120)


def test_4_master_down_traffic_flows_through_the_agents(chaos):
    c = chaos
    steady(c.docker, c.nodes, c.master)
    before = sorted(r["task"] for r in healthy(c.master.tasks()))
    with Load(ingress_urls(c), [c.subnet], concurrency=2) as load:
        time.sleep(1.0)
        c.cli("master", "stop", check=True, timeout=60)
        time.sleep(MASTER_DOWN)                  # the fault's duration, a parameter
        c.cli("master", "start", check=True, timeout=60)
        back = wait_until("the master back with its tasks",
                          lambda: sorted(r["task"] for r in healthy(c.master.try_tasks() or [])) == before,
                          timeout=60)
        time.sleep(1.0)
    time.sleep(3.0)                              # a few reconcile rounds after the restart
    after = sorted(r["task"] for r in healthy(c.master.tasks()))
    left = leftovers(c.docker, c.nodes, c.master)
    # capacity is never lost here: the agents keep serving; what is timed is the master's return
    record("4 master down", load, master_down_s=MASTER_DOWN, master_back_s=back, **left,
           tasks_same=after == before,
           outcome="ok" if load.failed == 0 and after == before else "LOST OR DUPLICATED")
    assert load.failed == 0 and load.served > 0, load.summary()
    assert after == before
    assert left["extra_containers"] == 0 and left["over_replicated"] == 0, left


def test_5_killed_agent_adopts_its_containers(chaos):
    c = chaos
    steady(c.docker, c.nodes, c.master)
    node = c.nodes[1]
    ids = "docker ps -q --filter label=io.swarmlet.managed=1 | sort"
    before = node_exec(c.docker, node, ids).split()
    restarts = node_exec(c.docker, node, "systemctl show -p NRestarts --value swarmlet-agent").strip()
    others = [f"http://{n['address']}:{c.port}/" for n in c.nodes if n is not node]
    own = f"http://{node['address']}:{c.port}/"
    # systemd restarts the agent AGENT_DOWN s after the kill (a slow restart: longer than the
    # master's down_after of 2 s, which a refused connection must not count down to)
    slow = "/run/systemd/system/swarmlet-agent.service.d"
    r = ssh(node, f"mkdir -p {slow} && printf '[Service]\\nRestartSec={AGENT_DOWN:g}\\n' > {slow}/slow.conf"
                  " && systemctl daemon-reload")
    assert r.returncode == 0, r.stderr
    seen = set()
    try:
        # asserted: the master's LB and the other nodes' ingress; reported: the killed
        # agent's own ingress (its listener dies with the process until systemd restarts it)
        with Load([lb_url(c)] + others, [c.subnet], concurrency=2) as load, \
                Load([own], [c.subnet], concurrency=1) as own_ingress:
            time.sleep(1.0)
            r = ssh(node, "systemctl kill -s KILL swarmlet-agent")
            assert r.returncode == 0, r.stderr

            def restarted() -> bool:
                seen.add(node_status(c, node["name"]))
                return node_exec(c.docker, node, "systemctl show -p NRestarts --value "
                                 "swarmlet-agent").strip() != restarts and node_exec(
                    c.docker, node, "systemctl is-active swarmlet-agent || true").strip() == "active"
            back = wait_until("the agent restarted by systemd", restarted, timeout=60)
            cap = wait_until("its tasks reported healthy again", lambda: len(healthy(
                c.master.try_tasks() or [])) == REPLICAS and node_status(c, node["name"]) == "ready", timeout=60)
            time.sleep(3.0)                          # a resync round of the new agent
    finally:
        ssh(node, f"rm -f {slow}/slow.conf && systemctl daemon-reload")
    after = node_exec(c.docker, node, ids).split()
    left = leftovers(c.docker, c.nodes, c.master)
    record("5 agent killed", load, agent_back_s=back, capacity_s=cap, **left,
           node_statuses=sorted(seen), containers_adopted=after == before,
           own_ingress=own_ingress.summary()["per_url"][0],
           outcome="ok" if load.failed == 0 and after == before else "NOT ADOPTED")
    assert back >= AGENT_DOWN - 0.5, back           # the restart really was slow
    assert "down" not in seen, seen                 # the host refused: an agent restarting
    assert after == before, (before, after)         # the same containers: adopted, not recreated
    assert load.failed == 0, load.summary()
    assert left["extra_containers"] == 0 and left["over_replicated"] == 0, left


def test_6_rolling_update_during_a_node_kill(chaos):
    c = chaos
    steady(c.docker, c.nodes, c.master)
    victim = c.nodes[0]
    before_image = next(s["image"] for s in c.cli.json("services") if s["name"] == "hello_web")
    image = {"swarmlet-hello:1": "swarmlet-hello:2"}.get(before_image, "swarmlet-hello:1")
    with Load([lb_url(c)], [c.subnet]) as load:
        time.sleep(1.0)
        update = subprocess.Popen([sys.executable, "-m", "swarmlet.cli.main", "update", "web",
                                   "--image", image], env=c.cli.env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(2.0)                          # the rollout under way
        t_fault = time.monotonic()
        c.cli("lab", "stop", victim["name"], check=True, timeout=60)
        try:
            out, err = update.communicate(timeout=300)
        finally:
            update.kill()
        rows_ok = lambda: full_on(c, live(c, victim["name"])) and len(  # noqa: E731
            {r["revision"] for r in healthy(c.master.try_tasks() or [])}) == 1
        cap = wait_until("3 healthy replicas of one revision on the live nodes", rows_ok, timeout=120)
        cap = time.monotonic() - t_fault
        time.sleep(1.0)
    served_images = {json.loads(b).get("version") for r in load.results for b in r.bodies}
    outcome = ("completed" if update.returncode == 0 else
               "rolled back" if "rolled back" in err else f"exit {update.returncode}")
    left = leftovers(c.docker, live(c, victim["name"]), c.master)
    t_back = time.monotonic()
    c.cli("lab", "start", victim["name"], check=True, timeout=120)
    steady(c.docker, c.nodes, c.master, timeout=180)
    after = leftovers(c.docker, c.nodes, c.master)
    record("6 rolling update during node kill", load, capacity_s=cap, outcome=outcome,
           versions_served=sorted(served_images), extra_containers=left["extra_containers"],
           over_replicated=left["over_replicated"], node_return_rebalanced_s=time.monotonic() - t_back,
           leftovers_after_return=after, update_stderr=err.strip()[-300:])
    assert outcome in ("completed", "rolled back"), out + err
    # definite: every replica ends on one revision, the one the outcome names
    final = {s["name"]: s for s in c.cli.json("services")}["hello_web"]["image"]
    assert final == (image if outcome == "completed" else before_image), (outcome, final)
    assert load.failed == 0, load.summary()
    assert left["over_replicated"] == 0 and after["extra_containers"] == 0, (left, after)


def test_7_disk_full_on_one_node_during_an_image_push(chaos):
    c = chaos
    full, others = c.nodes[0], c.nodes[1:]
    tag = f"swt-chaos-push:{os.getpid()}"
    subprocess.run(["docker", "tag", "swarmlet-hello:1", tag], check=True)
    spool = "/var/lib/swarmlet/images"
    node_exec(c.docker, full, f"mkdir -p {spool} && mount -t tmpfs -o size=64k tmpfs {spool}")
    try:
        t0 = time.monotonic()
        r = c.cli("image", "push", tag, "--force", "-o", "json", timeout=180)
        took = time.monotonic() - t0
        results = {x["node"]: x for x in json.loads(r.stdout)}
        have = {n["name"]: "present" in node_exec(c.docker, n, f"docker image inspect {tag} "
                                                  ">/dev/null 2>&1 && echo present || echo absent")
                for n in c.nodes}
    finally:
        node_exec(c.docker, full, f"umount {spool}")
        subprocess.run(["docker", "rmi", tag], capture_output=True)
        for n in c.nodes:
            node_exec(c.docker, n, f"docker rmi {tag} >/dev/null 2>&1 || true")
    record("7 disk full during image push", None, push_s=took, exit=r.returncode,
           results={k: v["result"] for k, v in results.items()}, error=r.stderr.strip()[:300],
           outcome="ok" if r.returncode == 1 and all(have[n["name"]] for n in others) else "FAILED")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"error: {full['name']}: no space left on device on {full['name']} while loading {tag}"], r.stderr
    assert results[full["name"]]["result"] == "failed"
    assert all(results[n["name"]]["result"] == "pushed" for n in others), results
    assert not have[full["name"]] and all(have[n["name"]] for n in others), have


SLOW_STACK = """\
services:
  slow:
    image: swarmlet-hello:1
    ports: ["{port}:8080"]
    deploy:
      replicas: 2
    healthcheck:
      interval: 1s
      timeout: 1s
      retries: 2
    command:
      - sh
      - -c
      - |
        case "$$SWARMLET_TASK" in slow_slow.1.*) d=30;; *) d=0;; esac
        mkdir -p /w/cgi-bin
        printf '#!/bin/sh\\nsleep %s\\nprintf "Content-Type: text/plain\\\\r\\\\n\\\\r\\\\nok\\\\n"\\n' $$d > /w/cgi-bin/one
        printf '#!/bin/sh\\nsleep 30\\nprintf "Content-Type: text/plain\\\\r\\\\n\\\\r\\\\nok\\\\n"\\n' > /w/cgi-bin/all
        chmod +x /w/cgi-bin/one /w/cgi-bin/all
        echo ok > /w/health
        exec busybox httpd -f -p 8080 -h /w
    x-swarmlet:
      health: /health
      lb:
        timeout: {timeout}s
"""


def test_8_slow_backend_times_out_with_504_and_is_ejected(chaos, tmp_path):
    c = chaos
    timeout = 2
    port = free_port()
    stack = tmp_path / "slow" / "stack.yml"
    stack.parent.mkdir()
    stack.write_text(SLOW_STACK.format(port=port, timeout=timeout))
    c.cli("deploy", "-f", str(stack), check=True, timeout=300)
    try:
        wait_until("2 healthy slow replicas", lambda: len(healthy(c.master.tasks("slow_slow"))) == 2,
                   timeout=90)
        base = f"http://127.0.0.1:{port}/cgi-bin/"
        # one replica slow: its requests time out, are retried on the other, and it is ejected
        with Load([base + "one"], [], max_seconds=10, timeout=30) as one:
            one.join()
        # every replica slow: the client gets 504 after the LB's timeouts, never a hang
        with Load([base + "all"], [], max_seconds=6, concurrency=2, timeout=30) as every:
            every.join()
        ejections = sum(float(line.rsplit(" ", 1)[1]) for line in _master_text(c, "/metrics").splitlines()
                        if line.startswith("swarmlet_lb_backend_ejections_total") and 'name="slow_slow.' in line)
    finally:
        c.cli("rm", "slow", timeout=120)
    worst_one = max(r.p(1.0) for r in one.results)
    worst_all = max(r.p(1.0) for r in every.results)
    record("8 slow backend", one, lb_timeout_s=timeout, one_slow_max_latency_s=worst_one,
           all_slow_statuses=dict(every.results[0].statuses), all_slow_errors=dict(every.results[0].errors),
           all_slow_max_latency_s=worst_all, ejections=ejections,
           outcome="ok" if set(every.results[0].statuses) == {504} else "NOT 504")
    # all slow: every answer is a 504 within the LB's attempts x timeout, no client timeout
    assert set(every.results[0].statuses) == {504} and not every.results[0].errors, every.summary()
    assert worst_all < 3 * timeout + 3, worst_all
    # one slow: nothing reaches the client but 200s (retried elsewhere) or 504s, and the
    # ejection keeps the slow replica out so most requests are fast
    assert set(one.results[0].statuses) <= {200, 504} and not one.results[0].errors, one.summary()
    assert one.served > 10 * max(1, one.failed) and one.results[0].p(0.5) < 1.0, one.summary()


def _master_text(c, path: str) -> str:
    import http.client
    conn = http.client.HTTPSConnection("127.0.0.1", c.master.cluster.master_port,
                                       context=c.master.ctx, timeout=10)
    try:
        conn.request("GET", path)
        return conn.getresponse().read().decode()
    finally:
        conn.close()
