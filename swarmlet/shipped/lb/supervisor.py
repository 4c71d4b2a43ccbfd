"""``IngressProcess``: the node's load balancers in a worker process, fed by the agent.

Same face as ``ingress.Ingress`` (``apply(routes, graceful)``, ``close()``,
``snapshot()``, ``metrics_text()``, ``proxies``, ``errors``), so the agent and
the master use it in its place. The load balancers run in
``python -m swarmlet.shipped.lb.worker`` (``worker.py``) on a loop of their
own: a flood on a published port (endless headers, thousands of
connections, websockets sending before their 101) costs the worker, and the
caller's loop (the agent's API, reconcile and gossip; the master's API and
reconcile) never waits on it.

- The channel is a Unix socket pair (``control.py``); the worker's end is an
  inherited fd, so the sticky-cookie key never shows on a command line.
- The caller stays the single source of the routes: every ``apply`` sends the
  full table; a restarted worker gets the config and the latest table again.
- ``apply`` waits for the worker's ``applied`` at most ``ack_timeout`` (a
  flooded worker may answer late; the routes are still applied in order).
- ``snapshot()`` and ``metrics_text()`` answer at once from what the worker
  last pushed (every ``status_interval``): reading them never blocks on it;
  ``await refresh()`` first asks for fresh figures, waiting 0.5 s at most
  (the agent's and master's ``/metrics`` do).
- A worker that dies is restarted (backoff 0.5 s doubling to 10 s) and fed.
  It exits by itself when the channel closes, so it never outlives its agent.

Why a process and not a thread: the LB is CPU-bound Python, and the GIL
would let a flood starve the agent's loop all the same. Several workers per
node (issue 18: one per core, each binding the ports with ``SO_REUSEPORT``)
are one ``IngressProcess(reuse_port=True)`` per worker, fed the same table (the
kernel spreads new connections over them); certificates per SNI and host/path
routes travel in the same messages.

Shipped to agents: Python 3.9, standard library only.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
import sys
from typing import AbstractSet, Any, Dict, Iterable, List, Optional

from ..exceptions import ProtocolError
from ..models import to_wire
from . import control

log = logging.getLogger("swarmlet.ingress")


class IngressProcess:
    def __init__(self, bind_host: str = "0.0.0.0", drain_grace: float = 5.0,
                 sticky_key: bytes = b"", limits: Optional[Dict[str, int]] = None, *,
                 status_interval: float = 1.0, ack_timeout: float = 2.0,
                 python: str = sys.executable, reuse_port: bool = False,
                 edge: Optional[Dict[str, Any]] = None) -> None:
        self.bind_host = bind_host
        self.drain_grace = drain_grace
        self.sticky_key = sticky_key or os.urandom(32)
        self.limits = dict(limits or {})
        self.status_interval = status_interval
        self.ack_timeout = ack_timeout
        self.python = python
        self.reuse_port = reuse_port     # True for each of several workers on the same ports
        self.edge = dict(edge or {})     # Edge's keywords: http_port, https_port, handshake
        self.errors: Dict[int, str] = {}
        self.restarts = 0
        self.pid: Optional[int] = None
        self._snapshot: Dict[str, Any] = {}
        self._metrics = ""
        self._routes: Optional[Dict[str, Any]] = None    # the latest "routes" message
        self._version = 0
        self._applied = 0
        self._acked = asyncio.Event()
        # the latest "edge" and "challenges" messages, resent to a new worker; their acks
        self._edge: Optional[Dict[str, Any]] = None
        self._challenges: Optional[Dict[str, Any]] = None
        self._acks: Dict[str, int] = {"edge": 0, "challenges": 0}
        self._sent: Dict[str, int] = {"edge": 0, "challenges": 0}
        self._edge_status: Dict[str, Any] = {}
        self._status_seq = 0
        self._status_event = asyncio.Event()
        self._writer: Optional[asyncio.StreamWriter] = None
        self._proc: Any = None
        self._task: Optional["asyncio.Task[None]"] = None
        self._closing = False
        self._up = asyncio.Event()

    # --- the same face as Ingress -------------------------------------------------------

    @property
    def proxies(self) -> Dict[int, str]:
        """Published port → service, as the worker last reported (edge sites apart)."""
        return {int(p): v.get("service", "") for p, v in self._snapshot.items() if p.isdigit()}

    def snapshot(self) -> Dict[str, Any]:
        return dict(self._snapshot)

    def metrics_text(self) -> str:
        return self._metrics

    async def refresh(self, timeout: float = 0.5) -> None:
        """Ask the worker for fresh figures; wait at most ``timeout`` (a flooded worker
        answers late, and ``snapshot``/``metrics_text`` keep the last push)."""
        if self._writer is None:
            return
        seq = self._status_seq
        self._status_event.clear()
        self._send("report")
        try:
            await asyncio.wait_for(self._wait_status(seq), timeout)
        except asyncio.TimeoutError:
            pass

    async def _wait_status(self, seq: int) -> None:
        while self._status_seq == seq:
            await self._status_event.wait()
            self._status_event.clear()

    def port_of(self, published: int) -> Optional[int]:
        lb = self._snapshot.get(str(published))
        return int(lb["port"]) if lb else None

    async def apply(self, routes: Iterable[Any], graceful: AbstractSet[str] = frozenset()) -> None:
        """Send the full table; wait (bounded) until the worker applied it."""
        self._version += 1
        self._routes = {"version": self._version, "routes": [to_wire(r) for r in routes],
                        "graceful": sorted(graceful)}
        self._ensure_started()
        self._acked.clear()
        self._send("routes", **self._routes)
        try:
            await asyncio.wait_for(self._wait_applied(self._version), self.ack_timeout)
        except asyncio.TimeoutError:
            log.warning("ingress worker has not applied routes v%d within %gs (busy?)",
                        self._version, self.ack_timeout)

    async def configure_edge(self, update: Any) -> bool:
        """Send the edge's settings and certificates (``models.EdgeUpdate``); True once the
        worker applied them (waits ``ack_timeout`` at most)."""
        self._edge = {"version": self._next("edge"), "update": to_wire(update)}
        return await self._send_acked("edge", self._edge)

    async def set_challenges(self, tokens: Dict[str, str]) -> bool:
        """Send the ACME tokens to answer; True once the worker answers them."""
        self._challenges = {"version": self._next("challenges"), "tokens": dict(tokens)}
        return await self._send_acked("challenges", self._challenges)

    def edge_status(self) -> Dict[str, Any]:
        return dict(self._edge_status)

    def _next(self, kind: str) -> int:
        self._sent[kind] += 1
        return self._sent[kind]

    async def _send_acked(self, kind: str, msg: Dict[str, Any]) -> bool:
        self._ensure_started()
        self._send(kind, **msg)
        version = msg["version"]
        try:
            await asyncio.wait_for(self._wait_ack(kind, version), self.ack_timeout)
        except asyncio.TimeoutError:
            log.warning("ingress worker has not applied %s v%d within %gs (busy?)", kind,
                        version, self.ack_timeout)
            return False
        return True

    async def _wait_ack(self, kind: str, version: int) -> None:
        while self._acks[kind] < version:
            await self._acked.wait()
            self._acked.clear()

    async def start(self) -> None:
        """Start the worker now (``apply`` would start it too) and wait for its hello."""
        self._ensure_started()
        try:
            await asyncio.wait_for(self._up.wait(), 10.0)
        except asyncio.TimeoutError:
            log.warning("ingress worker did not start within 10s")

    async def close(self) -> None:
        self._closing = True
        self._send("stop")
        proc = self._proc
        if proc is not None and proc.returncode is None:
            try:
                await asyncio.wait_for(proc.wait(), self.drain_grace + 2.0)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        if self._writer is not None:
            self._writer.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    # --- the worker's life ------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._task is None and not self._closing:
            self._task = asyncio.get_running_loop().create_task(self._supervise(),
                                                                name="ingress-worker")

    async def _wait_applied(self, version: int) -> None:
        while self._applied < version:
            await self._acked.wait()
            self._acked.clear()

    def _send(self, op: str, **fields: Any) -> None:
        w = self._writer
        if w is not None and not w.is_closing():
            w.write(control.encode(op, **fields))

    async def _supervise(self) -> None:
        backoff = 0.5
        while not self._closing:
            started = asyncio.get_running_loop().time()
            try:
                await self._run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not end supervision
                log.exception("ingress worker supervision")
            if self._closing:
                return
            if asyncio.get_running_loop().time() - started > 30:
                backoff = 0.5               # it ran for a while: start over quickly
            self.restarts += 1
            log.warning("ingress worker exited; restarting in %.1fs", backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    async def _run_once(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                self.python, "-m", "swarmlet.shipped.lb.worker", "--control-fd",
                str(child.fileno()), pass_fds=(child.fileno(),), stdin=asyncio.subprocess.DEVNULL)
        finally:
            child.close()
        self.pid = self._proc.pid
        reader, writer = await asyncio.open_unix_connection(sock=parent, limit=control.MAX_LINE)
        self._writer = writer
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, ConnectionError) as exc:
                    log.error("ingress worker channel: %s", exc)
                    break
                if not line:
                    break
                try:
                    msg = control.decode(line)
                except ProtocolError as exc:
                    log.error("%s", exc)
                    break
                self._on_message(msg)
        finally:
            self._writer = None
            writer.close()
            self._up.clear()
            if self._proc.returncode is None:
                self._proc.kill()
            await self._proc.wait()

    def _on_message(self, msg: Dict[str, Any]) -> None:
        op = msg["op"]
        if op == "hello":
            self._send("config", bind=self.bind_host, drain_grace=self.drain_grace,
                       sticky_key=base64.b64encode(self.sticky_key).decode(),
                       limits=self.limits, status_interval=self.status_interval,
                       reuse_port=self.reuse_port, edge=self.edge)
            for kind, again in (("edge", self._edge), ("challenges", self._challenges)):
                if again is not None:
                    self._send(kind, **again)
            if self._routes is not None:
                self._send("routes", **self._routes)
            self._up.set()
        elif op == "applied":
            self._applied = max(self._applied, int(msg.get("version") or 0))
            self.errors = {int(p): str(e) for p, e in (msg.get("errors") or {}).items()}
            for port, error in self.errors.items():
                log.warning("ingress port %d: %s", port, error)
            self._acked.set()
        elif op in ("edge_applied", "challenges_applied"):
            kind = op[:-len("_applied")]
            self._acks[kind] = max(self._acks[kind], int(msg.get("version") or 0))
            if op == "edge_applied":
                self.errors = {int(p): str(e) for p, e in (msg.get("errors") or {}).items()}
            self._acked.set()
        elif op == "status":
            edge = msg.get("edge")
            if isinstance(edge, dict):
                self._edge_status = edge
            snap = msg.get("snapshot")
            if isinstance(snap, dict):
                self._snapshot = snap
            text = msg.get("metrics")
            if isinstance(text, str):
                self._metrics = text
            self._status_seq += 1
            self._status_event.set()


__all__: List[str] = ["IngressProcess"]
