"""Bad input against the chaos cluster (issue 9): API calls without a client
certificate or with another cluster's, malformed stack files through the CLI,
and SSH to a node whose host key changed.

The in-process versions live in tests/integration (test_mtls.py,
provision/test_join_errors.py) and tests/unit/stack; these run against the
real master and real lab agents. The host-key test changes a node's identity,
so this file runs after test_faults.py (file order).
"""

from __future__ import annotations

import http.client
import ssl

import pytest

from swarmlet import pki
from swarmlet.shipped import tlsutil
from tests.chaos.support import healthy, node_exec, record, wait_until

pytestmark = pytest.mark.chaos

REFUSED = (ssl.SSLError, ConnectionError, http.client.RemoteDisconnected, OSError)


def _get(host: str, port: int, path: str, ctx: ssl.SSLContext):
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def certs(chaos, tmp_path_factory):
    """Client contexts: the cluster's cli, none, another CA's cli, the cluster's agent role."""
    d = tmp_path_factory.mktemp("certs")
    ca = str(chaos.master.cluster.path("ca.crt"))

    def ctx_for(kp=None) -> ssl.SSLContext:
        if kp is None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.load_verify_locations(ca)
            ctx.check_hostname = False
            return ctx
        crt, key = d / f"{id(kp)}.crt", d / f"{id(kp)}.key"
        crt.write_bytes(kp.cert_pem)
        key.write_bytes(kp.key_pem)
        return tlsutil.client_context(str(crt), str(key), ca, check_hostname=False)

    other = pki.create_ca("another-cluster")
    return {
        "cli": ctx_for(pki.issue(chaos.master.cluster.ca(), "admin", "cli")),
        "none": ctx_for(None),
        "foreign": ctx_for(pki.issue(other, "admin", "cli")),
        "agent-role": ctx_for(chaos.master.cluster.issue_agent("impostor", [])),
    }


def _targets(chaos):
    port = chaos.master.cluster.master_port
    return [("master", "127.0.0.1", port, "/v1/status")] + [
        (n["name"], n["address"], chaos.master.cluster.api_port, "/v1/info") for n in chaos.nodes]


def test_api_refuses_missing_and_foreign_client_certificates(chaos, certs):
    outcomes = {}
    for name, host, port, path in _targets(chaos):
        assert _get(host, port, path, certs["cli"])[0] == 200            # the control: accepted
        for who in ("none", "foreign"):
            with pytest.raises(REFUSED):
                status, body = _get(host, port, path, certs[who])
                raise AssertionError(f"{name} answered {status} {body[:100]!r} to {who}")
            outcomes[f"{name}/{who}"] = "refused"
    # a certificate of the cluster CA, but an agent's: the handshake passes, the role does not
    for name, host, port, path in _targets(chaos)[1:]:
        status, _ = _get(host, port, path, certs["agent-role"])
        assert status == 403, (name, status)
        outcomes[f"{name}/agent-role"] = status
    record("bad input: mTLS", None, outcome="ok", **{"refusals": outcomes})


MALFORMED = {
    "binary": b"\x00\x01\xffservices\x00\x9f" * 20,
    "not_a_mapping": b"- web\n- db\n",
    "services_list": b"services:\n  - image: x\n",
    "deep_nesting": b"services:\n  web:\n    image: x\n    labels: " + b"[" * 5000 + b"]" * 5000 + b"\n",
    "alias_bomb": (b"a: &a [x, x, x, x, x, x, x, x, x, x]\n"
                   + b"".join(b"%c: &%c [*%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c]\n"
                              % ((98 + i, 98 + i) + (97 + i,) * 10) for i in range(8))
                   + b"services:\n  web:\n    image: x\n    labels: *i\n"),
    "half_valid": b"services:\n  ok:\n    image: x\n  bad:\n    image: y\n    deploy: {replicas: -3}\n",
    "huge_port": b"services:\n  web:\n    image: x\n    ports: ['8080:80808080']\n",
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_stack_files_get_one_clear_error_and_change_nothing(chaos, tmp_path, case):
    before = chaos.cli.json("services")
    path = tmp_path / "stack.yml"
    path.write_bytes(MALFORMED[case])
    r = chaos.cli("deploy", "-f", str(path), timeout=60)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}"), r.stderr
    assert "expected" in lines[0], lines[0]
    assert chaos.cli.json("services") == before


def test_ssh_to_a_node_whose_host_key_changed_is_refused(chaos):
    node = chaos.nodes[2]
    known = chaos.master.cluster.known_hosts.read_text()
    # the node gets a new identity, as a reinstalled (or impersonated) server would
    node_exec(chaos.docker, node, "rm -f /etc/ssh/ssh_host_*key* && ssh-keygen -A >/dev/null "
              "&& systemctl restart ssh")
    for flags in ([], ["--accept-new-host-key"]):
        r = chaos.cli("join", "-i", node["key"], *flags, node["ssh"], timeout=120)
        assert r.returncode != 0 and "Traceback" not in r.stderr, r.stdout + r.stderr
        assert "host key has CHANGED" in r.stdout + r.stderr, r.stdout + r.stderr
    assert chaos.master.cluster.known_hosts.read_text() == known        # not overwritten
    # nothing else happened to the node: it still serves its replica
    wait_until("the node still ready with its replica", lambda: any(
        r["node"] == node["name"] for r in healthy(chaos.master.tasks())), timeout=30)
    record("bad input: changed SSH host key", None, outcome="refused")
