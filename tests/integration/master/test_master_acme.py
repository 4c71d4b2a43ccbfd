"""ACME on loopback against Debian's pebble: a real master, real agents on the local dockerd,
the master's own edge answering the CA's http-01 validation.

One test, in steps (pebble, containers and the master are shared, to keep the suite fast):
two services with two host names get certificates that chain to pebble's root; HTTPS serves
the right service per SNI, HTTP redirects; an account key and the certificates' keys are
sealed in the store (no PEM key in state.db); a host whose validation cannot succeed gets a
failed event with the CA's reason while the others keep working; and with pebble's
certificates lasting 24 s, the master renews them by itself and the new certificate is
served with no failed request under load.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import ssl
import time
from dataclasses import replace

import pytest

from swarmlet.master.acmeplan import Backoff
from swarmlet.master.runner import run_master
from swarmlet.shipped.models import EdgeSpec, HealthCheck, PortSpec, ServiceSpec, to_wire
from tests.conftest import free_port
from tests.integration.agent.conftest import agent_image  # noqa: F401  (fixture)
from tests.integration.lb.test_edge import client_ctx, http, https
from tests.integration.master.test_master_daemon import FAST, Env, healthy
from tests.tools.pebble import Pebble

pytestmark = pytest.mark.integration

VALIDITY = 24          # seconds: renewal a third before the end, at ~16 s


def spec(name: str, host: str) -> ServiceSpec:
    return ServiceSpec(name, "swarmlet-hello:1", replicas=1, ports=(PortSpec(8080),),
                       health=HealthCheck(kind="http", path="/health", interval=0.5, retries=2),
                       edge=EdgeSpec(hosts=(host,), tls="acme", hsts=300))


async def _until(what: str, probe, timeout: float = 40.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = await probe()
            if last:
                return last
        except (OSError, ssl.SSLError, asyncio.TimeoutError) as exc:
            last = exc
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


async def test_acme_issue_fail_and_renew_against_pebble(tmp_path, docker_client):
    hp, sp = free_port(), free_port()
    pebble = Pebble.start(http_port=hp, validity=VALIDITY)
    env = Env(tmp_path / "home", docker_client)
    try:
        a = await env.agent("a")
        cfg = replace(FAST, edge_ports=(hp, sp), ingress_bind="127.0.0.1",
                      acme_backoff=Backoff(base=2.0, cap=10.0),
                      acme_interval=1.0, acme_order_timeout=20.0)
        env.master = await run_master(env.c.home, bind="127.0.0.1", port=0, config=cfg)
        await env.register(a)
        out = await env.call("PATCH", "/v1/edge", {"acme_directory": pebble.directory,
                                                   "acme_ca_bundle": pebble.ca_bundle,
                                                   "acme_email": "ops@example.com"})
        assert out["acme_directory"] == pebble.directory and out["acme_ca_bundle"] is True
        for name, host in (("shop", "shop.example.com"), ("api", "api.example.com")):
            await env.call("POST", "/v1/services", to_wire(spec(name, host)))
        await env.wait("2 healthy", lambda r: healthy(r, 2))

        async def certs():
            return {r["name"]: r for r in await env.call("GET", "/v1/certs")}
        await _until("both certificates", lambda: _valid(certs, ["shop.example.com",
                                                                 "api.example.com"]))
        ctx = client_ctx()
        ctx.check_hostname, ctx.verify_mode = True, ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=pebble.root_pem())
        for host, service in (("shop.example.com", "shop"), ("api.example.com", "api")):
            status, headers, body, info = await _until(
                f"{host} over HTTPS", lambda: https(sp, host, "/", ctx=ctx))
            assert status == 200 and json.loads(body)["service"] == service
            assert headers["strict-transport-security"] == "max-age=300"
            status, headers, _ = await http(hp, host, "/x?y=1")
            assert status == 308 and headers["location"] == f"https://{host}:{sp}/x?y=1"
        rows = await certs()
        assert rows["shop.example.com"]["source"] == "acme" and rows["shop.example.com"]["services"] == ["shop"]

        # keys are sealed at rest: no private key in the store, the account's included
        db = sqlite3.connect(str(env.c.home / "master" / "state.db"))
        dump = "\n".join(str(r) for r in db.execute("SELECT key, value FROM meta"))
        db.close()
        assert "webcert/acme/shop.example.com" in dump and "acme_account" in dump
        assert "PRIVATE KEY" not in dump

        # a host the CA cannot validate (its name resolves where nothing listens: the edge
        # is bound to 127.0.0.1 only)
        pebble.set_a("nowhere.example.com", ["127.0.0.9"])
        await env.call("POST", "/v1/services", to_wire(spec("nowhere", "nowhere.example.com")))

        async def failed():
            rows = await certs()
            r = rows.get("nowhere.example.com")
            return r if r and r.get("status") == "failed" else None
        row = await _until("the failure", failed)
        assert "could not validate" in row["last_error"] and "nowhere.example.com" in row["last_error"]
        events = await env.call("GET", "/v1/events?limit=200")
        failed_ev = [e for e in events if e["kind"] == "cert" and "nowhere" in e["subject"]]
        assert failed_ev and "failed" in failed_ev[-1]["message"] and \
            "next attempt in" in failed_ev[-1]["message"], failed_ev
        assert any(e["kind"] == "cert" and "issued for shop.example.com" in e["message"]
                   for e in events)
        # ...and the others keep working, over HTTPS and plain HTTP
        assert (await https(sp, "shop.example.com", "/", ctx=ctx))[0] == 200
        assert (await http(hp, "nowhere.example.com", "/"))[0] == 308

        # renewal: a new certificate, served with no failed request under load
        first = rows["shop.example.com"]["fingerprint"]
        stop = asyncio.Event()
        counts = {"ok": 0, "failed": 0}

        async def load():
            while not stop.is_set():
                try:
                    st = (await https(sp, "shop.example.com", "/", ctx=ctx))[0]
                    counts["ok" if st == 200 else "failed"] += 1
                except (OSError, ssl.SSLError, asyncio.TimeoutError):
                    counts["failed"] += 1
        loaders = [asyncio.create_task(load()) for _ in range(3)]

        async def renewed():
            r = (await certs())["shop.example.com"]
            return r if r["fingerprint"] != first else None
        new = await _until("the renewal", renewed, timeout=VALIDITY + 20)
        stop.set()
        await asyncio.gather(*loaders)
        assert counts["ok"] > 20 and counts["failed"] == 0, counts
        info = (await https(sp, "shop.example.com", "/", ctx=ctx))[3]
        served = ssl.DER_cert_to_PEM_cert(info["peer"])
        from swarmlet.webcerts import chain_info
        assert chain_info(served.encode()).fingerprint == new["fingerprint"]
        events = await env.call("GET", "/v1/events?limit=300")
        assert any("renewed for shop.example.com" in e["message"] for e in events)
    finally:
        await env.close()
        pebble.stop()


async def _valid(certs, names):
    rows = await certs()
    return all(rows.get(n, {}).get("status") == "valid" for n in names)
