"""HTTPS at the edge on the lab (issue 18): certificates from Debian's pebble, served by every node.

Pebble and pebble-challtestsrv run on this host; pebble resolves each host name (through
challtestsrv) to a *different* lab node, and validates http-01 on that node's port 80, so the
node the CA connects to is not the master: the token must have reached it through the control
plane. Every node's ingress serves 80 and 443; the master's own LBs serve elsewhere
(``SWARMLET_MASTER_CONFIG``, with short ACME timings; the module restores the master's
config when it ends). Real curl with ``--resolve`` and real TLS clients check every node.

In order, on the shared cluster (one lab for all e2e modules), with the stack ``edge``:
1. two services on two host names get certificates chaining to pebble's root; every node's
   :443 gives the right service, :80 redirects, a tls: off host is served on :80, an unknown
   host gets a 404;
2. a host whose validation cannot succeed: a clear failed event with the CA's reason, and plain
   HTTP and the other hosts keep working on every node;
3. a node killed (SIGKILL) as a certificate is being ordered, while the master still counts
   it as up: the order completes, and the node serves the certificate once it is back;
4. renewal (pebble's certificates last ``VALIDITY`` s, renewed in their last third): the new
   certificate is served by every node, with 0 failed requests of a load of new TLS
   connections spread over all nodes.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from typing import Any, Callable, Dict, List, Tuple

import pytest

from swarmlet.webcerts import chain_info
from tests.conftest import free_port
from tests.tools.pebble import Pebble

# The first test of this module may also pay for the shared lab (up, join, load): a bound of
# its own, like the chaos modules'.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

STACK_NAME = "edge"
VALIDITY = 60            # pebble's certificate lifetime: renewed 40 s after issuance

STACK = f"""\
name: {STACK_NAME}
services:
  shop:
    image: swarmlet-hello:1
    ports: ["8080"]
    deploy: {{replicas: 2}}
    x-swarmlet:
      health: /health
      hosts: [shop.example.com]
      tls: acme
      hsts: 600
  api:
    image: swarmlet-hello:1
    ports: ["8080"]
    deploy: {{replicas: 2}}
    x-swarmlet:
      health: /health
      hosts: [api.example.com]
      path: /
      tls: acme
  plain:
    image: swarmlet-hello:1
    ports: ["8080"]
    x-swarmlet:
      health: /health
      hosts: [plain.example.com]
"""


def svc(name: str) -> str:
    """The full name of a service of the stack (what hello reports as ``service``)."""
    return f"{STACK_NAME}_{name}"


def wait_until(what: str, pred: Callable[[], Any], timeout: float = 90.0, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = pred()
            if last:
                return last
        except Exception as exc:  # the probe's own failure: keep trying until the deadline
            last = exc
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", "10", *args], capture_output=True,
                          text=True, timeout=20)


def curl_get(host: str, port: int, addr: str, url: str, *extra: str) -> Tuple[int, str, str]:
    """(status, head, body) of one request to ``addr:port`` for ``host``. The head goes to its
    own file: mixed into stdout it cannot be cut from the body reliably (``text=True`` turns
    its CRLFs into LFs)."""
    with tempfile.NamedTemporaryFile("r", suffix=".head") as head:
        r = curl("--resolve", f"{host}:{port}:{addr}", "-D", head.name, "-w", "\n%{http_code}",
                 *extra, url)
        assert r.returncode == 0, (addr, host, url, r.stderr)
        body, _, code = r.stdout.rpartition("\n")
        return int(code), head.read(), body


def tls_context(root_pem: str) -> ssl.SSLContext:
    """Trusts pebble's root only, checks the host name, as a browser would."""
    return ssl.create_default_context(cadata=root_pem)


def served_cert(address: str, host: str, ctx: ssl.SSLContext) -> Tuple[str, Dict]:
    """(fingerprint of the served leaf, the answer's JSON) from ``address``:443 for ``host``."""
    with socket.create_connection((address, 443), timeout=5) as raw:
        raw.settimeout(5)
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            der = s.getpeercert(binary_form=True)
            s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while len(data) < 1 << 20:
                piece = s.recv(65536)
                if not piece:
                    break
                data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    fp = chain_info(ssl.DER_cert_to_PEM_cert(der).encode()).fingerprint
    return fp, json.loads(body)


def nodes_ready(cluster) -> bool:
    rows = cluster.cli.json("nodes")
    return len(rows) == len(cluster.nodes) and all(r["status"] == "ready" for r in rows)


def restart_master(cluster) -> None:
    cluster.cli("master", "stop", check=True, timeout=60)
    cluster.cli("master", "start", check=True, timeout=60)
    wait_until("every node ready under the restarted master", lambda: nodes_ready(cluster),
               timeout=60)


@pytest.fixture(scope="module")
def edge(cluster):
    cli = cluster.cli
    addrs = [n["address"] for n in cluster.nodes]
    pebble = Pebble.start(http_port=80, validity=VALIDITY, default_ip=addrs[0])
    tmp = tempfile.mkdtemp(prefix="swt-edge-")
    env = dict(cli.env)
    try:
        # each host name resolves to another node: the CA never talks to the master
        pebble.set_a("shop.example.com", [addrs[1]])
        pebble.set_a("api.example.com", [addrs[2]])
        pebble.set_a("late.example.com", [addrs[0]])
        pebble.set_a("broken.example.com", ["127.0.0.1"])     # nothing serves port 80 there
        ca = os.path.join(tmp, "pebble-listener-ca.pem")
        with open(ca, "w") as fh:
            fh.write(pebble.ca_bundle)
        root_pem = pebble.root_pem()
        root = os.path.join(tmp, "pebble-root.pem")
        with open(root, "w") as fh:
            fh.write(root_pem)
        cli.env = {**env, "SWARMLET_MASTER_CONFIG": json.dumps({
            "edge_ports": [free_port(), free_port()], "acme_interval": 1.0,
            "acme_backoff": {"base": 3, "cap": 15}, "acme_order_timeout": 30})}
        restart_master(cluster)
        cli("edge", "config", "--acme-directory", pebble.directory, "--acme-ca", ca,
            "--acme-email", "ops@example.com", check=True, timeout=30)
        stack = os.path.join(tmp, "stack.yml")
        with open(stack, "w") as fh:
            fh.write(STACK)
        r = cli("deploy", "-f", stack, "--no-push", timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        yield {"cluster": cluster, "pebble": pebble, "root": root, "ctx": tls_context(root_pem),
               "addrs": addrs}
    finally:
        cli("stack", "rm", STACK_NAME, timeout=120)
        cli("rm", "late", "broken", timeout=60)
        cli("edge", "config", "--acme-directory", "", "--acme-email", "", timeout=30)
        cli.env = env
        restart_master(cluster)
        pebble.stop()


def certs(cluster) -> Dict[str, Dict]:
    return {r["name"]: r for r in cluster.cli.json("cert", "ls")}


def status_of(cluster, host: str) -> str:
    return certs(cluster).get(host, {}).get("status", "")


def test_two_hosts_get_certificates_and_every_node_serves_them(edge):
    c = edge["cluster"]
    rows = wait_until("both certificates", lambda: (lambda r: r if all(
        r.get(h, {}).get("status") == "valid" for h in ("shop.example.com", "api.example.com"))
        else None)(certs(c)), timeout=120)
    for h in ("shop.example.com", "api.example.com"):
        assert rows[h]["issuer"].startswith("CN=Pebble Intermediate"), rows[h]
        assert rows[h]["hosts"] == [h] and rows[h]["services"] == [svc(h.split(".")[0])], rows[h]
    for addr in edge["addrs"]:
        for host, name in (("shop.example.com", "shop"), ("api.example.com", "api")):
            # every node's agent has the certificate as soon as it is stored; its ingress
            # workers take it within a second. curl trusts pebble's root only.
            code, head, body = wait_until(f"{host} on {addr}", lambda: (lambda r: r if r[0] == 200
                                                                        else None)(
                curl_get(host, 443, addr, f"https://{host}/", "--cacert", edge["root"])), timeout=30)
            assert json.loads(body)["service"] == svc(name), (addr, host, head, body)
            if name == "shop":
                assert "strict-transport-security: max-age=600" in head.lower(), head
            code, head, _ = curl_get(host, 80, addr, f"http://{host}/cart?x=1")
            assert code == 308 and f"location: https://{host}/cart?x=1" in head.lower(), (addr, head)
        code, _, body = curl_get("plain.example.com", 80, addr, "http://plain.example.com/")
        assert code == 200 and json.loads(body)["service"] == svc("plain"), (addr, body)
        code, _, _ = curl_get("nobody.example.com", 80, addr, "http://nobody.example.com/")
        assert code == 404, addr
        # and the TLS client of the renewal test sees the same chain
        assert served_cert(addr, "api.example.com", edge["ctx"])[1]["service"] == svc("api")


def test_a_challenge_that_cannot_be_answered_fails_clearly_and_the_rest_keeps_working(edge):
    c = edge["cluster"]
    c.cli("run", "broken", "--image", "swarmlet-hello:1", "-p", "8080", "--host",
          "broken.example.com", "--tls", "acme", "--no-push", check=True, timeout=60)
    row = wait_until("the failure", lambda: (lambda r: r if r and r.get("status") == "failed" else None)(
        certs(c).get("broken.example.com")), timeout=90)
    assert "could not validate" in row["last_error"] and "broken.example.com" in row["last_error"], row
    ev = [e for e in c.cli.json("events", "--limit", "300")
          if e["kind"] == "cert" and e["subject"] == "broken.example.com"]
    assert ev and "failed" in ev[-1]["message"] and "next attempt in" in ev[-1]["message"], ev
    assert "could not validate" in ev[-1]["message"], ev[-1]
    for addr in edge["addrs"]:
        assert served_cert(addr, "shop.example.com", edge["ctx"])[1]["service"] == svc("shop")
        assert served_cert(addr, "api.example.com", edge["ctx"])[1]["service"] == svc("api")
        code, _, body = curl_get("plain.example.com", 80, addr, "http://plain.example.com/")
        assert code == 200 and json.loads(body)["service"] == svc("plain"), (addr, body)


def test_a_node_killed_during_issuance_does_not_stop_it(edge, docker_client):
    c = edge["cluster"]
    victim = c.nodes[2]
    # `run` makes the host due; the ACME manager orders it within its 1 s interval, and an
    # order takes a second or more (pebble validates, the manager polls). The node is killed
    # (SIGKILL, no goodbye) as soon as the service exists, so it dies after the host became
    # due and before the certificate comes; the master counts it as up for 2 s more, so the
    # order's tokens are sent to a node that does not answer.
    r = c.cli("run", "late", "--image", "swarmlet-hello:1", "-p", "8080", "--host",
              "late.example.com", "--tls", "acme", "--no-push", timeout=60)
    docker_client.containers.get(victim["name"]).kill()
    killed_at = time.time()
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        wait_until("late.example.com issued with a node dead", lambda: status_of(
            c, "late.example.com") == "valid", timeout=90)
        issued = [e for e in c.cli.json("events", "--limit", "400") if e["kind"] == "cert"
                  and e["subject"] == "late.example.com" and "issued for" in e["message"]]
        assert len(issued) == 1 and issued[0]["ts"] > killed_at, (issued, killed_at)
        for addr in edge["addrs"][:2]:
            wait_until(f"late.example.com on {addr}", lambda: served_cert(
                addr, "late.example.com", edge["ctx"])[1]["service"] == "late", timeout=30)
    finally:
        c.cli("lab", "start", victim["name"], check=True, timeout=120)
        wait_until("the node ready again", lambda: any(
            r["name"] == victim["name"] and r["status"] == "ready" for r in c.cli.json("nodes")),
            timeout=120)
    # the node that was dead gets the certificate when it comes back
    wait_until("late.example.com on the returned node", lambda: served_cert(
        victim["address"], "late.example.com", edge["ctx"])[1]["service"] == "late", timeout=60)


def test_renewal_reaches_every_node_with_no_failed_request(edge):
    c = edge["cluster"]
    ctx = edge["ctx"]
    first = certs(c)["shop.example.com"]["fingerprint"]
    stop = threading.Event()
    lock = threading.Lock()
    counts = {"ok": 0, "failed": 0}
    errors: List[str] = []
    seen: Dict[str, str] = {}

    def load(addr: str) -> None:
        # bounded: stops when told, or after 3 minutes whatever happens
        deadline = time.monotonic() + 180
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                fp, body = served_cert(addr, "shop.example.com", ctx)
                assert body["service"] == svc("shop"), body
                with lock:
                    counts["ok"] += 1
                    seen[addr] = fp
            except Exception as exc:  # every failure is counted and shown
                with lock:
                    counts["failed"] += 1
                    errors.append(f"{addr}: {exc!r}")
            time.sleep(0.02)
    # a new TLS connection per request, 2 clients per node
    threads = [threading.Thread(target=load, args=(a,), daemon=True) for a in edge["addrs"] for _ in range(2)]
    for t in threads:
        t.start()
    try:
        new = wait_until("the renewal", lambda: (lambda r: r if r["fingerprint"] != first else None)(
            certs(c)["shop.example.com"]), timeout=VALIDITY + 30)
        wait_until("every node serving the new certificate", lambda: all(
            seen.get(a) == new["fingerprint"] for a in edge["addrs"]), timeout=30)
        time.sleep(1)
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    assert counts["ok"] > 50 and counts["failed"] == 0, (counts, errors[:5])
    assert any("renewed for shop.example.com" in e["message"]
               for e in c.cli.json("events", "--limit", "400"))
