"""The multi-service example on the lab: `web` reaches `store` by its name
from every node (service discovery), and `store` keeps its data in a named
volume across a rolling update."""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.e2e

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STACK = os.path.join(REPO, "examples", "multi", "stack.yml")


def http(method: str, url: str, data: bytes = None):
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def eventually(fn, want, timeout=60.0):
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        try:
            got = fn()
            if got == want:
                return got
        except OSError as exc:
            got = exc
        time.sleep(0.5)
    raise AssertionError(f"wanted {want!r}, last got {got!r}")


@pytest.fixture(scope="module")
def multi(cluster):
    ports = {"WEB_PORT": str(free_port()), "STORE_PORT": str(free_port())}
    env = {**cluster.cli.env, **ports}
    cli = type(cluster.cli)(env)
    r = cli("deploy", "-f", STACK, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    yield cli, int(ports["WEB_PORT"]), int(ports["STORE_PORT"])
    cli("rm", "web", "store")


def test_services_find_each_other_by_name_from_every_node(multi, cluster):
    cli, web, store = multi
    assert eventually(lambda: http("PUT", f"http://127.0.0.1:{store}/kv/greeting", b"hi")[0], 201) == 201
    call = f"/call?host=store&port=8080&path=/kv/greeting"
    eventually(lambda: http("GET", f"http://127.0.0.1:{web}{call}"), (200, "hi"))
    # each web replica (on different nodes) resolves `store` through its own node's forwarder
    hosts = {r["node"] for r in cli.json("ps", "web") if r["state"] == "running"}
    assert len(hosts) == 2
    for _ in range(6):
        assert http("GET", f"http://127.0.0.1:{web}{call}") == (200, "hi")


def test_named_volume_keeps_its_data_across_an_update(multi):
    cli, web, store = multi
    before = {r["node"] for r in cli.json("ps", "store") if r["state"] == "running"}
    r = cli("update", "store", "-e", "GREETING_VERSION=2", timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    after = [r for r in cli.json("ps", "store") if r["state"] == "running"]
    assert {r["node"] for r in after} == before and after[0]["revision"] >= 2
    eventually(lambda: http("GET", f"http://127.0.0.1:{store}/kv/greeting"), (200, "hi"))
