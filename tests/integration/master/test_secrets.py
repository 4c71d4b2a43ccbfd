"""Secrets end to end on one machine: the real master (SQLite store, vault), real agents
in-process, real dockerd, mutual TLS.

A secret is created, mounted by a service, read inside its container; the value is not in
``docker inspect`` (env, labels, bind source), not in the agent's stored assignment, not on
a node that runs no task using it, not in the store in clear, and in nothing the API
answers. ``rotate`` rolls the service to the new version; ``rm`` is refused while in use;
after an agent restart and a master restart the tasks keep their files and new ones get
the value (the data key unwraps again); after a "reboot" (tmpfs emptied, containers stopped)
the master sends the values again and the tasks run with them.
"""

from __future__ import annotations

import base64
import json
import os
import secrets as random
import shutil
import uuid

import pytest

from swarmlet.shipped.exceptions import APIError
from swarmlet.shipped.models import SecretRef, ServiceSpec, to_wire
from tests.integration.master.test_master_daemon import Env
from tests.integration.agent.conftest import agent_image  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration


@pytest.fixture
def shm():
    """A tmpfs folder for the agents' secrets_dir (this machine's /run is not a tmpfs)."""
    if not os.path.ismount("/dev/shm"):
        pytest.fail("/dev/shm must be a tmpfs for this test")
    d = f"/dev/shm/swt-secrets-{uuid.uuid4().hex[:8]}"
    os.makedirs(d, mode=0o700)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def healthy(rows, n: int) -> bool:
    live = [r for r in rows if r["desired"] == "running"]
    return len(live) == n and all(r["state"] == "running" and r["health"] in ("healthy", "none")
                                  for r in live)


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _exec(container, cmd):
    code, out = container.exec_run(cmd)
    return code, out.decode(errors="replace")


def _everything(env, *dirs) -> bytes:
    out = b""
    for d in dirs:
        for root, _, files in os.walk(d):
            for f in files:
                try:
                    with open(os.path.join(root, f), "rb") as fh:
                        out += fh.read()
                except OSError:
                    pass
    return out


async def test_secret_reaches_only_its_container_rotates_and_survives_restarts(
        tmp_path, docker_client, agent_image, shm):
    env = Env(tmp_path / "home", docker_client)
    value = ("pw-" + random.token_hex(16)).encode()
    try:
        a = await env.agent("a", secrets_dir=f"{shm}/a")
        b = await env.agent("b", secrets_dir=f"{shm}/b")
        await env.start_master()
        await env.register(a)
        await env.register(b)
        out = await env.call("POST", "/v1/secrets", {"name": "db-password", "data": _b64(value)})
        assert out == {"name": "db-password", "kind": "secret", "version": 1}
        with pytest.raises(APIError) as exc:                 # create twice: 409
            await env.call("POST", "/v1/secrets", {"name": "db-password", "data": _b64(b"x")})
        assert exc.value.status == 409
        with pytest.raises(APIError) as exc:                 # an unknown secret: 400, named
            await env.call("POST", "/v1/services", to_wire(ServiceSpec(
                "web", agent_image, secrets=(SecretRef("nope", "nope"),))))
        assert "secret 'nope' does not exist" in str(exc.value)
        spec = ServiceSpec("web", agent_image, replicas=1, constraints=(f"node.name=={a.config.name}",),
                           secrets=(SecretRef("db-password", "db-password", uid="1000", gid="1001",
                                              mode=0o440),))
        await env.call("POST", "/v1/services", to_wire(spec))
        rows = await env.wait("web running", lambda r: healthy(r, 1))
        assert rows[0]["node"] == a.config.name
        (c,) = env.containers("web")
        assert _exec(c, ["cat", "/run/secrets/db-password"]) == (0, value.decode())
        code, ls = _exec(c, ["busybox", "ls", "-ln", "/run/secrets/db-password"])
        assert code == 0 and ls.split()[0] == "-r--r-----" and ls.split()[2:4] == ["1000", "1001"]
        code, _ = _exec(c, ["sh", "-c", "echo x > /run/secrets/db-password"])
        assert code != 0                                       # read-only

        # docker inspect: no value in env, labels, or any mount's source
        info = docker_client.api.inspect_container(c.id)
        assert value.decode() not in json.dumps(info)
        # the stored assignment and the other node's folders hold nothing of it
        assert value not in _everything(env, a.config.state_dir, b.config.state_dir, f"{shm}/b")
        status, got = 0, await env.client.call(
            __import__("swarmlet.client", fromlist=["agent_peer"]).agent_peer(
                b.config.name, "127.0.0.1", b.api_port), "GET", "/v1/assignment")
        assert "db-password" not in json.dumps(got)
        # the store on disk holds ciphertext only; the key is beside, not in, it
        db = (env.c.master_dir / "state.db").read_bytes() + _everything(env, str(env.c.master_dir))
        assert value not in db
        # nothing the API answers shows it
        shown = json.dumps([await env.call("GET", p) for p in (
            "/v1/secrets", "/v1/secrets/db-password", "/v1/services", "/v1/tasks",
            "/v1/events?limit=1000")])
        assert value.decode() not in shown and "db-password" in shown
        with pytest.raises(APIError) as exc:                  # in use: refused, naming the service
            await env.call("DELETE", "/v1/secrets/db-password")
        assert exc.value.status == 409 and "in use by service web" in str(exc.value)

        # rotate: a new version, the service rolls to it
        new = ("pw2-" + random.token_hex(16)).encode()
        out = await env.call("POST", "/v1/secrets/db-password/rotate", {"data": _b64(new)})
        assert out["version"] == 2 and out["services"] == ["web"]
        await env.wait("web on revision 2", lambda r: healthy(r, 1) and all(
            t["revision"] == 2 for t in r if t["desired"] == "running"))
        (c,) = [x for x in env.containers("web") if x.labels["io.swarmlet.revision"] == "2"]
        assert _exec(c, ["cat", "/run/secrets/db-password"]) == (0, new.decode())
        svc = await env.call("GET", "/v1/services/web")
        assert svc["spec"]["secrets"][0]["version"] == 2
        # the old value leaves the node once no task uses it
        await env.wait("old value gone", lambda r: value not in _everything(env, f"{shm}/a"))

        # agent restart: the task keeps its file, and the agent still has the value
        await a.stop()
        a2 = await env.agent("a", secrets_dir=f"{shm}/a")
        assert ("secret", "db-password", 2) in a2.secret_files.held
        assert _exec(c, ["cat", "/run/secrets/db-password"]) == (0, new.decode())

        # master restart: the data key unwraps, a new replica gets the value
        await env.master.close()
        await env.start_master()
        await env.register(a2, move=True)
        await env.call("PATCH", "/v1/services/web", {"replicas": 2})
        await env.wait("2 replicas", lambda r: healthy(r, 2))
        for x in env.containers("web"):
            assert _exec(x, ["cat", "/run/secrets/db-password"]) == (0, new.decode())
        # a reboot: the tmpfs is gone and the containers stopped; the values come back
        await a2.stop()
        for x in env.containers("web"):
            x.stop(timeout=1)
        shutil.rmtree(f"{shm}/a")
        a3 = await env.agent("a", secrets_dir=f"{shm}/a")
        await env.register(a3, move=True)          # a new agent: a new ephemeral API port
        await env.wait("2 replicas after the reboot", lambda r: healthy(r, 2), timeout=60)
        for x in env.containers("web"):
            assert _exec(x, ["cat", "/run/secrets/db-password"]) == (0, new.decode())
        await env.call("DELETE", "/v1/services/web")
        await env.wait("web gone", lambda r: not [t for t in r if t["desired"] == "running"])
        out = await env.call("DELETE", "/v1/secrets/db-password")
        assert out["removed"] == 2
    finally:
        await env.close()


async def test_stack_file_secrets_make_versions_only_when_changed(tmp_path, docker_client):
    """A stack's secret from a file: version 1 at the first deploy, nothing at a re-deploy of
    the same file, version 2 (and a new revision of the service) when the file changed; the
    plan names versions, never the value. A service refers to it by version: rollback
    restores the older one."""
    from swarmlet.stack import load_stack
    env = Env(tmp_path / "home", docker_client)
    pw = tmp_path / "pw.txt"
    first, second = "first-" + random.token_hex(8), "second-" + random.token_hex(8)
    pw.write_text(first)
    path = tmp_path / "stack.yml"
    path.write_text("name: shop\nservices:\n  web:\n    image: img:1\n    secrets: [pw]\n"
                    "secrets:\n  pw:\n    file: ./pw.txt\n")

    def body(dry_run):
        st = load_stack(str(path), {})
        return {"services": [to_wire(s) for s in st.services], "dry_run": dry_run,
                "secrets": [{"kind": v.kind, "name": v.name, "data": _b64(v.data)} for v in st.values]}
    try:
        await env.start_master()
        plan = await env.call("POST", "/v1/stacks/shop", body(True))
        assert plan["secrets"] == [{"kind": "secret", "name": "shop_pw", "version": 1}]
        assert "secret shop_pw: new version 1" in plan["text"]
        assert await env.call("GET", "/v1/secrets") == []             # a dry run stores nothing
        out = await env.call("POST", "/v1/stacks/shop", body(False))
        assert out["applied"] == [{"name": "shop_web", "action": "create", "revision": 1}]
        svc = await env.call("GET", "/v1/services/shop_web")
        assert svc["spec"]["secrets"][0]["source"] == "shop_pw" and svc["spec"]["secrets"][0]["version"] == 1
        again = await env.call("POST", "/v1/stacks/shop", body(False))
        assert again["applied"] == [] and again["secrets"] == [] and not again["has_changes"]
        pw.write_text(second)
        plan = await env.call("POST", "/v1/stacks/shop", body(True))
        assert [c["name"] for c in plan["update"]] == ["shop_web"] and plan["update"][0]["rollout"]
        assert [(c["path"], c["old"], c["new"]) for c in plan["update"][0]["changes"]] == [
            ("secrets[0].version", "1", "2")]
        out = await env.call("POST", "/v1/stacks/shop", body(False))
        assert out["applied"] == [{"name": "shop_web", "action": "update", "revision": 2}]
        row = await env.call("GET", "/v1/secrets/shop_pw")
        assert row["version"] == 2 and row["services"] == ["shop_web"] and len(row["versions"]) == 2
        out = await env.call("POST", "/v1/services/shop_web/rollback", {})
        svc = await env.call("GET", "/v1/services/shop_web")
        assert svc["spec"]["secrets"][0]["version"] == 1
        shown = json.dumps([plan, out, row, await env.call("GET", "/v1/events?limit=1000")])
        assert first not in shown and second not in shown
        # a secret used but not known to the master: 400 naming it, nothing applied
        path.write_text("name: shop\nservices:\n  web:\n    image: img:1\n    secrets: [gone]\n"
                        "secrets:\n  gone:\n    external: true\n")
        with pytest.raises(APIError) as exc:
            await env.call("POST", "/v1/stacks/shop", body(False))
        assert "nothing changed" in str(exc.value) and "secret 'gone' does not exist" in str(exc.value)
        assert (await env.call("GET", "/v1/services/shop_web"))["revision"] == 3
    finally:
        await env.close()


async def test_limits_unchanged_rotations_and_pruning(tmp_path, docker_client):
    """Past 500 KiB is refused with the size and the cap; a rotation to the same value changes
    nothing; versions beyond the newest 5 are pruned unless a service's current or previous
    revision mounts them; a config is its own namespace."""
    env = Env(tmp_path / "home", docker_client)
    try:
        await env.start_master()
        with pytest.raises(APIError) as exc:
            await env.call("POST", "/v1/secrets", {"name": "big", "data": _b64(b"x" * (500 * 1024 + 1))})
        assert exc.value.status == 400 and "at most 500 KiB" in str(exc.value)
        await env.call("POST", "/v1/secrets", {"name": "pw", "data": _b64(b"v1")})
        await env.call("POST", "/v1/configs", {"name": "pw", "data": _b64(b"a config")})
        out = await env.call("POST", "/v1/secrets/pw/rotate", {"data": _b64(b"v1")})
        assert out["changed"] is False and out["version"] == 1
        await env.call("POST", "/v1/services", to_wire(ServiceSpec(
            "db", "img:1", replicas=0, secrets=(SecretRef("pw", "pw"),))))
        for i in range(2, 10):
            await env.call("POST", "/v1/secrets/pw/rotate", {"data": _b64(f"v{i}".encode())})
        row = await env.call("GET", "/v1/secrets/pw")
        # db's current revision mounts 9, its previous 8; the newest five stay too
        assert [v["version"] for v in row["versions"]] == [5, 6, 7, 8, 9]
        assert (await env.call("GET", "/v1/configs/pw"))["version"] == 1
        with pytest.raises(APIError) as exc:
            await env.call("POST", "/v1/secrets/nope/rotate", {"data": _b64(b"x")})
        assert exc.value.status == 404
        with pytest.raises(APIError) as exc:
            await env.call("POST", "/v1/secrets", {"name": "../etc", "data": _b64(b"x")})
        assert exc.value.status == 400
    finally:
        await env.close()
