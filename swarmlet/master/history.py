"""The last hour of the cluster, kept in a bounded ring: what the dashboard's charts draw.

No time-series database: Prometheus (``/metrics``) stays the way to keep more. Every
``interval`` seconds (10 s) ``History.sample`` records

- per service: requests per second, error rate (5xx answers and failed upstream
  attempts over answers) and p99 latency (from the bucket counts of the latency
  histogram, interpolated within the bucket), all from the snapshot of the
  master's own load balancers (its worker process pushes one every second), as
  differences between two samples;
- per node: CPU (percent of all its CPUs) and memory (percent used), from what the
  agents report; plus, per sample, the mean, p90 and maximum over the nodes that
  reported, so a chart of 1,000 nodes is three lines, not a thousand.

Values live in fixed-size ``array('f')`` rings (``span / interval`` = 360 slots), so
memory is bounded: 4 bytes × 360 × (3 per service + 2 per node + 12): about 3 MB for
1,000 nodes and 200 services. A series not updated for a whole span (a removed node)
is dropped. Missing data is NaN in the ring and ``null`` in JSON.

Marks on the time axis come from the events the master commits (a store watcher,
``on_commit``): rollouts (with ``until`` once completed, failed or rolled back),
rollbacks, node deaths and autoscale steps, at most ``max_marks``, older than the
span dropped; at start they are read back from the event log, so a restarted master
keeps the hour's marks (the samples start again empty).

``classify``, ``p99`` and ``Ring`` are pure; ``History.sample`` reads the master.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from array import array
from collections import deque
from typing import Any, Deque, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ..shipped.lb.metrics import BUCKETS

log = logging.getLogger("swarmlet.master")

INTERVAL = 10.0
SPAN = 3600.0
NAN = float("nan")
ROLLOUT, ROLLBACK, DEATH, AUTOSCALE = "rollout", "rollback", "death", "autoscale"
NODE_AGG = ("cpu_mean", "cpu_p90", "cpu_max", "mem_mean", "mem_p90", "mem_max")
SERVICE_METRICS = ("req_s", "error_rate", "p99_ms")

Key = Tuple[str, str, str]   # (kind "service" | "node" | "nodes", name, metric)


def classify(kind: str, message: str) -> Optional[str]:
    """Which mark an event makes, if any (the messages of ``daemon``/``autoscale``)."""
    if kind == "service":
        if message.endswith("rolling update started"):
            return ROLLOUT
        if message.startswith("revision ") and "rolling back to revision" in message:
            return ROLLBACK
    elif kind == "node" and message.endswith("-> down"):
        return DEATH
    elif kind == "scale" and message.startswith("autoscale "):
        return AUTOSCALE
    return None


def rollout_ended(kind: str, message: str) -> bool:
    """An event that ends a rollout in progress (the mark's ``until``)."""
    return kind == "service" and message.startswith("update to revision") and (
        message.endswith("completed") or " failed: " in message or " paused: " in message)


def p99(counts: Sequence[int], bounds: Sequence[float]) -> float:
    """The 99th percentile in seconds of a histogram's bucket counts (the last is +Inf),
    interpolated linearly within its bucket; NaN without observations."""
    total = sum(counts)
    if total <= 0:
        return NAN
    rank = 0.99 * total
    seen = 0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            lo = bounds[i - 1] if i > 0 else 0.0
            hi = bounds[i] if i < len(bounds) else bounds[-1]
            return lo + (hi - lo) * (rank - seen) / n
        seen += n
    return bounds[-1]


def quantile(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))] if s else NAN


class Ring:
    """Samples in ``capacity`` slots; series of float32 keyed by ``Key``. Pure (no clock)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.ts = array("d", [NAN] * capacity)
        self.count = 0
        self.series: Dict[Key, array] = {}
        self._last: Dict[Key, int] = {}

    def add(self, ts: float, values: Mapping[Key, float]) -> None:
        slot = self.count % self.capacity
        self.ts[slot] = ts
        for arr in self.series.values():
            arr[slot] = NAN
        for key, v in values.items():
            arr = self.series.get(key)
            if arr is None:
                arr = self.series[key] = array("f", [NAN] * self.capacity)
            arr[slot] = v
            self._last[key] = self.count
        self.count += 1
        stale = [k for k, n in self._last.items() if self.count - n > self.capacity]
        for k in stale:
            del self.series[k], self._last[k]

    def _order(self, since: float) -> List[int]:
        n = min(self.count, self.capacity)
        start = self.count - n
        return [i % self.capacity for i in range(start, self.count)
                if not self.ts[i % self.capacity] <= since]

    def times(self, since: float = -math.inf) -> List[float]:
        return [self.ts[s] for s in self._order(since)]

    def values(self, key: Key, since: float = -math.inf) -> Optional[List[Optional[float]]]:
        arr = self.series.get(key)
        if arr is None:
            return None
        return [None if arr[s] != arr[s] else round(float(arr[s]), 4) for s in self._order(since)]

    def names(self, kind: str) -> List[str]:
        return sorted({k[1] for k in self.series if k[0] == kind})

    def total(self, key: Key) -> float:
        arr = self.series.get(key)
        return sum(v for v in arr if v == v) if arr is not None else 0.0


class History:
    def __init__(self, interval: float = INTERVAL, span: float = SPAN, max_marks: int = 2000) -> None:
        self.interval = interval
        self.span = span
        self.ring = Ring(max(2, int(span / interval)))
        self.marks: Deque[Dict[str, Any]] = deque(maxlen=max_marks)
        self._lb_prev: Dict[str, Tuple[float, int, int, List[int]]] = {}

    # --- marks ---------------------------------------------------------------------

    def on_commit(self, revision: int, batch: Any) -> None:
        """Store watcher (runs in the committing thread: short, no store calls)."""
        if batch.events:
            self.add_events(batch.events, batch.now if batch.now is not None else time.time())

    def add_events(self, events: Iterable[Any], ts: float) -> None:
        for e in events:
            kind, subject, message = _fields(e)
            what = classify(kind, message)
            if what is not None:
                self.marks.append({"ts": ts, "kind": what, "subject": subject, "text": message,
                                   "until": None})
            elif rollout_ended(kind, message):
                for m in reversed(self.marks):
                    if m["subject"] == subject and m["kind"] in (ROLLOUT, ROLLBACK):
                        if m["until"] is None:
                            m["until"] = ts
                        break

    def load_events(self, events: Iterable[Mapping[str, Any]], now: float) -> None:
        """Marks of the last span from the persisted event log (oldest first)."""
        for e in events:
            ts = float(e.get("ts", 0.0))
            if now - ts <= self.span:
                self.add_events([e], ts)

    # --- samples -------------------------------------------------------------------

    def sample(self, master: Any, now: float) -> None:
        values: Dict[Key, float] = {}
        cpus, mems = [], []
        for info in master.node_infos():
            if info.status.value in ("down", "left") or not info.mem_total:
                continue
            cpu, mem = float(info.cpu_percent), 100.0 * info.mem_used / info.mem_total
            values[("node", info.name, "cpu")] = cpu
            values[("node", info.name, "mem")] = mem
            cpus.append(cpu)
            mems.append(mem)
        if cpus:
            for metric, xs in (("cpu", cpus), ("mem", mems)):
                values[("nodes", "*", f"{metric}_mean")] = sum(xs) / len(xs)
                values[("nodes", "*", f"{metric}_p90")] = quantile(xs, 0.9)
                values[("nodes", "*", f"{metric}_max")] = max(xs)
        values.update(self._lb_sample(master, now))
        self.ring.add(now, values)

    def _lb_sample(self, master: Any, now: float) -> Dict[Key, float]:
        """Per service, from the master's load balancers' snapshot (``Ingress`` or the worker
        process's ``IngressProcess``, same shape): differences since the last sample."""
        ingress = getattr(master, "ingress", None)
        snap = ingress.snapshot() if ingress is not None else {}
        cur: Dict[str, Tuple[int, int, List[int]]] = {}
        for lb in snap.values():
            service = str(lb.get("service") or "")
            if not service:
                continue
            by_status = lb.get("by_status") or {}
            answered = sum(int(n) for n in by_status.values())
            errors = sum(int(n) for code, n in by_status.items() if str(code).startswith("5"))
            errors += sum(int(n) for n in (lb.get("upstream_errors") or {}).values())
            counts = [int(n) for n in (lb.get("duration_counts") or [])]
            req, err, acc = cur.get(service, (0, 0, []))
            if len(acc) < len(counts):
                acc = acc + [0] * (len(counts) - len(acc))
            cur[service] = (req + answered, err + errors,
                            [a + (counts[i] if i < len(counts) else 0) for i, a in enumerate(acc)])
        out: Dict[Key, float] = {}
        for service, (req, err, counts) in cur.items():
            prev = self._lb_prev.get(service)
            self._lb_prev[service] = (now, req, err, counts)
            if prev is None:
                continue
            t0, req0, err0, counts0 = prev
            if req < req0:   # the load balancer was made anew: count from zero
                req0, err0, counts0 = 0, 0, []
            dt = max(now - t0, 1e-6)
            dreq = req - req0
            out[("service", service, "req_s")] = dreq / dt
            out[("service", service, "error_rate")] = (err - err0) / dreq if dreq else 0.0
            d = [max(0, a - (counts0[i] if i < len(counts0) else 0)) for i, a in enumerate(counts)]
            p = p99(d, BUCKETS) if len(d) == len(BUCKETS) + 1 else NAN
            if p == p:
                out[("service", service, "p99_ms")] = 1000.0 * p
        for gone in set(self._lb_prev) - set(cur):
            del self._lb_prev[gone]
        return out

    async def run(self, master: Any) -> None:
        while True:
            try:
                self.sample(master, master.clock())
            except Exception:  # a bug here must not stop the master; the charts show a gap
                log.exception("history sample failed")
            await asyncio.sleep(self.interval)

    # --- what the dashboard reads -----------------------------------------------------

    def doc(self, since: float = -math.inf, services: Optional[Sequence[str]] = None,
            nodes: Sequence[str] = (), top: int = 6) -> Dict[str, Any]:
        """The charts' data: sample times, per service series (``services``, or the ``top``
        busiest by requests), the node aggregates, per node series for ``nodes``, marks."""
        r = self.ring
        if services is None:
            names = r.names("service")
            names.sort(key=lambda s: (-r.total(("service", s, "req_s")), s))
            services = names[:top]
        out_s = {}
        for s in services:
            row = {m: r.values(("service", s, m), since) for m in SERVICE_METRICS}
            if any(v is not None for v in row.values()):
                out_s[s] = {m: v for m, v in row.items() if v is not None}
        out_n: Dict[str, Dict[str, Any]] = {"*": {m: r.values(("nodes", "*", m), since) or []
                                                  for m in NODE_AGG}}
        for n in nodes:
            cpu, mem = r.values(("node", n, "cpu"), since), r.values(("node", n, "mem"), since)
            if cpu is not None or mem is not None:
                out_n[n] = {"cpu": cpu or [], "mem": mem or []}
        horizon = (r.times()[-1] if r.count else time.time()) - self.span
        marks = [dict(m) for m in self.marks if m["ts"] >= horizon]
        return {"interval": self.interval, "span": self.span, "ts": r.times(since),
                "services": out_s, "all_services": r.names("service"), "nodes": out_n,
                "marks": marks}


def _fields(e: Any) -> Tuple[str, str, str]:
    if isinstance(e, Mapping):
        return str(e.get("kind", "")), str(e.get("subject", "")), str(e.get("message", ""))
    return str(e.kind), str(e.subject), str(e.message)
