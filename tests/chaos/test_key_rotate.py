"""``swarmlet key rotate`` on the lab under counted load (issue 13, finding 10).

The chaos cluster (3 nodes, hello with 3 replicas) serves counted load through the
master's load balancer and every node's ingress while the CLI rotates the gossip key.
Must show: 0 failed requests, no false suspicion (each agent's gossip counters:
no suspicion, no death, no packet refused for authentication), and every node — and
the admin host — left with the new key alone, in a 0600 file.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import re
import ssl
import time
from typing import Dict

import pytest

from tests.chaos.support import Load, node_exec, record, steady

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(420)]

COUNTERS = ("suspicions", "deaths", "dropped_auth", "dropped_unknown_sender", "refutes")


def _fp(b64: str) -> str:
    return hashlib.sha256(base64.b64decode(b64)).hexdigest()[:16]


def _gossip_counters(c) -> Dict[str, Dict[str, int]]:
    """Each node's gossip counters from its agent's /metrics (mutual TLS, cli certificate)."""
    ctx = c.master.cluster.client_ssl("cli")
    ctx.check_hostname = False          # addressed by IP; the certificate is the cluster CA's
    out: Dict[str, Dict[str, int]] = {}
    for row in c.master.nodes():
        conn = http.client.HTTPSConnection(row["address"], row["api_port"], context=ctx,
                                           timeout=10)
        try:
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode()
        finally:
            conn.close()
        got = {}
        for k in COUNTERS:
            m = re.search(rf"^swarmlet_agent_gossip_{k}_total (\d+)$", text, re.M)
            assert m, f"{row['name']}: no gossip counter {k} in /metrics"
            got[k] = int(m.group(1))
        out[row["name"]] = got
    return out


def test_key_rotate_under_load_fails_no_request_and_suspects_nobody(chaos):
    c = chaos
    steady(c.docker, c.nodes, c.master)
    old = json.loads((c.master.cluster.path("gossip.keys")).read_text())
    before = _gossip_counters(c)
    urls = [f"http://127.0.0.1:{c.port}/"] + [f"http://{n['address']}:{c.port}/" for n in c.nodes]
    statuses = set()
    with Load(urls, [c.subnet], concurrency=2) as load:
        time.sleep(2.0)                          # traffic flowing before the rotation
        t0 = time.monotonic()
        r = c.cli("key", "rotate", check=True, timeout=180)
        took = time.monotonic() - t0
        # A while on the new key alone: a node left on the old one would be suspected now.
        deadline = time.monotonic() + 12.0
        while time.monotonic() < deadline:
            statuses.update(n["status"] for n in c.master.nodes())
            time.sleep(0.5)
    after = _gossip_counters(c)
    new = json.loads((c.master.cluster.path("gossip.keys")).read_text())
    record("key rotate under load", load, rotate_s=round(took, 2),
           outcome="ok" if load.failed == 0 and after == before else "FAILED")
    assert load.failed == 0 and load.served > 100, load.summary()
    assert after == before, (before, after)       # no suspicion, death, or refused packet
    assert statuses <= {"ready"}, statuses
    # The CLI's report: every node through every step, the new primary named by fingerprint.
    for n in c.nodes:
        assert re.search(rf"^{re.escape(n['name'])}\s+ok\s+ok\s+ok\s+ok$", r.stdout, re.M), r.stdout
    assert len(new) == 1 and new[0] not in old and _fp(new[0]) in r.stdout
    assert new[0] not in r.stdout + r.stderr and old[0] not in r.stdout + r.stderr
    # Every node holds the new key alone, 0600.
    for n in c.nodes:
        out = node_exec(c.docker, n, "stat -c %a /etc/swarmlet/gossip.keys; "
                                     "cat /etc/swarmlet/gossip.keys")
        mode, text = out.split("\n", 1)
        assert mode.strip() == "600" and json.loads(text) == new, (n["name"], out)
    assert not c.master.cluster.path("rotation.json").exists()
