"""Service discovery: containers reach any service by name, from any node.

Each service gets a virtual IP (VIP) from a private range (``10.254.0.0/16``
by default), chosen by the master and shipped in the routing table. Every
agent:

- adds each VIP as a /32 to its loopback interface, so packets that a
  container sends to a VIP through its default route (the Docker bridge
  gateway, i.e. this host) are delivered locally;
- listens on ``VIP:port`` for every port the service declares, and forwards
  each connection (plain TCP, any protocol) to a healthy replica anywhere in
  the cluster, trying the next one if a connect fails;
- gives every container it creates ``extra_hosts`` entries ``name -> VIP``,
  and, for a member of a stack, the short names of that stack's services
  (``db`` -> the VIP of ``shop_db`` inside stack ``shop`` only: Docker's
  per-stack network alias), so one name means each stack's own service.

So ``http://store:8080`` works in any container on any node, and it survives
the loss of any one node: the proxy is node-local and its backends span the
cluster (the same idea as kube-proxy's ClusterIP, without iptables). Names
are resolved through ``/etc/hosts``, so a service created after a container
started is known to that container from its next restart or update; VIPs of
existing services never move.

Shipped to agents: Python 3.9, standard library only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import subprocess
import zlib
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from .models import Route

log = logging.getLogger("swarmlet.shipped.discovery")
VIP_RANGE = "10.254.0.0/16"
Key = Tuple[str, int]


def assign_vips(names_oldest_first: Sequence[str], current: Optional[Mapping[str, str]] = None,
                vip_range: str = VIP_RANGE) -> Dict[str, str]:
    """A stable VIP per service: hash of the name, linear probing on collision. Pure.

    ``current`` keeps VIPs already handed out, so adding or removing a service
    never moves another one's VIP."""
    net = ipaddress.ip_network(vip_range)
    size = net.num_addresses - 2
    out: Dict[str, str] = {}
    taken: Set[str] = set()
    for name in names_oldest_first:
        if current and name in current:
            out[name] = current[name]
            taken.add(current[name])
    for name in names_oldest_first:
        if name in out:
            continue
        slot = zlib.crc32(name.encode()) % size
        for i in range(size):
            ip = str(net.network_address + 1 + (slot + i) % size)
            if ip not in taken:
                out[name] = ip
                taken.add(ip)
                break
    return out


def hosts_for(routes: Iterable[Route]) -> Dict[str, str]:
    """``extra_hosts`` for containers: service name -> VIP."""
    return {r.service: r.vip for r in routes if r.vip}


def aliases_for(routes: Iterable[Route]) -> Dict[str, Dict[str, str]]:
    """Short names inside each stack: stack -> {short name -> VIP}."""
    out: Dict[str, Dict[str, str]] = {}
    for r in routes:
        if r.vip and r.stack and r.alias:
            out.setdefault(r.stack, {})[r.alias] = r.vip
    return out


class _Forwarder:
    """One listening VIP:port, forwarding TCP connections round-robin to backends."""

    def __init__(self, key: Key, connect_timeout: float = 2.0) -> None:
        self.key = key
        self.backends: List[Key] = []
        self.connect_timeout = connect_timeout
        self._rr = 0
        self.server: Optional[asyncio.AbstractServer] = None
        self.conns: Set["asyncio.Task[None]"] = set()
        self.failures = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, self.key[0], self.key[1],
                                                 reuse_address=True)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        for t in list(self.conns):
            t.cancel()

    async def _open(self) -> Tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        order = list(self.backends)
        if not order:
            raise OSError("no healthy replica")
        self._rr = (self._rr + 1) % len(order)
        order = order[self._rr:] + order[:self._rr]
        last: Optional[BaseException] = None
        for host, port in order[:3]:
            try:
                return await asyncio.wait_for(asyncio.open_connection(host, port), self.connect_timeout)
            except (OSError, asyncio.TimeoutError) as exc:
                last = exc
        raise OSError(f"no replica answered: {last}")

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.conns.add(task)
        try:
            try:
                up_r, up_w = await self._open()
            except OSError:
                self.failures += 1
                return
            await asyncio.gather(_pipe(reader, up_w), _pipe(up_r, writer))
        finally:
            writer.close()
            if task is not None:
                self.conns.discard(task)


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await src.read(65536)
            if not data:
                break
            dst.write(data)
            await dst.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        try:
            if dst.can_write_eof():
                dst.write_eof()
        except OSError:
            pass


def _ip(*args: str) -> bool:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if proc.returncode != 0 and "File exists" not in proc.stderr:
        log.warning("ip %s: %s", " ".join(args), proc.stderr.strip())
        return False
    return True


class Discovery:
    """Keeps VIPs on the loopback interface and one forwarder per VIP:port."""

    def __init__(self, device: str = "lo") -> None:
        self.device = device
        self.forwarders: Dict[Key, _Forwarder] = {}
        self.vips: Set[str] = set()

    async def apply(self, routes: Iterable[Route]) -> None:
        want: Dict[Key, List[Key]] = {}
        for r in routes:
            if r.vip:
                want.setdefault((r.vip, r.target), []).extend((b.host, b.port) for b in r.backends)
        vips = {k[0] for k in want}
        for vip in sorted(vips - self.vips):
            if await asyncio.to_thread(_ip, "addr", "add", f"{vip}/32", "dev", self.device):
                self.vips.add(vip)
        for key in [k for k in self.forwarders if k not in want]:
            await self.forwarders.pop(key).close()
        for key, backends in want.items():
            fw = self.forwarders.get(key)
            if fw is None and key[0] in self.vips:
                fw = _Forwarder(key)
                try:
                    await fw.start()
                except OSError as exc:
                    log.warning("discovery: cannot listen on %s:%d: %s", key[0], key[1], exc)
                    continue
                self.forwarders[key] = fw
            if fw is not None:
                fw.backends = sorted(set(backends))
        for vip in sorted(self.vips - vips):
            await asyncio.to_thread(_ip, "addr", "del", f"{vip}/32", "dev", self.device)
            self.vips.discard(vip)

    async def close(self, remove_vips: bool = False) -> None:
        for fw in self.forwarders.values():
            await fw.close()
        self.forwarders.clear()
        if remove_vips:
            for vip in sorted(self.vips):
                await asyncio.to_thread(_ip, "addr", "del", f"{vip}/32", "dev", self.device)
            self.vips.clear()
