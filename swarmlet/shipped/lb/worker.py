"""The ingress worker: a process of its own that runs a node's load balancers.

``python -m swarmlet.shipped.lb.worker --control-fd N`` (started by
``supervisor.IngressProcess``, never by hand). It runs an ``Ingress`` (one
``LoadBalancer`` per published port) on its own event loop, fed over the
control channel (``control.py``): a flood on a published port then costs this
process's CPU and memory, never the agent's loop, so the agent's API,
reconcile and gossip keep their timing.

It holds nothing it was not sent: on start it says ``hello`` and waits for
``config`` and ``routes``; every ``status_interval`` it pushes its snapshot and
metrics. When the channel closes (the agent stopped or died) it drains and
exits, so no worker outlives its agent. SIGINT is ignored (the agent decides),
SIGTERM drains and exits.

Several workers share each port with ``SO_REUSEPORT`` (``reuse_port`` in the
config, one channel per worker, ``workers.IngressWorkers``); the ``edge`` message
carries the edge's certificates (with their keys: this process terminates TLS)
and ``challenges`` the ACME tokens.

Shipped to agents: Python 3.9; uses uvloop when it is importable.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import os
import signal
import socket
import sys
from typing import Any, Dict, List, Optional

from ..exceptions import ProtocolError
from ..models import EdgeUpdate, Route, from_wire
from . import control

log = logging.getLogger("swarmlet.ingress.worker")


class Worker:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.ingress: Any = None
        self.status_interval = 1.0
        self._status: Optional["asyncio.Task[None]"] = None
        self._stop = asyncio.Event()
        self._last: Optional[Dict[str, Any]] = None      # the latest routes message
        self._retry: Optional["asyncio.Future[None]"] = None

    def send(self, op: str, **fields: Any) -> None:
        if not self.writer.is_closing():
            self.writer.write(control.encode(op, **fields))

    async def run(self) -> None:
        self.send("hello", pid=os.getpid())
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        reading = asyncio.ensure_future(self._read())
        stopping = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait([reading, stopping], return_when=asyncio.FIRST_COMPLETED)
        reading.cancel()
        stopping.cancel()
        for task in (self._status, self._retry):
            if task is not None:
                task.cancel()
        if self.ingress is not None:
            await self.ingress.close()
        self.writer.close()

    async def _read(self) -> None:
        while True:
            try:
                line = await self.reader.readline()
            except (ValueError, ConnectionError) as exc:   # a line over MAX_LINE, a reset
                log.error("control channel: %s", exc)
                return
            if not line:
                return                      # the agent is gone: drain and exit
            try:
                msg = control.decode(line)
            except ProtocolError as exc:
                log.error("%s", exc)
                return
            op = msg["op"]
            if op == "config":
                self._configure(msg)
            elif op == "routes":
                await self._apply(msg)
            elif op == "edge":
                await self._edge(msg)
            elif op == "challenges":
                await self._challenges(msg)
            elif op == "report" and self.ingress is not None:
                self._send_status()         # a scrape wants fresh figures
            elif op == "stop":
                return

    def _configure(self, msg: Dict[str, Any]) -> None:
        from ..ingress import Ingress
        if self.ingress is not None:
            return                          # config is once per worker
        key = base64.b64decode(msg.get("sticky_key") or "")
        limits = {k: int(v) for k, v in (msg.get("limits") or {}).items()}
        edge = msg.get("edge") if isinstance(msg.get("edge"), dict) else {}
        self.ingress = Ingress(str(msg.get("bind") or "0.0.0.0"),
                               float(msg.get("drain_grace") or 5.0), sticky_key=key,
                               limits=limits, reuse_port=bool(msg.get("reuse_port")),
                               edge=edge)
        self.status_interval = float(msg.get("status_interval") or 1.0)
        self._status = asyncio.ensure_future(self._push_status())

    async def _apply(self, msg: Dict[str, Any]) -> None:
        if self.ingress is None:
            log.error("routes before config: ignored")
            return
        try:
            routes: List[Route] = [from_wire(Route, r) for r in msg.get("routes") or []]
        except ProtocolError as exc:
            log.error("bad routes: %s", exc)
            return
        await self.ingress.apply(routes, frozenset(msg.get("graceful") or ()))
        self.send("applied", version=msg.get("version", 0),
                  errors={str(p): e for p, e in self.ingress.errors.items()})
        self._send_status()
        self._last = msg
        if self.ingress.errors and (self._retry is None or self._retry.done()):
            self._retry = asyncio.ensure_future(self._retry_unbound())

    async def _edge(self, msg: Dict[str, Any]) -> None:
        if self.ingress is None:
            log.error("edge before config: ignored")
            return
        try:
            update = from_wire(EdgeUpdate, msg.get("update") or {})
        except ProtocolError as exc:
            log.error("bad edge update: %s", exc)
            return
        await self.ingress.configure_edge(update)
        self.send("edge_applied", version=msg.get("version", 0),
                  errors={str(p): e for p, e in self.ingress.errors.items()})
        self._send_status()

    async def _challenges(self, msg: Dict[str, Any]) -> None:
        tokens = msg.get("tokens") or {}
        if self.ingress is None or not isinstance(tokens, dict):
            log.error("challenges before config, or not a mapping: ignored")
            return
        await self.ingress.set_challenges({str(k): str(v) for k, v in tokens.items()})
        self.send("challenges_applied", version=msg.get("version", 0))

    async def _retry_unbound(self) -> None:
        """A port that could not be bound (an old worker still closing, another
        process) is tried again every 2 s, not only at the next routes change."""
        while self.ingress is not None and self.ingress.errors and self._last is not None:
            await asyncio.sleep(2.0)
            await self._apply(dict(self._last, retry=True))
            return                          # _apply schedules the next round if needed

    def _send_status(self) -> None:
        has = self.ingress.proxies or self.ingress.edge.sites
        self.send("status", snapshot=self.ingress.snapshot(),
                  metrics=self.ingress.metrics_text() if has else "",
                  edge=self.ingress.edge.status())

    async def _push_status(self) -> None:
        while True:
            await asyncio.sleep(self.status_interval)
            try:
                self._send_status()
            except Exception:  # status is advisory; never let it end the worker
                log.exception("status")


async def _main(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock, limit=control.MAX_LINE)
    await Worker(reader, writer).run()


def main(argv: List[str] = sys.argv[1:]) -> int:
    ap = argparse.ArgumentParser(prog="python -m swarmlet.shipped.lb.worker")
    ap.add_argument("--control-fd", type=int, required=True)
    args = ap.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="ingress-worker[%(process)d] %(levelname)s %(message)s")
    run = asyncio.run
    try:
        import uvloop  # type: ignore[import-not-found]
        run = uvloop.run  # noqa: F811
    except ImportError:
        pass
    run(_main(args.control_fd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
