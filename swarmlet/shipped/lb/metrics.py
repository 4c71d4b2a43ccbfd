"""Counters, a latency histogram, a req/s meter, and Prometheus text for them.

Everything here is cheap enough for the hot path (a dict increment, a bisect)
and pure: time is passed in. ``render`` merges any number of load balancers
(one per published port) into one exposition, each series labelled with its
``listener``, so the master or an agent can serve them all on one ``/metrics``.

Shipped to agents (ingress mode): Python 3.9, standard library only.
"""

from __future__ import annotations

import bisect
from typing import Dict, Iterable, List, Tuple

# Seconds; the proxy adds well under a millisecond, so the low end is fine-grained.
BUCKETS: Tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                              0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: Tuple[float, ...] = BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)   # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> List[Tuple[str, int]]:
        out, total = [], 0
        for bound, n in zip(self.bounds + (float("inf"),), self.counts):
            total += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), total))
        return out


class RateMeter:
    """Events per second over the last ``window`` whole seconds."""

    __slots__ = ("window", "buckets", "second", "until", "slot")

    def __init__(self, window: int = 10) -> None:
        self.window = window
        self.buckets = [0] * window
        self.second = 0
        self.until = 1.0                # the current second's end, and its bucket: most adds
        self.slot = 0                   # fall in it, with no int() or modulo (2 a request)

    def add(self, now: float, n: int = 1) -> None:
        if now >= self.until or now < self.second:
            self._advance(int(now))
        self.buckets[self.slot] += n

    def _advance(self, sec: int) -> None:
        if sec - self.second >= self.window:
            self.buckets = [0] * self.window
        else:
            for s in range(self.second + 1, sec + 1):
                self.buckets[s % self.window] = 0
        self.second = sec
        self.until = sec + 1.0
        self.slot = sec % self.window

    def rate(self, now: float) -> float:
        """The mean over the complete seconds in the window (the current one excluded)."""
        sec = int(now)
        if sec > self.second:
            self._advance(sec)
        done = sum(self.buckets) - self.buckets[sec % self.window]
        return done / (self.window - 1)


class LBMetrics:
    """One load balancer's counters; the router holds the per-backend ones."""

    def __init__(self) -> None:
        self.requests: Dict[int, int] = {}      # status code -> answers
        self.duration = Histogram()
        self.rate = RateMeter()
        self.retries = 0
        self.express = 0                        # answers that took the express lane (express.py)
        self.upstream_errors: Dict[str, int] = {}   # connect | reset | timeout | invalid
        self.client_aborts = 0
        self.connections = 0                    # accepted, total
        self.open_connections = 0
        self.tunnels = 0
        self.refused_connections = 0            # over max_connections
        self.refusals: Dict[int, int] = {}      # requests refused by the proxy, by status

    def refused(self, status: int) -> None:
        self.refusals[status] = self.refusals.get(status, 0) + 1

    def answered(self, status: int, seconds: float, now: float) -> None:
        req = self.requests
        req[status] = req.get(status, 0) + 1
        self.duration.observe(seconds)
        self.rate.add(now)

    def upstream_error(self, kind: str) -> None:
        self.upstream_errors[kind] = self.upstream_errors.get(kind, 0) + 1


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(lbs: Iterable, now: float) -> str:
    """Prometheus text (format 0.0.4) for load balancers with ``name``,
    ``metrics`` (LBMetrics) and ``router`` (routing.Router) attributes."""
    series: Dict[str, Tuple[str, str, List[str]]] = {}

    def add(metric: str, kind: str, help_: str, labels: Dict[str, str], value: float,
            family: str = "") -> None:
        entry = series.setdefault(family or metric, (kind, help_, []))
        lab = ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items())
        entry[2].append(f"{metric}{{{lab}}} {value:g}" if isinstance(value, float)
                        else f"{metric}{{{lab}}} {value}")

    for lb in lbs:
        m: LBMetrics = lb.metrics
        base = {"listener": lb.name}
        for code, n in sorted(m.requests.items()):
            add("swarmlet_lb_requests_total", "counter", "Requests answered, by status code.",
                {**base, "code": str(code)}, n)
        hist = "swarmlet_lb_request_duration_seconds"
        for le, n in m.duration.cumulative():
            add(hist + "_bucket", "histogram", "Time from request head to the end of the answer.",
                {**base, "le": le}, n, hist)
        add(hist + "_sum", "histogram", "", base, float(m.duration.sum), hist)
        add(hist + "_count", "histogram", "", base, m.duration.count, hist)
        add("swarmlet_lb_retries_total", "counter", "Requests retried on another attempt.",
            base, m.retries)
        for kind, n in sorted(m.upstream_errors.items()):
            add("swarmlet_lb_upstream_errors_total", "counter",
                "Failed upstream attempts, by kind.", {**base, "kind": kind}, n)
        add("swarmlet_lb_client_aborts_total", "counter",
            "Requests whose client went away before the answer ended.", base, m.client_aborts)
        add("swarmlet_lb_connections_open", "gauge", "Open client connections.",
            base, m.open_connections)
        add("swarmlet_lb_connections_refused_total", "counter",
            "Client connections refused over max_connections.", base, m.refused_connections)
        for code, n in sorted(m.refusals.items()):
            add("swarmlet_lb_refused_requests_total", "counter",
                "Requests the proxy refused itself (bad framing, Host, limits), by status.",
                {**base, "code": str(code)}, n)
        add("swarmlet_lb_panic_routes_total", "counter",
            "Requests routed in panic mode (no eligible backend).", base, lb.router.panics)
        add("swarmlet_lb_requests_per_second", "gauge", "Answers per second, last 10 s.",
            base, float(m.rate.rate(now)))
        for st in lb.router.states.values():
            lab = {**base, "backend": st.backend.address, "name": st.backend.name}
            add("swarmlet_lb_backend_up", "gauge",
                "1 when eligible: healthy, not ejected, not draining.", lab,
                int(st.healthy and not st.ejected(now) and not st.draining))
            add("swarmlet_lb_backend_healthy", "gauge", "Active health check state.",
                lab, int(st.healthy))
            add("swarmlet_lb_backend_ejections_total", "counter",
                "Passive-check ejections.", lab, st.ejections_total)
            add("swarmlet_lb_backend_active", "gauge", "In-flight requests and tunnels.",
                lab, st.active)
            add("swarmlet_lb_backend_requests_total", "counter", "Answers from this backend.",
                lab, st.requests)
            add("swarmlet_lb_backend_failures_total", "counter",
                "Connect errors, resets and timeouts.", lab, st.failures)
    lines: List[str] = []
    for metric, (kind, help_, samples) in series.items():
        lines.append(f"# HELP {metric} {help_}")
        lines.append(f"# TYPE {metric} {kind}")
        lines.extend(samples)
    return "\n".join(lines) + "\n"
