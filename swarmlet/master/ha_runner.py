"""An HA master process: the etcd store, the election, and the leader's ``Master``.

Every master runs one of these (``python3 -m swarmlet.master --home H`` with an
``ha.json`` in H, see ``swarmlet.ha.config``). All of them:

- keep a hot copy of the state (``EtcdStore.follow``: a watch from the loaded
  revision), so a takeover starts from memory;
- campaign for leadership (``swarmlet.ha.election``) in a thread;
- serve the master API on their own address.

The leader runs the ``Master`` (loops, pushes, reconcile) with its writes fenced by
its term (``Fence(LEADER_FENCE, term)``), its assignments carrying the term, and
``Master.leading`` bound to the lease check, so it pushes nothing once its lease may
have lapsed. It runs no load balancer of its own: with HA every node's ingress is
the edge. It also serves the dashboard (API port + 1) while it leads.

A follower proxies every API request to the leader (over mutual TLS with its own
``master`` certificate; ``X-Swarmlet-Via`` stops a loop). With no leader (quorum
lost, or an election under way) writes fail at once with one line (``no quorum: 1
of 3 masters reachable``) and reads are answered from the hot copy with an
``X-Swarmlet-Stale`` header saying why the view may be stale; the CLI prints it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional

import aiohttp
from aiohttp import web

from .. import cluster as clusterlib
from ..ha import apart
from ..ha import config as haconfig
from ..ha import etcd as E
from ..ha.election import Elector, Leadership
from ..shipped import tlsutil
from ..shipped.exceptions import APIError, ConfigError, StoreError
from ..client import Client
from ..shipped.tlsutil import Denylist
from .api import VIEW_KEY, serve
from .dashboard.server import start_dashboard
from .daemon import Master, MasterConfig
from .runner import AGENT_POOL, raise_fd_limit
from .store import Fence
from .store.etcd import LEADER_FENCE, EtcdStore
from .vault import load_key as load_vault_key

log = logging.getLogger("swarmlet.master.ha")
VIA = "X-Swarmlet-Via"
RETRY = "X-Swarmlet-Retry"      # on a 503: nothing was done, another master (or a moment) will serve
STALE = "X-Swarmlet-Stale"
LEADER = "X-Swarmlet-Leader"
PROBE_EVERY = 1.0      # seconds between background probes of the etcd members (/v1/ha)
PROMOTE_RETRY = 0.3    # seconds before a failed takeover is tried again while the lease holds
APART_EVERY = 3.0      # seconds between looks at where etcd's raft leader is (ha/apart.py)
_HOP = ("Content-Type", "Accept", "Cache-Control")


class CurrentMaster:
    """The object the API's handlers call: the leader's ``Master`` while this process leads."""

    def __init__(self) -> None:
        self.master: Optional[Master] = None

    def __getattr__(self, name: str) -> Any:
        m = self.__dict__.get("master")
        if m is None:
            raise APIError("this master is not the leader (an election is under way): retry",
                           status=503)
        return getattr(m, name)


@dataclass
class RunningHA:
    ha: "HAMaster"
    url: str

    async def close(self) -> None:
        await self.ha.close()


class HAMaster:
    def __init__(self, home: Path, config: MasterConfig = MasterConfig()) -> None:
        self.home = Path(home)
        self.cluster = clusterlib.load(self.home)
        self.hacfg = haconfig.load(self.home)
        # With HA every node's ingress is the edge: the master runs no load balancer.
        self.config = replace(config, ingress=False)
        # One live denylist for this process (the leader's Master loads the store's into it).
        self.denylist = Denylist()
        try:
            self.server_ctx = tlsutil.server_context(
                str(self.cluster.path("master.crt")), str(self.cluster.path("master.key")),
                str(self.cluster.path("ca.crt")), denylist=self.denylist)
            self.client_ctx = self.cluster.client_ssl("master")
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load the master's certificates from {home}: {exc}") from exc
        self.etcd = E.Etcd(self.hacfg.endpoints, self.hacfg.etcd_tls)
        self.store: Optional[EtcdStore] = None
        self.elector: Optional[Elector] = None
        self.current = CurrentMaster()
        self.runner: Optional[web.AppRunner] = None
        self.dashboard: Optional[web.AppRunner] = None
        self._thread: Optional[threading.Thread] = None
        self._changed = asyncio.Event()
        self._supervisor: Optional["asyncio.Task[None]"] = None
        self._joining: Optional["asyncio.Task[None]"] = None
        self._session: Optional[aiohttp.ClientSession] = None
        self._view: Optional[Master] = None
        self._view_rev = -1
        # How many etcd members answer, probed in the background: /v1/ha must not wait on a
        # dead member's probe timeout (clients poll it to find the leader during a failover).
        self._reachable: Optional[int] = None
        self._prober: Optional["asyncio.Task[None]"] = None
        self.transitions = 0

    # --- life cycle ------------------------------------------------------------------

    async def start(self) -> str:
        """Serve the API at once (it answers 'no leader yet' until etcd is reached), then join
        the store and the election in the background, retrying while etcd is not there yet
        (its member starts beside us, and a majority may still be booting)."""
        self.runner = await serve(self.current, self.hacfg.bind, self.hacfg.port, self.server_ctx,
                                  middlewares=[self._front])
        port = self.runner.addresses[0][1] if self.hacfg.port == 0 else self.hacfg.port
        self._joining = asyncio.create_task(self._join(), name="ha-join")
        return self.hacfg.url if self.hacfg.port else f"https://127.0.0.1:{port}"

    async def _join(self) -> None:
        delay = 0.2
        while True:
            try:
                store = await asyncio.to_thread(EtcdStore, self.etcd, self.hacfg.prefix)
                await asyncio.to_thread(store.follow)
                break
            except StoreError as exc:
                log.warning("etcd not ready yet (%s): retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)
        self.store = store
        me = {"name": self.hacfg.name, "url": self.hacfg.url}
        self.elector = Elector(E.Etcd(self.hacfg.endpoints, self.hacfg.etcd_tls), self.hacfg.prefix,
                               me, ttl=self.hacfg.ttl)
        loop = asyncio.get_running_loop()
        self.elector.subscribe(lambda st: loop.call_soon_threadsafe(self._changed.set))
        self._thread = threading.Thread(target=self.elector.run, name="elector", daemon=True)
        self._thread.start()
        self._supervisor = asyncio.create_task(self._supervise(), name="ha-supervisor")
        self._prober = asyncio.create_task(self._probe(), name="ha-probe")

    async def _probe(self) -> None:
        while True:
            self._reachable = await asyncio.to_thread(self.etcd.reachable)
            await asyncio.sleep(PROBE_EVERY)

    async def close(self) -> None:
        if self._joining is not None:
            self._joining.cancel()
            await asyncio.gather(self._joining, return_exceptions=True)
        if self.elector is not None:
            self.elector.stop()
        for task in (self._supervisor, self._prober):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self._demote()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10)
        if self.runner is not None:
            await self.runner.cleanup()
        if self._session is not None:
            await self._session.close()
        if self.store is not None:
            await asyncio.to_thread(self.store.close)

    # --- leadership --------------------------------------------------------------------

    def leading(self) -> bool:
        return self.elector is not None and self.elector.is_leader() and self.current.master is not None

    async def _supervise(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            st = self.elector.state if self.elector else Leadership(False)
            m = self.current.master
            try:
                if st.leader and (m is None or m.term != st.term):
                    await self._demote()
                    await self._promote(st.term)
                elif not st.leader and m is not None:
                    await self._demote()
            except StoreError as exc:     # fenced out or quorum lost while taking over
                log.warning("taking over as term %d failed: %s", st.term, exc)
                await self._demote()
                self._retry_soon(st)
            except Exception:   # never let the supervisor die: the next change retries
                log.exception("leadership change failed")
                await self._demote()
                self._retry_soon(st)

    def _retry_soon(self, st: Leadership) -> None:
        """A takeover failed (etcd busy electing its own raft leader, a timeout) while the
        lease still holds: no leadership change will come to wake the supervisor, so it
        would hold the lease and lead nothing until the process restarts. Look again soon;
        if the lease lapses meanwhile, the elector steps down and the look does nothing."""
        if st.leader:
            asyncio.get_running_loop().call_later(PROMOTE_RETRY, self._changed.set)

    async def _promote(self, term: int) -> None:
        assert self.store is not None and self.elector is not None
        m = Master(self.store, self._agent_client(self.config.request_timeout),
                   cluster={"id": self.cluster.id, "name": self.cluster.name}, config=self.config,
                   denylist=self.denylist,    # no signer here: the CA key stays on the admin host
                   # the KEK that unwraps the data key: vault.key in this master's home, put
                   # there with its certificate (none: secrets cannot be opened, see vault.py)
                   vault_key=await asyncio.to_thread(load_vault_key, self.cluster.home))
        m.fence = Fence(LEADER_FENCE, term)
        m.term = term      # Master.start adds the cluster's term floor (see daemon.Master.start)
        m.leading = self.elector.is_leader
        try:
            await m.start()
        except BaseException:     # half started (a watch, loops): undo before the retry
            await m.close()
            raise
        self.current.master = m
        self.transitions += 1
        log.info("leading as term %d (%d services, %d tasks, %d nodes)", term, len(m.services),
                 len(m.tasks), len(m.nodes))
        port = self.hacfg.port + 1 if self.hacfg.port else 0
        host = self.hacfg.url.split("//", 1)[-1].rsplit(":", 1)[0].strip("[]")
        self.dashboard = await start_dashboard(m, self.cluster, self.hacfg.bind, port, host)
        m.spawn(self._keep_apart(m))

    async def _keep_apart(self, m: Master) -> None:
        """While ``m`` leads: etcd's raft leader elsewhere (``ha/apart.py``)."""
        while self.current.master is m:
            try:
                await asyncio.to_thread(apart.step, self.etcd, self.hacfg.name)
            except StoreError as exc:
                log.debug("raft leader check: %s", exc)
            await asyncio.sleep(APART_EVERY)

    def _agent_client(self, timeout: float) -> Client:
        c = self.cluster
        return Client(str(c.path("master.crt")), str(c.path("master.key")), str(c.path("ca.crt")),
                      denylist=self.denylist, timeout=timeout, **AGENT_POOL)

    async def _demote(self) -> None:
        m, self.current.master = self.current.master, None
        if self.dashboard is not None:
            await self.dashboard.cleanup()
            self.dashboard = None
        if m is not None:
            log.info("no longer leading (term %d)", m.term)
            await m.close()

    # --- the API front -------------------------------------------------------------------

    @web.middleware
    async def _front(self, request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if request.path == "/v1/ha":          # this master's own view, never proxied
            return web.json_response(await self.ha_view())
        if self.leading():
            resp = await handler(request)
            resp.headers[LEADER] = self.hacfg.name
            return resp
        st = self.elector.state if self.elector else Leadership(False)
        for _ in range(50):    # elected a moment ago: the Master is starting from the hot copy
            if not st.leader or self.leading():
                break
            await asyncio.sleep(0.1)
            st = self.elector.state
        if self.leading():
            resp = await handler(request)
            resp.headers[LEADER] = self.hacfg.name
            return resp
        holder = st.holder or {}
        if holder.get("url") and holder.get("name") != self.hacfg.name and VIA not in request.headers:
            return await self._proxy(request, str(holder["url"]), str(holder.get("name", "?")))
        why = await self._no_leader_reason(st)
        if request.method not in ("GET", "HEAD"):
            retry = {} if why.startswith("no quorum") else {RETRY: "1"}
            return web.json_response({"error": why}, status=503, headers=retry)
        view = self._view_master()
        if view is None:
            return web.json_response({"error": f"{why}; and no copy of the state to read yet"},
                                     status=503)
        request[VIEW_KEY] = view
        resp = await handler(request)
        resp.headers[STALE] = f"the view may be stale: {why}"
        return resp

    async def ha_view(self) -> dict:
        st = self.elector.state if self.elector else Leadership(False)
        reachable = await self._members_answering()
        return {"name": self.hacfg.name, "leading": self.leading(), "term": st.term,
                "leader": (st.holder or {}).get("name"), "reason": st.reason,
                "masters": self.hacfg.masters, "etcd_reachable": reachable,
                "etcd_members": len(self.hacfg.endpoints),
                "revision": (self.store.hot_copy().revision
                             if self.store is not None and self.store.hot_copy() else None)}

    async def _members_answering(self) -> int:
        """The background probe's count of etcd members that answer: probing on each call
        would wait a dead member's probe timeout, and clients poll /v1/ha during a failover
        and must get "no quorum" at once. Probed here only before the first round."""
        n = self._reachable
        if n is None:
            n = await asyncio.to_thread(self.etcd.reachable)
        return n

    async def _no_leader_reason(self, st: Leadership) -> str:
        if st.reason.startswith("no quorum"):
            return st.reason
        n = await self._members_answering()
        total = len(self.hacfg.endpoints)
        if n <= total // 2:
            return f"no quorum: {n} of {total} masters reachable"
        return "no leader yet: an election is under way, retry in a few seconds"

    def _view_master(self) -> Optional[Master]:
        """A read-only ``Master`` on the hot copy (rebuilt when the copy moved)."""
        snap = self.store.hot_copy() if self.store is not None else None
        if snap is None:
            return None
        if self._view is None or self._view_rev != snap.revision:
            v = Master(self.store, self._agent_client(2.0), cluster={"id": self.cluster.id,
                                                                    "name": self.cluster.name})
            v.services, v.specs, v.nodes, v.meta = snap.services, snap.specs, snap.nodes, snap.meta
            v.secretbook.versions = dict(snap.secrets)     # metadata reads (sealed values)
            v.certbook.load(snap.meta)                     # certificates (keys stay sealed)
            v.edge.load(snap.meta)
            v.acme.load(snap.meta)
            for t in snap.tasks.values():
                v.tasks.put(t)
            self._view, self._view_rev = v, snap.revision
        return self._view

    async def _proxy(self, request: web.Request, base: str, name: str) -> web.StreamResponse:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        body = await request.read()
        headers = {h: request.headers[h] for h in _HOP if h in request.headers}
        headers[VIA] = self.hacfg.name
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=3.0, sock_read=120.0)
        try:
            async with self._session.request(request.method, base + request.path_qs,
                                             data=body or None, headers=headers,
                                             ssl=self.client_ctx, timeout=timeout) as up:
                resp = web.StreamResponse(status=up.status)
                for h in ("Content-Type", STALE, LEADER):
                    if h in up.headers:
                        resp.headers[h] = up.headers[h]
                await resp.prepare(request)
                async for chunk in up.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
                return resp
        except aiohttp.ClientConnectorError as exc:   # not sent: safe to send again
            return web.json_response(
                {"error": f"the leader {name} ({base}) does not answer ({type(exc).__name__}): "
                          "an election follows within seconds, retry"}, status=503,
                headers={RETRY: "1"})
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            # Sent, then lost: it may or may not have been applied; only the caller can tell.
            return web.json_response(
                {"error": f"the leader {name} ({base}) went away during the request "
                          f"({type(exc).__name__}): it may or may not have been applied"},
                status=503)


async def run_ha_master(home: Path, config: MasterConfig = MasterConfig()) -> RunningHA:
    raise_fd_limit()      # a watch on every node, as the single master holds (runner.py)
    ha = HAMaster(home, config)
    try:
        url = await ha.start()
    except BaseException:
        await ha.close()
        raise
    return RunningHA(ha, url)
