"""The edge through the real CLI against a real master: a host and path belong to one service
(``run`` and ``deploy`` refused, the stack at the host's ``file:line:col``, nothing applied);
a user's certificate is judged before it is stored (a mismatched key is an error at deploy and
at ``run``), stored with its key sealed, listed by ``cert ls`` (no key), and cannot be removed
while a service uses it; ``edge config`` changes the cluster's settings."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3

import pytest

from swarmlet import cluster as clusterlib
from swarmlet.master.runner import run_master
from swarmlet.webcerts import self_signed
from tests.conftest import free_port
from tests.integration.master.test_master_daemon import FAST, Env
from tests.support import CLI

pytestmark = pytest.mark.integration

LINE = "host shop.example.com path / is routed to service 'shop'"

STACK = """\
name: edge
services:
  web:
    image: swarmlet-hello:2
    ports: ["8080"]
    x-swarmlet:
      hosts: [www.example.com]
      tls: {cert: www.crt, key: www.key}
  other:
    image: swarmlet-hello:2
    ports: ["8080"]
    x-swarmlet:
      hosts:
        - other.example.com
        - shop.example.com
"""


async def test_hosts_and_certificates_through_the_cli(tmp_path, docker_client):
    env = Env(tmp_path / "home", docker_client)
    try:
        data = json.loads(env.c.path("cluster.json").read_text())
        data["master_port"] = free_port()
        env.c.path("cluster.json").write_text(json.dumps(data))
        env.c = clusterlib.load(env.c.home)
        env.master = await run_master(env.c.home, bind="127.0.0.1",
                                      config=FAST.__class__(**{**FAST.__dict__,
                                                               "edge_ports": (free_port(), free_port()),
                                                               "ingress_bind": "127.0.0.1"}))
        cli = CLI({**os.environ, "SWARMLET_HOME": str(env.c.home)})

        async def sw(*args: str, code: int = 0):
            p = await asyncio.to_thread(cli, *args, timeout=60)
            assert p.returncode == code, (args, p.stdout, p.stderr)
            return p

        await sw("run", "shop", "--image", "swarmlet-hello:2", "-p", "8080", "--host",
                 "shop.example.com", "--no-push")
        p = await sw("run", "other", "--image", "swarmlet-hello:2", "-p", "8080", "--host",
                     "shop.example.com", "--no-push", code=1)
        assert p.stderr == f"error: {LINE}\n", p.stderr
        await sw("run", "api", "--image", "swarmlet-hello:2", "-p", "8080", "--host",
                 "shop.example.com", "--path", "/api", "--no-push")          # another prefix

        cert, key = self_signed(["www.example.com"])
        _, other_key = self_signed(["www.example.com"])
        (tmp_path / "www.crt").write_bytes(cert)
        (tmp_path / "www.key").write_bytes(key)
        (tmp_path / "bad.key").write_bytes(other_key)
        stack = tmp_path / "stack.yml"
        stack.write_text(STACK)
        before = await sw("services", "-o", "json")
        p = await sw("deploy", "-f", str(stack), "--no-push", "-d", code=1)
        assert p.stderr.strip() == f"error: {stack}:15:11: {LINE}", p.stderr
        assert (await sw("services", "-o", "json")).stdout == before.stdout   # nothing applied

        # a mismatched key: at its line, before anything is sent
        stack.write_text(STACK.replace("key: www.key", "key: bad.key"))
        p = await sw("deploy", "-f", str(stack), "--no-push", "-d", code=1)
        assert f"{stack}:8:12: service 'web': the private key does not match" in p.stderr
        p = await sw("run", "secure", "--image", "swarmlet-hello:2", "-p", "8080", "--host",
                     "www.example.com", "--tls-cert", str(tmp_path / "www.crt"), "--tls-key",
                     str(tmp_path / "bad.key"), "--no-push", code=2)     # a usage error
        assert "does not match the certificate" in p.stderr
        # ...and the master refuses it too, for a client that skips the CLI
        with pytest.raises(Exception, match="does not match"):
            await env.call("PUT", "/v1/certs/www", {"cert": cert.decode(), "key": other_key.decode()})

        stack.write_text(STACK.replace("        - shop.example.com\n", ""))
        p = await sw("deploy", "-f", str(stack), "--no-push", "-d")
        assert "certificate web" in p.stdout, p.stdout
        rows = {r["name"]: r for r in json.loads((await sw("cert", "ls", "-o", "json")).stdout)}
        assert rows["web"]["hosts"] == ["www.example.com"] and rows["web"]["services"] == ["edge_web"]
        assert rows["web"]["source"] == "manual"
        p = await sw("cert", "ls")
        assert "www.example.com" in p.stdout and "PRIVATE" not in p.stdout
        p = await sw("cert", "rm", "web", code=1)
        assert "used by edge_web" in p.stderr
        db = sqlite3.connect(str(env.c.home / "master" / "state.db"))
        dump = "\n".join(str(r) for r in db.execute("SELECT value FROM meta"))
        db.close()
        assert "BEGIN CERTIFICATE" in dump and "PRIVATE KEY" not in dump   # the key is sealed

        await sw("cert", "add", "spare", "--cert", str(tmp_path / "www.crt"), "--key",
                 str(tmp_path / "www.key"))
        await sw("cert", "rm", "spare")

        p = await sw("edge", "config", "--acme-directory", "letsencrypt-staging",
                     "--default-service", "shop", "-o", "json")
        shown = json.loads(p.stdout)
        assert shown["acme_directory"].startswith("https://acme-staging-v02.")
        assert shown["default_service"] == "shop"
        p = await sw("edge", "config", "--acme-directory", "http://insecure.test/dir", code=1)
        assert "https://" in p.stderr
        await sw("edge", "config", "--acme-directory", "")       # no CA is ever asked
    finally:
        await env.close()
