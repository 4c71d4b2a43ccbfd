"""Images without a registry, the admin side: which nodes lack an image, and pushing it there.

Owns the work behind ``swarmlet image push`` (the CLI only renders) and what
``deploy``/``run`` can call to offer a push:

- ``list_nodes()``: the master's nodes (``GET /v1/nodes``) as ``Node`` targets.
- ``check(image, nodes)``: each node's ``Presence`` (present, missing,
  outdated: another image under that name, or unreachable).
- ``missing_on_nodes(image, nodes=None)``: the nodes that need a push.
- ``push(image, nodes, progress=None)``: ``docker save IMAGE | gzip`` once
  into a temp file (in a thread), then concurrent streamed uploads to the
  agents' ``POST /v1/images/load`` over mutual TLS with the ``cli``
  certificate. One ``PushResult`` per node; a node failing (unreachable, disk
  full, stalled) fails alone, the others go on.

Progress is reported as ``PushEvent``s to an optional callback, never
printed here. Images are compared by image id (``sha256:…``), which ``docker
save``/``load`` keep, so a node that has the same image is skipped. The local
Docker is reached with the docker SDK in threads; its errors become
``DockerError``. Agents are reached through ``swarmlet.client``: each must
answer with its own certificate (role agent, its name, its address), so an
image is never uploaded to a node impersonating another.
"""

from __future__ import annotations

import asyncio
import errno
import gzip
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence
from urllib.parse import quote

import aiohttp

from . import cluster as clusterlib
from .client import Client, Peer, agent_peer, call_master
from .shipped.exceptions import APIError, ConfigError, DockerError, DockerUnavailable

CHUNK = 256 * 1024
SAVE_CHUNK = 1 << 20
GZIP_LEVEL = 1          # ~70 MB/s in, ratio 0.39 vs level 6: ~19 MB/s, 0.35 (bench/image_push)
PARALLEL = 16           # uploads at once; more only splits the admin host's uplink further
CHECK_TIMEOUT = 5.0
CONNECT_TIMEOUT = 5.0
STALL_TIMEOUT = 60.0    # no upload progress this long: the node is treated as failed
LOAD_TIMEOUT = 600.0    # the agent answers once Docker has loaded the image


@dataclass(frozen=True)
class Node:
    """A push target: a node's name and where its agent API listens."""

    name: str
    address: str
    api_port: int
    status: str = "ready"

    @classmethod
    def from_row(cls, row: Dict[str, Any]) -> "Node":
        return cls(str(row["name"]), str(row["address"]), int(row["api_port"]),
                   str(row.get("status") or "ready"))

    @property
    def peer(self) -> Peer:
        return agent_peer(self.name, self.address, self.api_port)


@dataclass(frozen=True)
class Presence:
    node: Node
    state: str                  # present | missing | outdated | unreachable
    id: Optional[str] = None    # the node's image id under that name, if any
    error: Optional[str] = None


@dataclass(frozen=True)
class PushEvent:
    """One step of a push, for a progress display. ``node`` is "" for local steps."""

    node: str
    phase: str      # saving | saved | skip | upload | loading | done | failed
    done: int = 0   # bytes sent (upload) or written (saving)
    total: int = 0  # compressed size, once known
    message: str = ""


@dataclass
class PushResult:
    node: str
    result: str                     # pushed | skipped | failed
    error: Optional[str] = None
    bytes: int = 0
    seconds: float = 0.0
    loaded: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return {"node": self.node, "result": self.result, "error": self.error,
                "bytes": self.bytes, "seconds": round(self.seconds, 3)}


Progress = Callable[[PushEvent], None]


# --- the master and the local Docker -------------------------------------------------

async def list_nodes(cluster: Optional[clusterlib.Cluster] = None) -> List[Node]:
    """The master's nodes, except those that left."""
    c = cluster or clusterlib.load()
    rows = await call_master(c, "GET", "/v1/nodes", timeout=15.0)
    return [Node.from_row(r) for r in rows or [] if r.get("status") != "left"]


def select(nodes: Sequence[Node], names: Sequence[str]) -> List[Node]:
    """The nodes named (all when ``names`` is empty); an unknown name is a ``ConfigError``."""
    if not names:
        return list(nodes)
    by_name = {n.name: n for n in nodes}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ConfigError(f"no node named {', '.join(map(repr, unknown))} in the cluster",
                          hint="see 'swarmlet nodes'")
    return [by_name[n] for n in dict.fromkeys(names)]


def _local_docker() -> Any:
    import docker
    import docker.errors
    try:
        client = docker.from_env(timeout=300)
        client.ping()
    except docker.errors.DockerException as exc:
        raise DockerUnavailable(f"the local Docker is not reachable: {exc}") from exc
    return client


def local_image_id(image: str, client: Any = None) -> str:
    """The local image id of ``image``; ``DockerError`` in one line if there is none. Blocking."""
    import docker.errors
    client = client or _local_docker()
    try:
        return str(client.api.inspect_image(image)["Id"])
    except docker.errors.ImageNotFound as exc:
        raise DockerError(f"no image {image!r} in the local Docker (see 'docker image ls')") from exc
    except docker.errors.APIError as exc:
        raise DockerError(f"inspect image {image}: {exc.explanation or exc}") from exc


def save_gzip(image: str, path: str, client: Any = None, level: int = GZIP_LEVEL,
              on_bytes: Optional[Callable[[int], None]] = None) -> int:
    """``docker save IMAGE | gzip > path``, streamed; the compressed size. Blocking."""
    import docker.errors
    import requests.exceptions
    client = client or _local_docker()
    written = 0
    try:
        with open(path, "wb") as raw:
            with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=level, mtime=0) as gz:
                for chunk in client.api.get_image(image, chunk_size=SAVE_CHUNK):
                    gz.write(chunk)
                    written += len(chunk)
                    if on_bytes is not None:
                        on_bytes(written)
        return os.path.getsize(path)
    except docker.errors.ImageNotFound as exc:
        raise DockerError(f"no image {image!r} in the local Docker") from exc
    except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
        raise DockerError(f"docker save {image}: {exc}") from exc
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DockerError(f"no space left on this host for the saved image in {path}") from exc
        raise DockerError(f"saving {image} to {path}: {exc}") from exc


# --- presence --------------------------------------------------------------------------

def _client(c: clusterlib.Cluster, limit: int) -> Client:
    return Client.for_cluster(c, timeout=CHECK_TIMEOUT, limit=limit, limit_per_host=limit)


def _timeout(read: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT, sock_read=read)


async def _presence(client: Client, node: Node, image: str, local_id: str) -> Presence:
    try:
        data = await client.call(node.peer, "GET", f"/v1/images?name={quote(image, safe='')}",
                                 timeout=CHECK_TIMEOUT)
    except APIError as exc:
        why = exc.reason if exc.status is None else f"image check: {exc.reason}"
        return Presence(node, "unreachable", error=why)
    if not isinstance(data, dict) or not data.get("present"):
        return Presence(node, "missing")
    state = "present" if data.get("id") == local_id else "outdated"
    return Presence(node, state, id=data.get("id"))


async def check(image: str, nodes: Sequence[Node], local_id: Optional[str] = None,
                cluster: Optional[clusterlib.Cluster] = None) -> List[Presence]:
    """Ask every node's agent, concurrently, whether it has ``image`` (same id as here)."""
    c = cluster or clusterlib.load()
    if local_id is None:
        local_id = await asyncio.to_thread(local_image_id, image)
    async with _client(c, PARALLEL * 4) as client:
        return list(await asyncio.gather(*(_presence(client, n, image, local_id) for n in nodes)))


async def missing_on_nodes(image: str, nodes: Optional[Sequence[Node]] = None,
                           cluster: Optional[clusterlib.Cluster] = None) -> List[Node]:
    """The nodes (default: all of the cluster's) that lack ``image`` or hold another one under its name.

    Unreachable nodes are not included: nothing is known about them.
    """
    c = cluster or clusterlib.load()
    if nodes is None:
        nodes = await list_nodes(c)
    return [p.node for p in await check(image, nodes, cluster=c) if p.state in ("missing", "outdated")]


# --- push ------------------------------------------------------------------------------

def _emit(progress: Optional[Progress], ev: PushEvent) -> None:
    if progress is not None:
        progress(ev)


async def _chunks(path: str, node: str, total: int, progress: Optional[Progress],
                  beat: Callable[[], None]):
    """The saved file in chunks, read off the loop; reports progress and feeds the stall watchdog."""
    fh = await asyncio.to_thread(open, path, "rb")
    sent = 0
    try:
        while True:
            chunk = await asyncio.to_thread(fh.read, CHUNK)
            if not chunk:
                break
            yield chunk
            sent += len(chunk)
            beat()
            _emit(progress, PushEvent(node, "upload", sent, total))
    finally:
        await asyncio.to_thread(fh.close)
    _emit(progress, PushEvent(node, "loading", sent, total))


async def _watch(coro: Awaitable[Any], stall: float, last: List[float]) -> Any:
    """Run ``coro``; cancel it if ``last[0]`` (a monotonic time) is older than ``stall``."""
    task = asyncio.ensure_future(coro)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=min(1.0, stall))
            if done:
                return task.result()
            if time.monotonic() - last[0] > stall:
                task.cancel()
                raise asyncio.TimeoutError()
    finally:
        if not task.done():
            task.cancel()


async def _upload(client: Client, node: Node, image: str, path: str, total: int,
                  progress: Optional[Progress], stall: float) -> PushResult:
    t0 = time.monotonic()
    last = [t0]

    def beat() -> None:
        last[0] = time.monotonic()

    async def post() -> Any:
        data = _chunks(path, node.name, total, progress, beat)
        async with client.request(node.peer, "POST", f"/v1/images/load?name={quote(image, safe='')}",
                                  data=data, headers={"Content-Type": "application/gzip"},
                                  timeout=_timeout(LOAD_TIMEOUT)) as resp:
            try:
                return await resp.json(content_type=None)
            except ValueError:
                return {}

    def failed(msg: str) -> PushResult:
        _emit(progress, PushEvent(node.name, "failed", 0, total, msg))
        return PushResult(node.name, "failed", msg, 0, time.monotonic() - t0)

    _emit(progress, PushEvent(node.name, "upload", 0, total))
    try:
        body = await _watch(post(), stall, last)
    except asyncio.TimeoutError:
        return failed(f"stalled: no progress for {stall:.0f}s")
    except APIError as exc:
        return failed(exc.reason)
    res = PushResult(node.name, "pushed", None, total, time.monotonic() - t0,
                     list((body or {}).get("loaded") or []))
    _emit(progress, PushEvent(node.name, "done", total, total, ", ".join(res.loaded)))
    return res


async def push(image: str, nodes: Sequence[Node], progress: Optional[Progress] = None, *,
               cluster: Optional[clusterlib.Cluster] = None, force: bool = False,
               parallel: int = PARALLEL, level: int = GZIP_LEVEL, stall: float = STALL_TIMEOUT,
               tmpdir: Optional[str] = None) -> List[PushResult]:
    """Push ``image`` to those of ``nodes`` that lack it (all of them with ``force``).

    Raises only for local trouble (no such image here, local Docker down, no
    space for the saved file); per-node trouble is in that node's ``PushResult``.
    Results come in the order of ``nodes``.
    """
    c = cluster or clusterlib.load()
    client = await asyncio.to_thread(_local_docker)
    try:
        local_id = await asyncio.to_thread(local_image_id, image, client)
        results: Dict[str, PushResult] = {}
        targets: List[Node] = []
        for p in await check(image, nodes, local_id, c):
            if p.state == "unreachable":
                results[p.node.name] = PushResult(p.node.name, "failed", p.error)
                _emit(progress, PushEvent(p.node.name, "failed", message=p.error or ""))
            elif p.state == "present" and not force:
                results[p.node.name] = PushResult(p.node.name, "skipped", "already present")
                _emit(progress, PushEvent(p.node.name, "skip", message="already present"))
            else:
                targets.append(p.node)
        if targets:
            results.update(await _push_to(image, targets, client, c, progress, parallel, level,
                                          stall, tmpdir))
    finally:
        await asyncio.to_thread(client.close)
    return [results[n.name] for n in nodes]


async def _push_to(image: str, targets: List[Node], client: Any, c: clusterlib.Cluster,
                   progress: Optional[Progress], parallel: int, level: int, stall: float,
                   tmpdir: Optional[str]) -> Dict[str, PushResult]:
    fd, path = tempfile.mkstemp(prefix="swarmlet-image-", suffix=".tar.gz", dir=tmpdir)
    os.close(fd)
    try:
        _emit(progress, PushEvent("", "saving", message=image))
        loop = asyncio.get_running_loop()

        def on_bytes(n: int) -> None:
            loop.call_soon_threadsafe(_emit, progress, PushEvent("", "saving", n, 0, image))

        total = await asyncio.to_thread(save_gzip, image, path, client, level, on_bytes)
        _emit(progress, PushEvent("", "saved", total, total, image))
        gate = asyncio.Semaphore(max(1, parallel))

        async def one(n: Node) -> PushResult:
            async with gate:
                return await _upload(s, n, image, path, total, progress, stall)

        async with _client(c, max(1, parallel)) as s:
            done = await asyncio.gather(*(one(n) for n in targets))
        return {r.node: r for r in done}
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
