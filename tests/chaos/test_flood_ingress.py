"""A flood on a node's published port (issue 13, LB finding 3): the node's ingress
runs in a worker process of its own, so its agent's API and gossip stay
responsive and no node is falsely suspected or declared dead.

From this host, for ``FLOOD_S`` seconds, node-1's published port gets 10
connections each sending a 100 MiB header (reconnecting when refused, for the
whole window) and 10 websocket clients sending before any 101 (tests/lbconf/flood.py, in a process of its own). Meanwhile,
every 200 ms: node-1's agent API (``GET /v1/info``, mutual TLS), the master's
view of the nodes, and node-2's gossip view of node-1 (``/v1/members``).
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time

import pytest

from tests.chaos.support import REPO, node_exec, record, wait_until

pytestmark = pytest.mark.chaos

FLOOD_S = float(os.environ.get("SWARMLET_CHAOS_FLOOD", "20"))
# the pids of the node's ingress workers ([.]: the shell running this never matches itself).
# The whole loop's stderr is dropped: a process that exits between the glob and the read
# fails the `<` redirection, and the shell reports that before a `2>` after it applies.
WORKERS = ("{ for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline "
           "| grep -q 'swarmlet[.]shipped[.]lb[.]worker' && echo ${p#/proc/}; done; } 2>/dev/null; true")


def _worker_pids(docker_client, node: dict) -> list[str]:
    return sorted(w for w in node_exec(docker_client, node, WORKERS).split() if w.isdigit())


def _agent_get(c, node: dict, path: str, timeout: float = 5.0):
    row = next(r for r in c.master.nodes() if r["name"] == node["name"])
    conn = http.client.HTTPSConnection(node["address"], int(row.get("api_port") or 7443),
                                       context=c.master.ctx, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200, (path, resp.status, body[:200])
        return json.loads(body)
    finally:
        conn.close()


def test_flood_on_a_published_port_leaves_the_agent_responsive(chaos, docker_client):
    n1, n2 = chaos.nodes[0], chaos.nodes[1]
    workers = _worker_pids(docker_client, n1)
    assert workers, "node-1's ingress should run in a worker process"
    api_port = next(r for r in chaos.master.nodes() if r["name"] == n1["name"]).get("api_port")
    _agent_get(chaos, n1, "/v1/info")        # warm: the node answers before the flood
    flood = subprocess.Popen([sys.executable, "-m", "tests.lbconf.flood", str(chaos.port),
                              str(FLOOD_S), n1["address"], "--window"], cwd=str(REPO),
                             stdout=subprocess.PIPE, text=True)
    api_ms, api_failed, statuses, gossip = [], 0, set(), set()
    try:
        deadline = time.monotonic() + FLOOD_S + 30
        while flood.poll() is None and time.monotonic() < deadline:
            t0 = time.monotonic()
            try:
                _agent_get(chaos, n1, "/v1/info")
                api_ms.append((time.monotonic() - t0) * 1000)
            except (OSError, AssertionError, ValueError):
                api_failed += 1
            statuses.update(r["status"] for r in chaos.master.nodes())
            members = _agent_get(chaos, n2, "/v1/members")
            gossip.update(m["state"] for m in members if m["name"] == n1["name"])
            time.sleep(0.2)
        out, _ = flood.communicate(timeout=60)
    finally:
        if flood.poll() is None:
            flood.kill()
    header_bytes, header_conns, ws_bytes, _ = (int(x) for x in out.split())
    # the ingress still serves, from the same worker
    wait_until("node-1 serves on its published port", lambda: _served(n1["address"], chaos.port),
               timeout=30)
    after = _worker_pids(docker_client, n1)
    api_ms.sort()
    p99 = api_ms[int(len(api_ms) * 0.99) - 1] if api_ms else float("nan")
    record("flood on a published port", None, flood_s=FLOOD_S,
           header_mib=header_bytes / (1 << 20), header_connections=header_conns,
           ws_mib=ws_bytes / (1 << 20), api_polls=len(api_ms), api_failed=api_failed,
           api_p99_ms=p99, api_max_ms=api_ms[-1] if api_ms else None,
           node_statuses=sorted(statuses), gossip_states_of_node1=sorted(gossip),
           api_port=api_port, worker_restarts=0 if after == workers else "changed")
    assert header_bytes > 50 * (1 << 20)          # it was a flood
    assert api_failed == 0 and len(api_ms) >= FLOOD_S * 2
    assert api_ms[-1] < 2000, f"agent API took {api_ms[-1]:.0f} ms during the flood"
    assert statuses == {"ready"}, f"a node was seen {statuses} during the flood"
    assert gossip == {"alive"}, f"node-2 saw node-1 as {gossip} during the flood"
    assert after == workers                       # the worker took it without dying


def _served(host: str, port: int) -> bool:
    try:
        conn = http.client.HTTPConnection(host, port, timeout=5)
        conn.request("GET", "/")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False
