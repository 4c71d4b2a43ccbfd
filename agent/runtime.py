"""The Docker shell: every docker SDK call, run in threads, errors mapped.

Owns the only contact with Docker. Blocking SDK calls go through
``asyncio.to_thread``; the two long-lived streams (events, followed logs) get
their own daemon threads so they never pin the shared executor, and hand
items to the loop with ``call_soon_threadsafe``. docker/requests errors
become ``DockerError``/``DockerUnavailable`` here and nowhere else.

Only containers labelled ``io.swarmlet.managed=1`` and ``io.swarmlet.node=<name>``
are listed, and every mutating call re-checks the labels first: the agent
never touches a container that is not its own.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, AsyncIterator, Callable, Dict, List, Optional, Tuple

import docker
import docker.errors
import requests.exceptions

from swarmlet.shipped.exceptions import DockerError, DockerUnavailable, NoSuchContainer
from swarmlet.shipped import rfc3339
from swarmlet.shipped.models import TaskSpec

from . import containerspec
from . import reconcile as rc

log = logging.getLogger("swarmlet.agent.runtime")

def _host_ports(ports: Any) -> Dict[str, int]:
    """From inspect's NetworkSettings.Ports: {"8080/tcp": [{"HostPort": "3276"}]}."""
    out: Dict[str, int] = {}
    for key, binds in (ports or {}).items():
        for b in binds or ():
            if b.get("HostPort"):
                out[key] = int(b["HostPort"])
                break
    return out


def _observed(info: Dict[str, Any]) -> rc.Observed:
    st = info.get("State") or {}
    cfg = info.get("Config") or {}
    net = info.get("NetworkSettings") or {}
    ip = net.get("IPAddress") or ""
    if not ip:
        for n in (net.get("Networks") or {}).values():
            if n.get("IPAddress"):
                ip = n["IPAddress"]
                break
    return rc.Observed(
        container_id=info["Id"],
        labels=dict(cfg.get("Labels") or {}),
        status=st.get("Status", "unknown"),
        exit_code=int(st.get("ExitCode") or 0),
        started_at=rfc3339.parse(st.get("StartedAt")),
        finished_at=rfc3339.parse(st.get("FinishedAt")),
        created_at=rfc3339.parse(info.get("Created")),
        error=st.get("Error") or ("out of memory" if st.get("OOMKilled") else ""),
        health=((st.get("Health") or {}).get("Status") or ""),
        host_ports=_host_ports(net.get("Ports")),
        ip=ip,
    )


class DockerRuntime:
    """Docker for one node's agent. Every public method is a coroutine or thread-safe."""

    def __init__(self, node: str, url: Optional[str] = None, timeout: int = 60) -> None:
        self.node = node
        self.extra_hosts: Dict[str, str] = {}   # service name -> VIP, for new containers
        self.secrets_dir = "/run/swarmlet/secrets"   # the agent's tmpfs of secret files
        self.aliases: Dict[str, Dict[str, str]] = {}   # stack -> {short name -> VIP}
        self._url = url
        self._timeout = timeout
        self._client: Optional[docker.DockerClient] = None
        self._inspected: Dict[str, Tuple[str, rc.Observed]] = {}  # id -> (summary state, obs)
        self._lock = threading.Lock()
        self._events_stop = threading.Event()
        self._events_stream: Any = None
        self.calls = 0

    # -- plumbing ---------------------------------------------------------

    @property
    def api(self) -> docker.APIClient:
        if self._client is None:
            if self._url:
                self._client = docker.DockerClient(base_url=self._url, timeout=self._timeout,
                                                   max_pool_size=16)
            else:
                self._client = docker.from_env(timeout=self._timeout, max_pool_size=16)
        return self._client.api

    async def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        def run() -> Any:
            self.calls += 1
            try:
                return fn(*args, **kw)
            except docker.errors.NotFound as exc:
                raise NoSuchContainer(f"{what}: {exc.explanation or exc}") from exc
            except docker.errors.APIError as exc:
                raise DockerError(f"{what}: {exc.explanation or exc}") from exc
            except (docker.errors.DockerException, requests.exceptions.ConnectionError) as exc:
                raise DockerUnavailable(f"{what}: Docker is not reachable: {exc}") from exc
        return await asyncio.to_thread(run)

    async def ping(self) -> None:
        await self._call("ping", lambda: self.api.ping())

    async def log_drivers(self) -> List[str]:
        """The logging drivers this Docker has (``docker info``'s Plugins.Log)."""
        info = await self._call("info", lambda: self.api.info())
        return sorted(str(d) for d in ((info.get("Plugins") or {}).get("Log") or []))

    def close(self) -> None:
        self._events_stop.set()
        stream = self._events_stream
        if stream is not None:
            try:
                stream.close()
            except Exception:  # closing a half-dead HTTP stream: nothing to report
                pass
        if self._client is not None:
            self._client.close()

    # -- observe ----------------------------------------------------------

    def forget(self, container_id: str) -> None:
        """Drop the cached inspect of a container (an event says it changed)."""
        with self._lock:
            self._inspected.pop(container_id, None)

    def _list_sync(self) -> List[rc.Observed]:
        summaries = self.api.containers(all=True, filters={
            "label": [f"{rc.MANAGED}=1", f"{rc.NODE}={self.node}"]})
        out: List[rc.Observed] = []
        seen = set()
        for s in summaries:
            cid, state = s["Id"], s.get("State", "")
            seen.add(cid)
            with self._lock:
                hit = self._inspected.get(cid)
            if hit is not None and hit[0] == state:
                out.append(hit[1])
                continue
            try:
                obs = _observed(self.api.inspect_container(cid))
            except docker.errors.NotFound:
                continue  # removed between list and inspect
            with self._lock:
                self._inspected[cid] = (state, obs)
            out.append(obs)
        with self._lock:
            for cid in list(self._inspected):
                if cid not in seen:
                    del self._inspected[cid]
        return [o for o in out if rc.is_ours(o.labels, self.node)]

    async def list(self) -> List[rc.Observed]:
        return await self._call("list containers", self._list_sync)

    async def find(self, task_id: str) -> List[rc.Observed]:
        return [o for o in await self.list() if o.task_id == task_id]

    # -- act --------------------------------------------------------------

    async def ensure_image(self, image: str) -> bool:
        """True if the image had to be pulled. A failed pull raises ``DockerError``."""
        def run() -> bool:
            try:
                self.api.inspect_image(image)
                return False
            except docker.errors.NotFound:
                pass
            repo, tag = _split_image(image)
            try:
                self.api.pull(repo, tag=tag)
                self.api.inspect_image(image)
            except docker.errors.APIError as exc:
                raise DockerError(f"pull {image} failed: {exc.explanation or exc}") from exc
            return True
        return await self._call(f"image {image}", run)

    async def ensure_volumes(self, task: TaskSpec) -> None:
        def run() -> None:
            for v in task.volumes:
                if v.kind != "volume":
                    continue
                try:
                    self.api.inspect_volume(v.source)
                except docker.errors.NotFound:
                    self.api.create_volume(v.source, labels={rc.MANAGED: "1"})
        await self._call("volumes", run)

    async def create(self, task: TaskSpec) -> str:
        spec = containerspec.build(self.node, task, self.extra_hosts, self.aliases,
                                   secrets_dir=self.secrets_dir)
        name = spec.name

        def run() -> str:
            kw = dict(spec.create, name=name, host_config=self.api.create_host_config(**spec.host))
            try:
                return self.api.create_container(**kw)["Id"]
            except docker.errors.APIError as exc:
                if exc.status_code != 409:
                    raise
                # Same task created before (a lost reply): adopt it if it is ours.
                info = self.api.inspect_container(name)
                if rc.is_ours(info["Config"].get("Labels") or {}, self.node) and \
                        info["Config"]["Labels"].get(rc.TASK) == task.task_id:
                    return info["Id"]
                raise DockerError(f"container name {name} is taken by a foreign container") from exc
        return await self._call(f"create {task.task_id}", run)

    def _check_ours(self, container_id: str) -> Dict[str, Any]:
        info = self.api.inspect_container(container_id)
        if not rc.is_ours(info["Config"].get("Labels") or {}, self.node):
            raise DockerError(f"refusing to touch foreign container {container_id[:12]}")
        return info

    async def start(self, container_id: str) -> None:
        def run() -> None:
            self._check_ours(container_id)
            self.api.start(container_id)
        self.forget(container_id)
        await self._call(f"start {container_id[:12]}", run)

    async def remove(self, container_id: str, timeout: int = 10) -> None:
        """Stop within ``timeout`` seconds, or the container's own stop_grace_period
        (its StopTimeout, set from the spec), then remove it."""
        def run() -> None:
            try:
                info = self._check_ours(container_id)
                own = (info.get("Config") or {}).get("StopTimeout")
                self.api.stop(container_id, timeout=own if isinstance(own, int) and own >= 0 else timeout)
                self.api.remove_container(container_id, force=True)  # named volumes are kept
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                if "already in progress" not in str(exc.explanation or ""):
                    raise
        self.forget(container_id)
        await self._call(f"remove {container_id[:12]}", run)

    # -- streams ----------------------------------------------------------

    def watch_events(self, loop: asyncio.AbstractEventLoop,
                     on_event: Callable[[Dict[str, Any]], None],
                     on_gap: Callable[[], None]) -> threading.Thread:
        """Follow Docker's event stream for this node's containers in a thread.

        ``on_gap`` runs (on the loop) whenever the stream (re)connects, since
        events may have been missed: the daemon then re-lists everything.
        """
        def run() -> None:
            retry = 0.5
            while not self._events_stop.is_set():
                try:
                    stream = self.api.events(decode=True, filters={
                        "type": "container", "label": [f"{rc.MANAGED}=1", f"{rc.NODE}={self.node}"]})
                    self._events_stream = stream
                    loop.call_soon_threadsafe(on_gap)
                    retry = 0.5
                    for ev in stream:
                        loop.call_soon_threadsafe(on_event, ev)
                except RuntimeError:
                    return  # the loop is closed: the agent is gone
                except Exception as exc:  # any stream failure: reconnect with backoff
                    if self._events_stop.is_set():
                        return
                    log.warning("docker event stream failed: %s", exc)
                if self._events_stop.wait(retry):
                    return
                retry = min(retry * 2, 10.0)
        t = threading.Thread(target=run, name="docker-events", daemon=True)
        t.start()
        return t

    async def logs(self, container_id: str, follow: bool = False, tail: Optional[int] = None,
                   since: Optional[float] = None, timestamps: bool = False) -> AsyncIterator[bytes]:
        """Yield raw log chunks; following stops when the caller stops iterating."""
        loop = asyncio.get_running_loop()
        queue: "asyncio.Queue[Any]" = asyncio.Queue(maxsize=256)
        done = object()
        holder: Dict[str, Any] = {}
        stop = threading.Event()

        def put(item: Any) -> None:
            fut = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
            fut.result()  # backpressure: the thread waits while the client is slow

        def run() -> None:
            try:
                stream = self.api.logs(container_id, stream=True, follow=follow,
                                       tail=tail if tail is not None else "all",
                                       since=since, timestamps=timestamps)
                holder["stream"] = stream
                for chunk in stream:
                    if stop.is_set():
                        break
                    put(chunk)
                put(done)
            except Exception as exc:  # delivered to the consumer as an error
                if not stop.is_set():
                    try:
                        put(exc)
                    except Exception:
                        pass

        self._check_ours_cached(container_id)
        t = threading.Thread(target=run, name="docker-logs", daemon=True)
        t.start()
        try:
            while True:
                item = await queue.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise DockerError(f"logs of {container_id[:12]}: {item}") from item
                yield item
        finally:
            stop.set()
            stream = holder.get("stream")
            if stream is not None:
                await asyncio.to_thread(_quiet_close, stream)
            while not queue.empty():  # unblock a thread waiting in put()
                queue.get_nowait()

    def _check_ours_cached(self, container_id: str) -> None:
        with self._lock:
            hit = self._inspected.get(container_id)
        if hit is None or not rc.is_ours(hit[1].labels, self.node):
            raise DockerError(f"no container {container_id[:12]} of this node")

    async def stats(self, container_id: str) -> Dict[str, Any]:
        """Docker's one-shot stats (fallback when cgroup files are not readable)."""
        return await self._call("stats", self.api.stats, container_id, stream=False, one_shot=True)


def _quiet_close(stream: Any) -> None:
    try:
        stream.close()
    except Exception:  # the peer may already be gone
        pass


def _split_image(image: str) -> Tuple[str, Optional[str]]:
    if "@" in image:
        return image, None
    repo, sep, tag = image.rpartition(":")
    if sep and "/" not in tag:
        return repo, tag
    return image, "latest"
