"""Simulated agents: many cheap stand-ins that speak the real agent API over mutual TLS.

For scale benchmarks (``bench/scale``) and tests that need hundreds or thousands
of nodes behind a real master. Each simulated node listens on its own loopback
address (127.0.0.0/8 holds millions) and the same port, with its own certificate
from the cluster CA: role ``agent``, CN = the node's name, its address in the
SANs (what the master checks of an agent). All nodes of one ``SimFleet`` share
one aiohttp application and one event loop; the handler finds the node by the
local address the request arrived on.

What a node does (the agent API of docs/internal-apis.md, without Docker):

- ``PUT /v1/assignment``: ordered by (term, version) like the real agent (older
  -> 409 with ``current`` and ``term``, the same -> not applied). A new task is ``assigned`` at once and
  ``running`` after ``run_delay`` seconds (``healthy`` if its spec has a
  health check); a task left out is gone at once. Every new task is logged
  with the time it arrived (``log``), so a benchmark can tell when a
  replacement reached a node.
- ``GET /v1/tasks``; with ``?since=SEQ&wait=S`` a long poll (answer when the
  report's ``seq`` moves past ``SEQ``, or after ``S`` seconds);
  ``/v1/info``; ``/v1/stats`` (fixed, plausible figures);
  ``/v1/members``: the fleet's shared gossip view, in which a killed node turns
  ``suspect`` after ``suspect_after`` and ``dead`` after ``dead_after`` seconds.
- a replica of a service with a published port answers HTTP on the node's
  address and its host port (``200 ok``; ``500`` on a path containing ``fail``),
  so the master's load balancer can send it real traffic;
- an image whose name contains ``broken`` turns ``unhealthy`` once running (a
  failed update); ``set_cpu(service, percent)`` sets what ``/v1/stats`` reports
  for its replicas (autoscaling);
- ``kill``: the host dies: open connections are cut, and new ones are cut after
  their handshake, never refused (a refused connection says the host is up and
  only its agent down: the master then waits ``liveness.restart_grace`` for a
  restart); ``crash``: the agent process dies on a host that stays up: the
  listener closes (connections refused) and open connections are cut; ``revive``
  brings either back with its tasks as they were. ``freeze``: the
  node stops answering but keeps its connections (a hung host), and gossip
  suspects it as it would a dead one; ``thaw`` undoes it.
- ``legacy=True``: nodes that predate the long poll (no ``seq``; ``since`` and
  ``wait`` ignored), as an agent of an earlier version answers.
- ``PUT /v1/routes``: the routing table's channel, versioned as the real agent;
- ``PUT /v1/edge``: the edge channel, ordered by (term, epoch, version) like the real
  agent (older -> 409), and reported as ``edge`` in ``/v1/tasks`` as the real agent
  does; ``edge=False``: nodes from before the channel (404, nothing reported);
- ``PUT /v1/routes/relay``: signed route updates relayed between agents, as the real
  agent (``shipped/relaytree.relay``: the signature checked against the master
  certificates learnt from the master's handshakes, applied as ``PUT /v1/routes``,
  forwarded over mutual TLS with the node's own certificate to its share of the
  range, from the fleet's gossip view);
- bytes received are counted per method and per path (request line, headers
  and body: the HTTP bytes inside TLS), and answered bytes per path; bytes that
  other agents send (the relay) apart, in ``peer_bytes_in`` and ``peer_requests``.

Only role ``master`` or ``cli`` client certificates may call, as on a real agent, and
role ``agent`` the relay alone.

Run as a process (``python -m tests.tools.simagents --home H --roster F --part i/k``)
it serves a small plain-HTTP control API on 127.0.0.1 for the benchmark driver
(``/kill``, ``/crash``, ``/revive``, ``/health``, ``/cpu``, ``/log``, ``/counters``) and prints
``ready PORT`` once every node listens.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import ssl
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from aiohttp import web

from swarmlet import pki
from swarmlet.shipped.exceptions import StaleRoutes
from swarmlet.shipped.relayenvelope import MasterCerts, RelayRefused
from swarmlet.shipped.relaytree import PATH as RELAY_PATH, Forwarder, View, relay, view_of
from swarmlet.shipped.tlsutil import Expect, client_context, peer_role, server_context

RUNNING, ASSIGNED = 5, 2
LONG_POLL_MAX = 60.0


def roster(n: int, prefix: str = "sim", base: str = "127.100", rack: int = 100) -> List[Dict[str, Any]]:
    """``n`` nodes on distinct loopback addresses, labelled by zone and rack."""
    out = []
    b1, b2 = (int(x) for x in base.split("."))
    for i in range(n):
        hi, lo = divmod(i, 250)
        out.append({"name": f"{prefix}-{i:05d}", "address": f"{b1}.{b2 + hi // 250}.{hi % 250}.{lo + 1}",
                    "labels": {"zone": "abc"[i % 3], "rack": f"r{i // rack:03d}"}})
    return out


class _Replica(asyncio.Protocol):
    """A replica's HTTP answer: ``200 ok`` (``500`` for a path with ``fail``), keep-alive."""

    def __init__(self) -> None:
        self.buf = b""
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > 65536:
            self.transport.close()
            return
        while b"\r\n\r\n" in self.buf:
            head, self.buf = self.buf.split(b"\r\n\r\n", 1)
            line = head.split(b"\r\n", 1)[0]
            fail = b"fail" in line
            body = b"fail\n" if fail else b"ok\n"
            self.transport.write(b"HTTP/1.1 %s\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n%s"
                                 % (b"500 Internal Server Error" if fail else b"200 OK", len(body), body))


@dataclass
class SimNode:
    name: str
    address: str
    labels: Dict[str, str]
    alive: bool = True
    version: int = 0
    term: int = 0                      # the newest leader term seen (as the real agent)
    assignment: Optional[bytes] = None
    tasks: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    seq: int = 0
    cached: Optional[bytes] = None
    waiters: Set["asyncio.Future[None]"] = field(default_factory=set)
    transports: Set[Any] = field(default_factory=set)
    site: Any = None
    ctx: Optional[ssl.SSLContext] = None
    client_ctx: Optional[ssl.SSLContext] = None     # its certificate, to relay to other nodes
    forwarder: Any = None
    died_at: Optional[float] = None
    routes_version: int = 0         # the routes channel (PUT /v1/routes), as a real agent keeps it
    routes_epoch: int = 0
    routes_term: int = 0
    edge: Tuple[int, int, int] = (0, 0, 0)     # the edge channel: (term, epoch, version) held
    routes_log: List[Tuple[int, int]] = field(default_factory=list)   # the last 64 (version, base)
    frozen: Optional["asyncio.Event"] = None    # set while frozen: requests wait for a thaw
    servers: Dict[str, Any] = field(default_factory=dict)   # task -> its HTTP server
    published: Dict[str, int] = field(default_factory=dict)  # task -> its target port
    edge_channel: bool = True       # False: an agent from before PUT /v1/edge

    def changed(self) -> None:
        self.seq += 1
        self.cached = None
        for w in self.waiters:
            if not w.done():
                w.set_result(None)
        self.waiters.clear()

    def report(self) -> bytes:
        if self.cached is None:
            self.cached = json.dumps({"version": self.version, "seq": self.seq,
                                      "tasks": list(self.tasks.values()),
                                      **({"edge": {"version": self.edge[2], "epoch": self.edge[1]}}
                                         if self.edge_channel else {})}).encode()
        return self.cached


NODE_KEY: "web.RequestKey[SimNode]" = web.RequestKey("sim_node", SimNode)


class _SharedCerts(MasterCerts):
    """``MasterCerts`` whose verdict on an envelope's exact signed bytes is kept for the
    fleet's other nodes: a real agent verifies and decodes a relayed update once, for itself;
    a fleet plays hundreds of nodes on one loop, and decoding a deploy's delta of tens of KB
    again for each of them stalled the loop long enough for the master's polls to time out
    (bench/scale at 1,000 nodes). Refusals are not kept: a forgery is checked every time."""

    def __init__(self, ca_pem: bytes) -> None:
        super().__init__(ca_pem)
        self._ok: Dict[Tuple[str, str, str], Tuple[Dict[str, Any], bytes]] = {}

    def verify(self, body: Any, now: Optional[float] = None) -> Tuple[Dict[str, Any], bytes]:
        key = None
        if isinstance(body, dict) and all(isinstance(body.get(k), str)
                                          for k in ("sig", "signer", "update")):
            key = (body["sig"], body["signer"], body["update"])
            hit = self._ok.get(key)
            if hit is not None and self.trust.by_fp(bytes.fromhex(key[1])) is not None:
                return hit          # still a known (not revoked) master's
        got = super().verify(body, now)
        if key is not None:
            if len(self._ok) >= 8:
                self._ok.pop(next(iter(self._ok)))
            self._ok[key] = got
        return got


class SimFleet:
    def __init__(self, home: Path, nodes: Sequence[Dict[str, Any]], port: int,
                 run_delay: float = 0.5, suspect_after: float = 1.5,
                 dead_after: Optional[float] = None, everyone: Optional[Sequence[Dict[str, Any]]] = None,
                 cluster_id: str = "", legacy: bool = False, edge: bool = True) -> None:
        self.home = Path(home)
        self.port = port
        self.run_delay = run_delay
        self.cluster_id = cluster_id
        self.legacy = legacy
        self.nodes: Dict[str, SimNode] = {n["name"]: SimNode(n["name"], n["address"], dict(n.get("labels") or {}),
                                                  edge_channel=edge)
                                          for n in nodes}
        self.by_addr = {n.address: n for n in self.nodes.values()}
        total = len(everyone) if everyone is not None else len(nodes)
        self.suspect_after = suspect_after
        # memberlist's suspicion timeout: 4 * max(1, log10 N) probe intervals of 1 s
        self.dead_after = dead_after if dead_after is not None else 4 * max(1.0, math.log10(max(total, 1)))
        self.members: Dict[str, Dict[str, Any]] = {}
        for n in (everyone if everyone is not None else nodes):
            self.members[n["name"]] = {
                "name": n["name"], "address": n["address"], "port": 7946, "state": "alive",
                "incarnation": 1, "meta": {"address": n["address"], "api_port": port,
                                           "labels": dict(n.get("labels") or {}), "version": "sim",
                                           "cpu_percent": 12.5, "mem_used": 2 << 30,
                                           "mem_total": 16 << 30, "load1": 0.4, "cpus": 8, "tasks": 10}}
        self._members_body: Optional[bytes] = None
        self._members_brief: bytes = b"[]"
        self.log: List[Tuple[float, str, str, str, int]] = []   # (t, node, task, service, slot)
        self.terms: Dict[str, Dict[int, float]] = {}   # node -> term -> when one last arrived
        self.bytes_in: Dict[str, int] = {}
        self.bytes_out: Dict[str, int] = {}
        self.bytes_in_path: Dict[str, int] = {}     # "PUT /v1/routes" -> bytes
        self.requests: Dict[str, int] = {}
        self.peer_bytes_in: Dict[str, int] = {}     # what other agents sent (the relay)
        self.peer_requests: Dict[str, int] = {}
        self.relay_counters: Dict[str, int] = {}    # relay_received, relay_forwarded, relay_refused
        self.master_certs: Optional[_SharedCerts] = None
        self._view: Optional[View] = None
        self.no_relay: Set[str] = set()     # nodes that refuse relays (503): a forwarder down
        self.hang_relay: Set[str] = set()   # nodes that accept a relay and never answer it
        self.relays_hanging = 0             # such requests not answered yet
        self.relay_release = asyncio.Event()   # set: the hanging ones answer 503 at last
        self._session: Any = None
        self.runner: Optional[web.AppRunner] = None
        self._timers: List[asyncio.TimerHandle] = []
        self.cpu: Dict[str, float] = {}   # service -> task CPU percent reported

    # --- life cycle ---------------------------------------------------------------

    def _members_changed(self) -> None:
        self._members_body = None
        self._view = None

    def view(self) -> View:
        """The gossip view a relaying node forwards from (alive members' API addresses)."""
        if self._view is None:
            self._view = view_of(list(self.members.values()))
        return self._view

    async def start(self) -> None:
        await asyncio.to_thread(self._make_certs)
        import aiohttp
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(
            limit=4096, limit_per_host=2, keepalive_timeout=290.0))
        for n in self.nodes.values():
            n.forwarder = Forwarder(lambda _t, n=n: n.client_ctx, session=self._session)
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        app.add_routes([web.get("/v1/info", self._info), web.put("/v1/assignment", self._put),
                        web.get("/v1/assignment", self._get_assignment),
                        web.put("/v1/routes", self._put_routes),
                        web.put(RELAY_PATH, self._put_relay),
                        web.put("/v1/edge", self._put_edge),
                        web.get("/v1/tasks", self._tasks), web.get("/v1/stats", self._stats),
                        web.get("/v1/members", self._members)])
        # idle connections kept 5 minutes (aiohttp: 75 s): the relay's between simulated nodes
        # outlive the calm between two health flips; a new TLS connection to each of 500 nodes
        # of one process at once stalls its loop for about a second
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5,
                                    keepalive_timeout=300.0)
        await self.runner.setup()
        for n in self.nodes.values():
            await self._listen(n)

    def _make_certs(self) -> None:
        ca = pki.KeyPair((self.home / "ca.key").read_bytes(), (self.home / "ca.crt").read_bytes())
        self.master_certs = _SharedCerts(ca.cert_pem)
        with tempfile.TemporaryDirectory(prefix="simagents-") as tmp:
            for n in self.nodes.values():
                kp = pki.issue(ca, n.name, "agent", [n.address])
                crt, key = Path(tmp) / f"{n.name}.crt", Path(tmp) / f"{n.name}.key"
                crt.write_bytes(kp.cert_pem)
                key.write_bytes(kp.key_pem)
                key.chmod(0o600)
                n.ctx = server_context(str(crt), str(key), str(self.home / "ca.crt"))
                # A stand-in: the child's role is checked, not its name (one context per node,
                # not per pair: 1,000 nodes relay to 8 children each)
                n.client_ctx = client_context(str(crt), str(key), str(self.home / "ca.crt"),
                                              expect=Expect(role="agent"))

    async def _listen(self, n: SimNode) -> None:
        assert self.runner is not None
        n.site = web.TCPSite(self.runner, n.address, self.port, ssl_context=n.ctx,
                             reuse_address=True, backlog=128)
        await n.site.start()

    async def close(self) -> None:
        for h in self._timers:
            h.cancel()
        for n in self.nodes.values():
            self._cut(n)
            self._close_servers(n, list(n.servers))
        if self.runner is not None:
            await self.runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # --- faults ---------------------------------------------------------------------

    async def kill(self, names: Iterable[str], refuse: bool = False) -> None:
        """Nodes die: cut streams, and new connections cut after their handshake (``refuse``:
        the listener closes, connections refused: ``crash``); gossip suspects, then buries them."""
        now = time.time()
        loop = asyncio.get_running_loop()
        for name in names:
            n = self.nodes.get(name)
            if n is not None and n.alive:
                n.alive, n.died_at = False, now
                if refuse and n.site is not None:
                    await n.site.stop()
                    n.site = None
                self._cut(n)
                self._close_servers(n, list(n.servers))
            if name in self.members:
                self._timers.append(loop.call_later(self.suspect_after, self._gossip, name, "suspect", now))
                self._timers.append(loop.call_later(self.dead_after, self._gossip, name, "dead", now))

    async def crash(self, names: Iterable[str]) -> None:
        """Agent processes die on hosts that stay up: connections refused (``kill``)."""
        await self.kill(names, refuse=True)

    def freeze(self, names: Iterable[str]) -> None:
        """Nodes hang: no answers, connections kept; gossip suspects them, then buries them."""
        now, loop = time.time(), asyncio.get_running_loop()
        for name in names:
            n = self.nodes.get(name)
            if n is not None and n.frozen is None:
                n.frozen, n.died_at = asyncio.Event(), now
                self._timers.append(loop.call_later(self.suspect_after, self._gossip_frozen, name,
                                                    "suspect", now))
                self._timers.append(loop.call_later(self.dead_after, self._gossip_frozen, name,
                                                    "dead", now))

    def thaw(self, names: Iterable[str]) -> None:
        for name in names:
            n = self.nodes.get(name)
            if n is not None and n.frozen is not None:
                n.frozen.set()
                n.frozen, n.died_at = None, None
                m = self.members.get(name)
                if m is not None:
                    m["state"], m["incarnation"] = "alive", m["incarnation"] + 1
                    self._members_changed()

    def _gossip_frozen(self, name: str, state: str, since: float) -> None:
        n, m = self.nodes.get(name), self.members.get(name)
        if n is not None and m is not None and n.frozen is not None and n.died_at == since:
            m["state"] = state
            self._members_changed()

    async def revive(self, names: Iterable[str]) -> None:
        for name in names:
            n = self.nodes.get(name)
            if n is not None and not n.alive:
                n.alive, n.died_at = True, None
                if n.site is None:
                    await self._listen(n)
                for tid, target in list(n.published.items()):
                    if tid in n.tasks:
                        await self._serve(n, tid, target)
            m = self.members.get(name)
            if m is not None:
                m["state"], m["incarnation"] = "alive", m["incarnation"] + 1
                self._members_changed()

    def _gossip(self, name: str, state: str, died_at: float) -> None:
        n, m = self.nodes.get(name), self.members.get(name)
        if m is None:
            return
        if n is not None and (n.alive or n.died_at != died_at):
            return   # came back meanwhile
        if n is None and m.get("_revived_after", 0) > died_at:
            return
        m["state"] = state
        self._members_changed()

    def _cut(self, n: SimNode) -> None:
        for t in list(n.transports):
            t.abort()
        n.transports.clear()
        n.changed()   # wake long polls: they find the node dead and are cut

    def set_health(self, node: str, task: str, health: str) -> bool:
        n = self.nodes.get(node)
        if n is None or task not in n.tasks:
            return False
        n.tasks[task] = {**n.tasks[task], "health": health, "updated_at": time.time()}
        n.changed()
        return True

    def set_cpu(self, service: str, percent: float) -> None:
        self.cpu[service] = percent

    async def _serve(self, n: SimNode, tid: str, target: int) -> None:
        """Answer HTTP for a published replica on the node's address; its host port."""
        loop = asyncio.get_running_loop()
        port = n.tasks[tid]["host_ports"].get(f"{target}/tcp") or 0
        for attempt in range(5):
            try:
                server = await loop.create_server(_Replica, n.address, port if attempt == 0 else 0)
                break
            except OSError:
                continue
        else:
            return
        n.servers[tid] = server
        n.tasks[tid]["host_ports"] = {f"{target}/tcp": server.sockets[0].getsockname()[1]}

    def _close_servers(self, n: SimNode, tids: Iterable[str]) -> None:
        for tid in tids:
            server = n.servers.pop(tid, None)
            if server is not None:
                server.close()

    def set_gossip(self, name: str, state: str) -> None:
        """For fleets that do not own ``name``: follow the driver's word on its state."""
        if name in self.members:
            self.members[name]["state"] = state
            self._members_changed()

    # --- the agent API --------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        sock = request.transport.get_extra_info("sockname") if request.transport else None
        n = self.by_addr.get(sock[0]) if sock else None
        if n is None or not n.alive:
            if request.transport is not None:
                request.transport.abort()
            raise web.HTTPServiceUnavailable()
        if n.frozen is not None:
            await n.frozen.wait()     # a hung host: the caller's timeout decides
        ssl_object = request.transport.get_extra_info("ssl_object")
        role = peer_role(ssl_object)
        key = f"{request.method} {request.path.split('?')[0]}"
        if role not in ("master", "cli") and not (role == "agent" and key == f"PUT {RELAY_PATH}"):
            return web.json_response({"error": "role may not use the agent API"}, status=403)
        if role == "master" and self.master_certs is not None:
            self.master_certs.learn(ssl_object.getpeercert(binary_form=True))
        size = len(request.method) + len(request.raw_path) + 11 + sum(
            len(k) + len(v) + 4 for k, v in request.raw_headers) + (request.content_length or 0)
        if role == "agent":      # another agent relaying: counted apart from the master's bytes
            self.peer_bytes_in[request.method] = self.peer_bytes_in.get(request.method, 0) + size
            self.peer_requests[key] = self.peer_requests.get(key, 0) + 1
        else:
            self.bytes_in[request.method] = self.bytes_in.get(request.method, 0) + size
            self.bytes_in_path[key] = self.bytes_in_path.get(key, 0) + size
            self.requests[key] = self.requests.get(key, 0) + 1
        request[NODE_KEY] = n
        n.transports.add(request.transport)
        try:
            resp = await handler(request)
        finally:
            n.transports.discard(request.transport)
        body = getattr(resp, "body", None)
        self.bytes_out[key] = self.bytes_out.get(key, 0) + (len(body) if isinstance(body, (bytes, bytearray)) else 0)
        return resp

    async def _info(self, request: web.Request) -> web.Response:
        n = request[NODE_KEY]
        return web.json_response({"name": n.name, "address": n.address, "version": "sim",
                                  "cluster_id": self.cluster_id, "api_port": self.port,
                                  "gossip_port": 7946, "labels": n.labels})

    async def _put(self, request: web.Request) -> web.Response:
        n = request[NODE_KEY]
        raw = await request.read()
        try:
            body = json.loads(raw)
            version = int(body["version"])
            term = int(body.get("term") or 0)
            tasks = body.get("tasks") or []
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": f"bad assignment: {exc}"}, status=400)
        if body.get("node") != n.name:
            return web.json_response({"error": f"assignment is for node {body.get('node')!r}"}, status=400)
        self.terms.setdefault(n.name, {})[term] = time.time()
        if term < n.term:
            return web.json_response({"error": f"stale term {term}: this node follows term {n.term}",
                                      "current": n.version, "term": n.term}, status=409)
        if term == n.term and version < n.version:
            return web.json_response({"error": "stale assignment", "current": n.version,
                                      "term": n.term}, status=409)
        if term == n.term and version == n.version:
            return web.json_response({"version": version, "applied": False})
        n.term = term
        now = time.time()
        n.version, n.assignment = version, raw
        want = {}
        for t in tasks:
            want[t["task_id"]] = t
        for tid in list(n.tasks):
            if tid not in want:
                del n.tasks[tid]
                n.published.pop(tid, None)
                self._close_servers(n, [tid])
        loop = asyncio.get_running_loop()
        for tid, t in want.items():
            if tid in n.tasks:
                continue
            checked = ((t.get("health") or {}).get("kind") or "none") != "none"
            ports = {f"{p['target']}/tcp": 20000 + (hash(tid) % 40000) for p in t.get("ports") or []}
            n.tasks[tid] = {"task_id": tid, "service": t["service"], "revision": t["revision"],
                            "state": ASSIGNED, "health": "starting" if checked else "none", "reason": "",
                            "container_id": f"sim{abs(hash(tid)) % 10**12:012d}", "host_ports": ports,
                            "restarts": 0, "updated_at": now}
            published = [p for p in t.get("ports") or [] if p.get("published")]
            if published:
                n.published[tid] = int(published[0]["target"])
                await self._serve(n, tid, n.published[tid])
            self.log.append((now, n.name, tid, t["service"], int(t.get("slot", 0))))
            broken = "broken" in str(t.get("image", ""))
            self._timers.append(loop.call_later(self.run_delay, self._run, n, tid, checked, broken))
        if len(self._timers) > 4096:
            self._timers = [h for h in self._timers if not h.cancelled() and h.when() > loop.time()]
        n.changed()
        return web.json_response({"version": version, "applied": True})

    def _run(self, n: SimNode, tid: str, checked: bool, broken: bool = False) -> None:
        t = n.tasks.get(tid)
        if t is None or t["state"] >= RUNNING:
            return
        health = ("unhealthy" if broken else "healthy") if checked else "none"
        n.tasks[tid] = {**t, "state": RUNNING, "health": health, "updated_at": time.time(),
                        "reason": "health check failed: 503" if broken and checked else ""}
        n.changed()

    async def _put_routes(self, request: web.Request) -> web.Response:
        """Versioned as the real agent (``agent/routestate.py``): a whole table replaces, a delta
        applies only on the version it was made against, else 409 (the master resends it all)."""
        n = request[NODE_KEY]
        try:
            body = json.loads(await request.read())
            version, epoch, base = int(body["version"]), int(body.get("epoch", 0)), int(body.get("base", 0))
            term = int(body.get("term", 0))
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": f"bad routes update: {exc}"}, status=400)
        try:
            applied = self._offer_routes(n, version, epoch, base, term)
        except StaleRoutes:
            return web.json_response({"error": "stale routes", "current": n.routes_version,
                                      "epoch": n.routes_epoch, "term": n.routes_term}, status=409)
        return web.json_response({"version": version, "applied": applied})

    @staticmethod
    def _offer_routes(n: SimNode, version: int, epoch: int, base: int, term: int) -> bool:
        """``routestate.offer``'s rules on the version alone; ``StaleRoutes`` if refused."""
        n.routes_log = (n.routes_log + [(version, base)])[-64:]
        same = term == n.routes_term and epoch == n.routes_epoch
        if same and version == n.routes_version:     # the one held (whatever its base)
            return False
        if term < n.routes_term or (same and version < n.routes_version) or (
                base and not (same and base == n.routes_version)):
            raise StaleRoutes(n.routes_version, n.routes_epoch, term=n.routes_term)
        n.routes_version, n.routes_epoch, n.routes_term = version, epoch, term
        return True

    async def _put_relay(self, request: web.Request) -> web.Response:
        """As the real agent (``agent/relayapi.py``)."""
        n = request[NODE_KEY]
        c = self.relay_counters
        if n.name in self.no_relay:
            return web.json_response({"error": "relay off on this node"}, status=503)
        if n.name in self.hang_relay:       # a forwarder wedged after accepting the request
            self.relays_hanging += 1
            try:
                await asyncio.wait_for(self.relay_release.wait(), 120)
            except asyncio.TimeoutError:
                pass
            finally:
                self.relays_hanging -= 1
            return web.json_response({"error": "relay hung on this node"}, status=503)

        def refused(status: int, why: str) -> web.Response:
            c["relay_refused"] = c.get("relay_refused", 0) + 1
            return web.json_response({"error": why}, status=status)

        try:
            body = json.loads(await request.read())
        except ValueError as exc:
            return refused(400, f"bad relay envelope: {exc}")

        async def apply(u: Dict[str, Any]) -> Optional[str]:
            try:       # the version fields alone, as PUT /v1/routes here (verify checked them)
                self._offer_routes(n, u["version"], u.get("epoch", 0), u["base"], u.get("term", 0))
            except StaleRoutes as exc:
                return f"409: {exc}"
            return None
        assert self.master_certs is not None
        try:
            answer = await relay(body, n.name, self.master_certs, self.view(), apply, n.forwarder, c)
        except RelayRefused as exc:
            return refused(exc.status, str(exc))
        return web.json_response(answer)

    async def _put_edge(self, request: web.Request) -> web.Response:
        """Ordered by (term, epoch, version) as the real agent (``agent/edgestate.py``); the
        certificates are not kept (nothing here serves TLS on the edge)."""
        n = request[NODE_KEY]
        if not n.edge_channel:
            return web.json_response({"error": "not found"}, status=404)
        try:
            body = json.loads(await request.read())
            key = (int(body.get("term", 0)), int(body.get("epoch", 0)), int(body["version"]))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return web.json_response({"error": f"bad edge update: {exc}"}, status=400)
        (term, epoch, version), (h_term, h_epoch, h_version) = key, n.edge
        if term < h_term or (term == h_term and epoch == h_epoch and version < h_version):
            return web.json_response({"error": "stale edge update", "current": h_version,
                                      "epoch": h_epoch, "term": h_term}, status=409)
        applied = key != n.edge
        if applied:
            n.edge = key
            n.changed()     # the report carries it
        return web.json_response({"version": key[2], "applied": applied})

    async def _get_assignment(self, request: web.Request) -> web.Response:
        n = request[NODE_KEY]
        if n.assignment is None:
            return web.json_response({"error": "no assignment yet", "current": 0}, status=404)
        return web.Response(body=n.assignment, content_type="application/json")

    async def _tasks(self, request: web.Request) -> web.Response:
        n = request[NODE_KEY]
        q = request.query
        if self.legacy:
            body = json.loads(n.report())
            del body["seq"]
            return web.json_response(body)
        if "since" in q and "wait" in q:
            try:
                since, wait = int(q["since"]), min(LONG_POLL_MAX, max(0.0, float(q["wait"])))
            except ValueError:
                return web.json_response({"error": "since and wait are numbers"}, status=400)
            if since == n.seq and wait > 0:
                fut = asyncio.get_running_loop().create_future()
                n.waiters.add(fut)
                try:
                    await asyncio.wait_for(fut, wait)
                except asyncio.TimeoutError:
                    pass
                finally:
                    n.waiters.discard(fut)
                if not n.alive:
                    if request.transport is not None:
                        request.transport.abort()
                    raise web.HTTPServiceUnavailable()
                if n.frozen is not None:
                    await n.frozen.wait()
        return web.Response(body=n.report(), content_type="application/json")

    async def _stats(self, request: web.Request) -> web.Response:
        n = request[NODE_KEY]
        tasks = {tid: {"cpu_percent": self.cpu.get(t["service"], 3.0), "mem_used": 64 << 20}
                 for tid, t in n.tasks.items()}
        # Figures that differ from node to node (a heatmap of equal cells shows nothing)
        # and follow the replicas' CPU: 8 CPUs, 16 GiB.
        spread = zlib.crc32(n.name.encode()) % 100
        cpu = min(100.0, 4.0 + spread * 0.3 + sum(t["cpu_percent"] for t in tasks.values()) / 8)
        mem = (1 << 30) + spread * (80 << 20) + len(tasks) * (64 << 20)
        return web.json_response({"node": {"cpu_percent": round(cpu, 1), "mem_used": mem,
                                           "mem_total": 16 << 30, "load1": round(cpu * 0.08, 2), "cpus": 8,
                                           "tasks": len(n.tasks)}, "tasks": tasks})

    async def _members(self, request: web.Request) -> web.Response:
        brief = request.query.get("brief") in ("1", "true", "yes")
        if self._members_body is None:
            self._members_body = json.dumps(
                [{k: v for k, v in m.items() if not k.startswith("_")} for m in self.members.values()]).encode()
            self._members_brief = json.dumps(
                [{k: m[k] for k in ("name", "state", "incarnation")} for m in self.members.values()]).encode()
        return web.Response(body=self._members_brief if brief else self._members_body,
                            content_type="application/json")

    # --- what the benchmark reads ------------------------------------------------------

    def counters(self) -> Dict[str, Any]:
        return {"bytes_in": dict(self.bytes_in), "bytes_out": dict(self.bytes_out),
                "bytes_in_path": dict(self.bytes_in_path),
                "requests": dict(self.requests), "peer_bytes_in": dict(self.peer_bytes_in),
                "peer_requests": dict(self.peer_requests), "relay": dict(self.relay_counters),
                "log": len(self.log),
                "routes_versions": dict(collections.Counter(
                    n.routes_version for n in self.nodes.values() if n.alive)),
                "tasks": sum(len(n.tasks) for n in self.nodes.values() if n.alive),
                "running": sum(1 for n in self.nodes.values() if n.alive
                               for t in n.tasks.values() if t["state"] == RUNNING)}


# --- process mode: a control API for the benchmark driver ----------------------------------

class FleetProcs:
    """Simulated agents in ``parts`` processes, driven over their control APIs (async)."""

    def __init__(self, home: Path, nodes: Sequence[Dict[str, Any]], port: int, parts: int = 1,
                 run_delay: float = 0.5, cluster_id: str = "", workdir: Optional[Path] = None,
                 preexec_fn: Any = None) -> None:
        self.home, self.nodes, self.port, self.parts = Path(home), list(nodes), port, parts
        self.run_delay, self.cluster_id = run_delay, cluster_id
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="simfleet-"))
        self.preexec_fn = preexec_fn
        self.procs: List[Tuple[Any, int]] = []
        self._http: Any = None

    def start(self) -> None:
        import os
        import subprocess
        repo = Path(__file__).resolve().parents[2]
        (self.workdir / "roster.json").write_text(json.dumps(self.nodes))
        env = {**os.environ, "PYTHONPATH": str(repo)}
        procs = [subprocess.Popen(
            [sys.executable, "-m", "tests.tools.simagents", "--home", str(self.home),
             "--roster", str(self.workdir / "roster.json"), "--part", f"{i}/{self.parts}",
             "--port", str(self.port), "--run-delay", str(self.run_delay), "--cluster-id", self.cluster_id],
            cwd=str(repo), env=env, stdout=subprocess.PIPE, preexec_fn=self.preexec_fn,
            stderr=open(self.workdir / f"sim{i}.log", "w"), text=True) for i in range(self.parts)]
        for p in procs:
            line = p.stdout.readline().split()
            if len(line) != 2 or line[0] != "ready":
                for q in procs:
                    q.kill()
                raise RuntimeError(f"simulated agents did not start: see {self.workdir}/sim*.log")
            self.procs.append((p, int(line[1])))

    async def all(self, method: str, path: str, body: Any = None) -> List[Any]:
        import aiohttp
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))

        async def one(port: int) -> Any:
            async with self._http.request(method, f"http://127.0.0.1:{port}{path}", json=body) as r:
                return await r.json()
        return await asyncio.gather(*(one(port) for _, port in self.procs))

    async def kill(self, names: Sequence[str]) -> None:
        await self.all("POST", "/kill", {"names": list(names)})

    async def crash(self, names: Sequence[str]) -> None:
        await self.all("POST", "/crash", {"names": list(names)})

    async def revive(self, names: Sequence[str]) -> None:
        await self.all("POST", "/revive", {"names": list(names)})

    async def set_health(self, node: str, task: str, health: str) -> bool:
        return any(r["ok"] for r in await self.all("POST", "/health",
                                                    {"node": node, "task": task, "health": health}))

    async def set_cpu(self, service: str, cpu: float) -> None:
        await self.all("POST", "/cpu", {"service": service, "cpu": cpu})

    async def counters(self) -> List[Dict[str, Any]]:
        return await self.all("GET", "/counters")

    async def log(self) -> List[List[Any]]:
        return [row for part in await self.all("GET", "/log?since=0") for row in part]

    async def close(self) -> None:
        import signal
        import subprocess
        if self._http is not None:
            await self._http.close()
        for p, _ in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p, _ in self.procs:
            try:
                await asyncio.to_thread(p.wait, 15)
            except subprocess.TimeoutExpired:
                p.kill()

def awaiting_where(limit: int = 40) -> List[Tuple[str, int]]:
    """(innermost frame of what each asyncio task awaits, count), the most common first."""
    where: Dict[str, int] = {}
    for t in asyncio.all_tasks():
        coro: Any = t.get_coro()
        frame, seen = None, 0
        while coro is not None and seen < 64:
            f = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
            if f is not None:
                frame = f
            coro, seen = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None), seen + 1
        key = (f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno} {frame.f_code.co_name}"
               if frame is not None else repr(t.get_coro())[:80])
        where[key] = where.get(key, 0) + 1
    return sorted(where.items(), key=lambda kv: -kv[1])[:limit]


def control_app(fleet: SimFleet) -> web.Application:
    async def kill(request: web.Request) -> web.Response:
        await fleet.kill((await request.json())["names"])
        return web.json_response({"ok": True})

    async def crash(request: web.Request) -> web.Response:
        await fleet.crash((await request.json())["names"])
        return web.json_response({"ok": True})

    async def revive(request: web.Request) -> web.Response:
        await fleet.revive((await request.json())["names"])
        return web.json_response({"ok": True})

    async def health(request: web.Request) -> web.Response:
        b = await request.json()
        return web.json_response({"ok": fleet.set_health(b["node"], b["task"], b["health"])})

    async def cpu(request: web.Request) -> web.Response:
        b = await request.json()
        fleet.set_cpu(b["service"], float(b["cpu"]))
        return web.json_response({"ok": True})

    async def log(request: web.Request) -> web.Response:
        since = int(request.query.get("since", 0))
        return web.json_response(fleet.log[since:])

    async def counters(request: web.Request) -> web.Response:
        return web.json_response(fleet.counters())

    async def tasks(request: web.Request) -> web.Response:
        return web.json_response({n.name: sorted(n.tasks) for n in fleet.nodes.values()})

    async def awaiting(request: web.Request) -> web.Response:
        """Where this process's asyncio tasks wait, counted by their innermost frame (what a
        stalled fleet is stuck on: a profiler sees threads, not tasks)."""
        return web.json_response(awaiting_where())

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.add_routes([web.post("/kill", kill), web.post("/crash", crash), web.post("/revive", revive),
                    web.post("/health", health),
                    web.post("/cpu", cpu),
                    web.get("/log", log), web.get("/counters", counters), web.get("/tasks", tasks),
                    web.get("/awaiting", awaiting)])
    return app


async def _serve(args: argparse.Namespace) -> None:
    everyone = json.loads(Path(args.roster).read_text())
    part, parts = (int(x) for x in args.part.split("/"))
    mine = everyone[part::parts]
    fleet = SimFleet(Path(args.home), mine, args.port, run_delay=args.run_delay,
                     everyone=everyone, cluster_id=args.cluster_id)
    await fleet.start()
    runner = web.AppRunner(control_app(fleet), access_log=None, handle_signals=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    print(f"ready {port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await fleet.close()


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description="simulated swarmlet agents (see the module docstring)")
    ap.add_argument("--home", required=True, help="cluster home with ca.crt and ca.key")
    ap.add_argument("--roster", required=True, help="JSON list of {name, address, labels}")
    ap.add_argument("--part", default="0/1", help="this process serves roster[i::k]")
    ap.add_argument("--port", type=int, required=True, help="the agents' API port")
    ap.add_argument("--run-delay", type=float, default=0.5)
    ap.add_argument("--cluster-id", default="")
    args = ap.parse_args(argv)
    try:
        asyncio.run(_serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main(sys.argv[1:])
