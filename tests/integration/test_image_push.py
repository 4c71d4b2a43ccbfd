"""``swarmlet image push`` end to end: real in-process agents, real dockerd, real mutual TLS.

The in-process agents share the host's dockerd, so "the node has the image"
is always true for a tag that exists here. To prove that an upload really
went through ``docker load``, tests delete the uniquely tagged image after
saving it and check that the agent brings it back with the same id.
Disk full is a real ENOSPC: the agent's spool dir is a 64 KiB tmpfs.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import os
import subprocess
import tarfile
import uuid
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import aiohttp
import docker.errors
import pytest

from swarmlet import cluster as clusterlib
from swarmlet import images as imagelib
from swarmlet.master.runner import run_master
from swarmlet.shipped.tlsutil import client_context
from swarmlet_agent.images import SPOOL_SUBDIR
from tests.integration.agent.conftest import agent_image  # noqa: F401  (fixture)
from tests.integration.master.test_master_daemon import FAST, Env
from tests.support import CLI
from tests.conftest import free_port

pytestmark = pytest.mark.integration


def _tar(files: Dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def tiny_image(docker_client):
    """A few-KB image under a unique tag, made with ``docker import`` (no pull, no build)."""
    tag = f"swarmlet-imgtest:{uuid.uuid4().hex[:10]}"
    repo, _, version = tag.partition(":")
    docker_client.api.import_image_from_data(
        _tar({"hello.txt": b"hello " * 500, "etc/os-release": b"NAME=imgtest\n"}),
        repository=repo, tag=version)
    yield tag
    try:
        docker_client.images.remove(tag, force=True)
    except docker.errors.ImageNotFound:
        pass


def saved(docker_client, tag: str, tmp_path: Path) -> bytes:
    path = tmp_path / f"{uuid.uuid4().hex}.tar.gz"
    imagelib.save_gzip(tag, str(path), docker_client)
    return path.read_bytes()


def image_id(docker_client, tag: str) -> Optional[str]:
    try:
        return docker_client.api.inspect_image(tag)["Id"]
    except docker.errors.ImageNotFound:
        return None


async def req(env: Env, agent: Any, method: str, path: str, data: Any = None,
              role: str = "cli") -> Tuple[int, Any]:
    ctx = env.c.client_ssl("cli") if role == "cli" else role
    ctx.check_hostname = False
    async with aiohttp.ClientSession() as s:
        async with s.request(method, f"https://127.0.0.1:{agent.api_port}{path}", data=data,
                             ssl=ctx) as resp:
            return resp.status, await resp.json(content_type=None)


def spool_files(agent: Any) -> list:
    d = Path(agent.config.state_dir) / SPOOL_SUBDIR
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def make_env(tmp_path: Path, docker_client) -> Env:
    """An ``Env`` whose cluster.json names a free master port, so ``cluster.master_url()`` works."""
    e = Env(tmp_path / "home", docker_client)
    data = json.loads(e.c.path("cluster.json").read_text())
    data["master_port"] = free_port()
    e.c.path("cluster.json").write_text(json.dumps(data))
    e.c = clusterlib.load(e.c.home)
    return e


async def start_master(e: Env) -> None:
    e.master = await run_master(e.c.home, bind="127.0.0.1", config=FAST)


@pytest.fixture
async def env(tmp_path, docker_client):
    e = make_env(tmp_path, docker_client)
    yield e
    await e.close()


async def test_presence_then_streamed_load_brings_the_image_back(env, docker_client, tiny_image,
                                                                 tmp_path):
    a = await env.agent("a")
    want = image_id(docker_client, tiny_image)
    status, body = await req(env, a, "GET", f"/v1/images?name={tiny_image}")
    assert (status, body) == (200, {"name": tiny_image, "present": True, "id": want})
    blob = saved(docker_client, tiny_image, tmp_path)
    docker_client.images.remove(tiny_image)
    status, body = await req(env, a, "GET", f"/v1/images?name={tiny_image}")
    assert (status, body) == (200, {"name": tiny_image, "present": False, "id": None})

    async def chunks():  # chunked transfer: the agent cannot know the size up front
        for i in range(0, len(blob), 1000):
            yield blob[i:i + 1000]

    status, body = await req(env, a, "POST", f"/v1/images/load?name={tiny_image}", chunks())
    assert status == 200, body
    assert body["loaded"] == [tiny_image] and body["bytes"] == len(blob)
    assert image_id(docker_client, tiny_image) == want
    assert spool_files(a) == []


async def test_garbled_uploads_are_400_and_other_roles_403(env, docker_client, tiny_image, tmp_path):
    a = await env.agent("a")
    blob = saved(docker_client, tiny_image, tmp_path)
    cases = {
        "not gzip": (os.urandom(5000), "not a gzip stream"),
        "cut short": (blob[: len(blob) // 2], "cut short"),
        "gzip, not tar": (gzip.compress(b"x" * 5000), "not a tar archive"),
        "tar, not an image": (gzip.compress(_tar({"a.txt": b"a" * 3000})), "Docker rejected the archive"),
        "empty": (b"", "empty upload"),
    }
    for what, (data, words) in cases.items():
        status, body = await req(env, a, "POST", "/v1/images/load?name=x:1", data)
        assert status == 400, (what, body)
        assert words in body["error"] and a.config.name in body["error"], (what, body)
    assert spool_files(a) == []
    status, body = await req(env, a, "GET", "/v1/images")
    assert status == 400 and "?name=" in body["error"]
    # an agent certificate (another node) may not push images
    d = env.c.home / "intruder"
    d.mkdir()
    kp = env.c.issue_agent("intruder", ["127.0.0.1"])
    (d / "c.crt").write_bytes(kp.cert_pem)
    (d / "c.key").write_bytes(kp.key_pem)
    agent_ctx = client_context(str(d / "c.crt"), str(d / "c.key"), str(env.c.path("ca.crt")),
                               check_hostname=False)
    status, body = await req(env, a, "POST", "/v1/images/load", blob, role=agent_ctx)
    assert status == 403


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 64 KiB tmpfs (root only); unmounted at teardown."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs here (the tests run as root): {p.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


async def test_disk_full_while_spooling_is_507_then_recovers(env, docker_client, tiny_image,
                                                            tmp_path, tiny_tmpfs):
    a = await env.agent("a")
    # the agent's spool dir is the tiny tmpfs
    (Path(a.config.state_dir) / SPOOL_SUBDIR).symlink_to(tiny_tmpfs)
    # incompressible, and more than the agent drains after refusing: the answer must still arrive
    big = gzip.compress(_tar({"noise.bin": os.urandom(12 << 20)}), 1)

    async def chunks():
        for i in range(0, len(big), 1 << 16):
            yield big[i:i + (1 << 16)]

    status, body = await req(env, a, "POST", "/v1/images/load?name=big:1", chunks())
    assert status == 507, body
    assert body == {"error": f"no space left on device on {a.config.name} while loading big:1"}
    assert os.listdir(tiny_tmpfs) == []      # the partial spool file is gone
    # the disk has room again: a small image loads through the same spool dir
    blob = saved(docker_client, tiny_image, tmp_path)
    assert len(blob) < 32 * 1024
    docker_client.images.remove(tiny_image)
    status, body = await req(env, a, "POST", f"/v1/images/load?name={tiny_image}", blob)
    assert status == 200 and body["loaded"] == [tiny_image]


async def test_push_skips_nodes_that_have_it_and_loads_where_asked(env, docker_client, tiny_image):
    a, b = await env.agent("a"), await env.agent("b")
    await start_master(env)
    await env.register(a)
    await env.register(b)
    want = image_id(docker_client, tiny_image)
    nodes = await imagelib.list_nodes(env.c)
    assert sorted(n.name for n in nodes) == sorted([a.config.name, b.config.name])
    assert await imagelib.missing_on_nodes(tiny_image, cluster=env.c) == []
    results = await imagelib.push(tiny_image, nodes, cluster=env.c)
    assert [(r.node, r.result, r.bytes) for r in results] == [(n.name, "skipped", 0) for n in nodes]

    # --force uploads; the local copy is deleted once saved, so only the agents' loads restore it
    events = []

    def progress(ev: imagelib.PushEvent) -> None:
        events.append(ev)
        if ev.phase == "saved":
            docker_client.images.remove(tiny_image)

    results = await imagelib.push(tiny_image, nodes, progress, cluster=env.c, force=True)
    assert [r.result for r in results] == ["pushed", "pushed"], results
    assert all(r.loaded == [tiny_image] and r.bytes > 0 for r in results)
    assert image_id(docker_client, tiny_image) == want
    for n in nodes:
        ups = [e.done for e in events if e.node == n.name and e.phase == "upload"]
        assert ups[0] == 0 and ups[-1] == results[0].bytes and ups == sorted(ups)
        assert [e.phase for e in events if e.node == n.name][-1] == "done"
    with pytest.raises(Exception, match="no image 'swarmlet-imgtest:nosuch' in the local Docker"):
        await imagelib.push("swarmlet-imgtest:nosuch", nodes, cluster=env.c)


async def test_cli_push_one_unreachable_node_among_reachable_ones(env, tiny_image):
    a, b = await env.agent("a"), await env.agent("b")
    await start_master(env)
    await env.register(a)
    await env.register(b)
    ghost = f"{env.tag}-ghost"
    await env.call("POST", "/v1/nodes", {"name": ghost, "address": "127.0.0.1",
                                         "api_port": free_port()})  # nothing listens there
    cli = CLI({**os.environ, "SWARMLET_HOME": str(env.c.home)})

    async def sw(*args: str) -> subprocess.CompletedProcess:
        return await asyncio.to_thread(cli, "image", "push", *args, timeout=60)

    p = await sw(tiny_image)
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert p.stderr.splitlines() == [f"error: {ghost}: cannot connect: Connection refused"]
    lines = p.stdout.splitlines()
    assert f"{a.config.name}: skipped (already present)" in lines
    assert f"{b.config.name}: skipped (already present)" in lines
    header = lines.index(next(ln for ln in lines if ln.startswith("NODE")))
    assert lines[header].split() == ["NODE", "RESULT", "SIZE", "SECONDS"]
    rows = {ln.split()[0]: ln.split()[1:] for ln in lines[header + 1:]}
    assert rows == {a.config.name: ["skipped", "-", "-"], b.config.name: ["skipped", "-", "-"],
                    ghost: ["failed", "-", "-"]}

    p = await sw(tiny_image, "--force", "-o", "json")
    assert p.returncode == 1, (p.stdout, p.stderr)
    out = {r["node"]: r for r in json.loads(p.stdout)}
    assert set(out) == {a.config.name, b.config.name, ghost}
    for n in (a.config.name, b.config.name):
        assert out[n]["result"] == "pushed" and out[n]["error"] is None and out[n]["bytes"] > 0
        assert out[n]["seconds"] > 0
    assert out[ghost]["result"] == "failed" and "Connection refused" in out[ghost]["error"]

    p = await sw(tiny_image, "--node", a.config.name)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert f"{a.config.name}: skipped (already present)" in p.stdout and ghost not in p.stdout

    p = await sw("swarmlet-imgtest:nosuch", "--node", a.config.name)
    assert p.returncode == 1
    assert p.stderr.splitlines() == [
        "error: no image 'swarmlet-imgtest:nosuch' in the local Docker (see 'docker image ls')"]
    p = await sw(tiny_image, "--node", "nosuch")
    assert p.returncode == 1 and "no node named 'nosuch'" in p.stderr


async def test_push_disk_full_on_one_node_fails_that_node_alone(env, agent_image, tiny_tmpfs):
    a, b = await env.agent("a"), await env.agent("b")
    (Path(a.config.state_dir) / SPOOL_SUBDIR).symlink_to(tiny_tmpfs)  # a's disk is "full"
    await start_master(env)
    await env.register(a)
    await env.register(b)
    nodes = sorted(await imagelib.list_nodes(env.c), key=lambda n: n.name)
    res = {r.node: r for r in await imagelib.push(agent_image, nodes, cluster=env.c, force=True)}
    assert res[a.config.name].result == "failed"
    assert res[a.config.name].error == (f"no space left on device on {a.config.name} "
                                        f"while loading {agent_image}")
    assert res[b.config.name].result == "pushed" and res[b.config.name].loaded == [agent_image]
    assert res[b.config.name].bytes > 64 * 1024
