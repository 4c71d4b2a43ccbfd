"""``IngressWorkers``: a node's ingress in N worker processes sharing every port.

Each worker is an ``IngressProcess`` (``supervisor.py``) that binds the
published and edge ports with ``SO_REUSEPORT``; the kernel spreads new
connections over them, so the proxy uses every core (the LB is CPU-bound
Python: one process per core is how it scales, as nginx's workers do). The
caller feeds all of them the same routes, edge settings, certificates and
tokens; a worker that dies is restarted by its own supervisor and fed again,
and the others keep serving meanwhile.

The face is ``Ingress``'s: ``apply``, ``configure_edge``, ``set_challenges`` (True
only when *every* worker acknowledged, which is what an ACME order waits for),
``close``, ``refresh``, ``snapshot``, ``metrics_text``, ``proxies``, ``errors``,
``edge_status``. Figures are summed over the workers (``merge_snapshots``,
``merge_metrics``): counters and open connections add up; a backend is
healthy only if every worker finds it so, and ejected if any ejected it.

``workers_for(n)``: 0 means one per core (``os.cpu_count()``).

Shipped to agents: Python 3.9, standard library only.
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import AbstractSet, Any, Dict, Iterable, List, Mapping, Optional, Tuple

from ..ingress import Ingress
from .supervisor import IngressProcess


def workers_for(n: int) -> int:
    return n if n > 0 else max(1, os.cpu_count() or 1)


class IngressWorkers:
    def __init__(self, n: int, bind_host: str = "0.0.0.0", drain_grace: float = 5.0,
                 sticky_key: bytes = b"", limits: Optional[Dict[str, int]] = None,
                 edge: Optional[Dict[str, Any]] = None, **kw: Any) -> None:
        key = sticky_key or os.urandom(32)      # one key for all: any worker honours a cookie
        self.workers = [IngressProcess(bind_host, drain_grace, key, limits, reuse_port=True,
                                       edge=edge, **kw) for _ in range(workers_for(n))]

    @property
    def pids(self) -> List[Optional[int]]:
        return [w.pid for w in self.workers]

    @property
    def restarts(self) -> int:
        return sum(w.restarts for w in self.workers)

    async def start(self) -> None:
        await asyncio.gather(*(w.start() for w in self.workers))

    async def apply(self, routes: Iterable[Any], graceful: AbstractSet[str] = frozenset()) -> None:
        routes = list(routes)
        await asyncio.gather(*(w.apply(routes, graceful) for w in self.workers))

    async def configure_edge(self, update: Any) -> bool:
        return all(await asyncio.gather(*(w.configure_edge(update) for w in self.workers)))

    async def set_challenges(self, tokens: Dict[str, str]) -> bool:
        return all(await asyncio.gather(*(w.set_challenges(tokens) for w in self.workers)))

    async def refresh(self, timeout: float = 0.5) -> None:
        await asyncio.gather(*(w.refresh(timeout) for w in self.workers))

    async def close(self) -> None:
        await asyncio.gather(*(w.close() for w in self.workers))

    @property
    def proxies(self) -> Dict[int, str]:
        out: Dict[int, str] = {}
        for w in self.workers:
            out.update(w.proxies)
        return out

    @property
    def errors(self) -> Dict[int, str]:
        out: Dict[int, str] = {}
        for w in self.workers:
            out.update(w.errors)
        return out

    def port_of(self, published: int) -> Optional[int]:
        for w in self.workers:
            port = w.port_of(published)
            if port is not None:
                return port
        return None

    def snapshot(self) -> Dict[str, Any]:
        return merge_snapshots([w.snapshot() for w in self.workers])

    def metrics_text(self) -> str:
        return merge_metrics([w.metrics_text() for w in self.workers])

    def edge_status(self) -> Dict[str, Any]:
        """The first worker's view of certificates and tokens (all are fed the same), with
        the listeners' handshake counters summed."""
        views = [w.edge_status() for w in self.workers]
        out = dict(next((v for v in views if v), {}))
        if out:
            out["listeners"] = _merge_listeners([v.get("listeners") or [] for v in views])
            out["workers"] = len(views)
        return out


# --- summing the workers' figures ----------------------------------------------------------

_SUMMED = ("requests_per_second", "requests", "retries", "connections_open")
_BACKEND_SUMMED = ("active", "requests", "failures", "ejections", "requests_per_second")


def _add_maps(a: Mapping[str, Any], b: Mapping[str, Any]) -> Dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return out


def merge_snapshots(snaps: List[Mapping[str, Any]]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for snap in snaps:
        for key, lb in snap.items():
            cur = out.get(key)
            if cur is None:
                out[key] = {**lb, "backends": [dict(b) for b in lb.get("backends") or []]}
                continue
            for f in _SUMMED:
                if f in lb:
                    cur[f] = cur.get(f, 0) + lb[f]
            for f in ("by_status", "upstream_errors"):
                if f in lb:
                    cur[f] = _add_maps(cur.get(f) or {}, lb[f])
            if "duration_counts" in lb and "duration_counts" in cur:
                cur["duration_counts"] = [x + y for x, y in zip(cur["duration_counts"],
                                                                lb["duration_counts"])]
            cur["panic"] = bool(cur.get("panic")) or bool(lb.get("panic"))
            by_addr = {b.get("address"): b for b in cur["backends"]}
            for b in lb.get("backends") or []:
                mine = by_addr.get(b.get("address"))
                if mine is None:
                    cur["backends"].append(dict(b))
                    by_addr[b.get("address")] = cur["backends"][-1]
                    continue
                for f in _BACKEND_SUMMED:
                    mine[f] = mine.get(f, 0) + b.get(f, 0)
                mine["healthy"] = bool(mine.get("healthy")) and bool(b.get("healthy"))
                if b.get("ejected") and not mine.get("ejected"):
                    for f in ("ejected", "ejected_for", "eject_kind", "last_error"):
                        mine[f] = b.get(f)
                mine["draining"] = bool(mine.get("draining")) or bool(b.get("draining"))
    return out


def _merge_listeners(lists: List[List[Mapping[str, Any]]]) -> List[Dict[str, Any]]:
    out: Dict[Any, Dict[str, Any]] = {}
    for lst in lists:
        for item in lst:
            cur = out.get(item.get("port"))
            if cur is None:
                out[item.get("port")] = dict(item)
                continue
            for k, v in item.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "port":
                    cur[k] = cur.get(k, 0) + v
                elif isinstance(v, dict):
                    cur[k] = _add_maps(cur.get(k) or {}, v)
    return list(out.values())


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$")


def merge_metrics(texts: List[str]) -> str:
    """One Prometheus exposition from the workers' (same series summed; ``*_up`` and
    ``*_healthy`` gauges: the lowest, i.e. up only where every worker says so)."""
    meta: Dict[str, List[str]] = {}
    order: List[str] = []
    values: Dict[Tuple[str, str], float] = {}
    family_of: Dict[Tuple[str, str], str] = {}
    family = ""
    for text in texts:
        for line in text.splitlines():
            if line.startswith("# "):
                parts = line.split(" ", 3)
                if len(parts) >= 3:
                    family = parts[2]
                    if family not in meta:
                        meta[family] = []
                        order.append(family)
                    if line not in meta[family]:
                        meta[family].append(line)
                continue
            m = _SAMPLE.match(line)
            if m is None:
                continue
            key = (m.group(1), m.group(2) or "")
            try:
                v = float(m.group(3))
            except ValueError:
                continue
            if key in values:
                lowest = key[0].endswith(("_up", "_healthy"))
                values[key] = min(values[key], v) if lowest else values[key] + v
            else:
                values[key] = v
                family_of[key] = family
    lines: List[str] = []
    for fam in order:
        lines += meta[fam]
        for key, v in values.items():
            if family_of[key] == fam:
                text = repr(v) if v != int(v) else str(int(v))
                lines.append(f"{key[0]}{key[1]} {text}")
    return "\n".join(lines) + ("\n" if lines else "")


def ingress_for(bind_host: str, sticky_key: bytes, *, process: bool = True, workers: int = 1,
                limits: Optional[Dict[str, int]] = None,
                edge: Optional[Dict[str, Any]] = None) -> Any:
    """The node's ingress: ``workers`` worker processes (0: one per core; one is an
    ``IngressProcess``, more an ``IngressWorkers``), or on the caller's loop
    (``process=False``: tests and tools that want one process)."""
    if not process:
        return Ingress(bind_host, sticky_key=sticky_key, limits=limits, edge=edge)
    n = workers_for(workers)
    if n == 1:
        return IngressProcess(bind_host, sticky_key=sticky_key, limits=limits, edge=edge)
    return IngressWorkers(n, bind_host, sticky_key=sticky_key, limits=limits, edge=edge)


__all__ = ["IngressWorkers", "ingress_for", "merge_metrics", "merge_snapshots",
           "workers_for"]
