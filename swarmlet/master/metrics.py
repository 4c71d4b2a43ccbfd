"""What the master measures about itself, and its Prometheus ``/metrics``.

``MasterObs`` is owned by the daemon (``Master.obs``). It keeps the reconcile
duration histogram, a change counter that wakes the live views (the top and
dashboard streams wait on ``wait_change`` instead of polling, so a node's
death reaches them as soon as the master knows it), and the load balancer
state that ``lb_watch`` diffs into eviction events (``events.lb_evictions``).

``render(master)`` is Prometheus text (format 0.0.4): nodes by status, tasks
by state, per-service replicas, per-node utilization, reconcile duration,
the daemon's counters, its garbage collections (``gctune``), and the master's load
balancers (``render_metrics`` through ``Ingress.metrics_text``). Served on the master API port, so a
scraper authenticates with the cluster's ``cli`` certificate (docs/metrics.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Dict, List, Optional, Tuple

from ..shipped.lb.metrics import Histogram
from ..shipped.models import NodeStatus
from . import gctune, views
from .store import Batch
from .events import LBState, lb_evictions
from .state import RUNNING

log = logging.getLogger("swarmlet.master")

# Seconds: a pass over a few hundred nodes takes milliseconds; slow disks show at the top.
RECONCILE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
TASK_STATES = ("pending", "assigned", "preparing", "starting", "running", "failed", "stopped",
               "stopping", "new")


class MasterObs:
    def __init__(self) -> None:
        self.reconcile = Histogram(RECONCILE_BUCKETS)
        self.last_reconcile = 0.0
        self.version = 0
        self.changed_at = 0.0
        self._ev: Optional[asyncio.Event] = None
        self.lb: LBState = {}

    def reconciled(self, seconds: float) -> None:
        self.reconcile.observe(seconds)
        self.last_reconcile = seconds

    def touch(self) -> None:
        """Something the live views show has changed: wake their streams."""
        self.version += 1
        self.changed_at = time.time()
        ev, self._ev = self._ev, None
        if ev is not None:
            ev.set()

    async def wait_change(self, seen: int, timeout: float) -> int:
        """Wait until ``version`` moves past ``seen`` (or ``timeout``); the version now."""
        if self.version == seen:
            if self._ev is None:
                self._ev = asyncio.Event()
            try:
                await asyncio.wait_for(self._ev.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        return self.version


async def lb_watch(master: Any, interval: float = 0.5) -> None:
    """Turn the master's load balancer changes into ``lb`` events (evictions, readmissions)."""
    from .reconcile import Event  # noqa: F401  (type of what lb_evictions returns)
    while True:
        await asyncio.sleep(interval)
        ingress = getattr(master, "ingress", None)
        if ingress is None:
            continue
        try:
            master.obs.lb, events = lb_evictions(master.obs.lb, ingress.snapshot())
            if events:
                for e in events:
                    log.info("%s %s: %s", e.kind, e.subject, e.message)
                await master.write(Batch.of(events=events))
                master.obs.touch()
        except Exception:  # never let the watcher die; events are a convenience
            log.exception("load balancer watch failed")


def _esc(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Text:
    def __init__(self) -> None:
        self.lines: List[str] = []

    def family(self, name: str, kind: str, help_: str,
               samples: List[Tuple[Dict[str, str], float]], suffix: str = "") -> None:
        self.lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
        for labels, value in samples:
            lab = ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items())
            self.lines.append(f"{name}{suffix}{{{lab}}} {value:g}" if lab
                              else f"{name}{suffix} {value:g}")


def render(master: Any) -> str:
    """Prometheus text for the whole master (see the module docstring)."""
    t = _Text()
    infos = master.node_infos()
    t.family("swarmlet_master_nodes", "gauge", "Nodes by status.",
             [({"status": s.value}, sum(1 for i in infos if i.status == s)) for s in NodeStatus])
    counts: Dict[str, int] = {s: 0 for s in TASK_STATES}
    for task in master.tasks.values():
        st = views.task_row(task)["state"]
        counts[st] = counts.get(st, 0) + 1
    t.family("swarmlet_master_tasks", "gauge", "Tasks the master knows, by state.",
             [({"state": s}, n) for s, n in sorted(counts.items())])
    desired, running = [], []
    for name, svc in sorted(master.services.items()):
        live = [x for x in views.tasks_of(master, name) if x.desired == RUNNING]
        desired.append(({"service": name}, float(svc.spec.replicas if svc.spec.mode != "global"
                                                 else len(live))))
        running.append(({"service": name}, float(sum(1 for x in live if x.serving))))
    t.family("swarmlet_master_service_replicas_desired", "gauge", "Replicas asked for.", desired)
    t.family("swarmlet_master_service_replicas_serving", "gauge",
             "Replicas running (and healthy, if checked).", running)
    up = [({"node": i.name}, float(i.status in (NodeStatus.READY, NodeStatus.DRAINING))) for i in infos]
    t.family("swarmlet_node_up", "gauge", "1 when the node is ready (or draining).", up)
    t.family("swarmlet_node_cpu_percent", "gauge", "Node CPU use, percent of all its CPUs.",
             [({"node": i.name}, i.cpu_percent) for i in infos])
    t.family("swarmlet_node_memory_used_bytes", "gauge", "Node memory in use.",
             [({"node": i.name}, float(i.mem_used)) for i in infos])
    t.family("swarmlet_node_memory_total_bytes", "gauge", "Node memory.",
             [({"node": i.name}, float(i.mem_total)) for i in infos])
    t.family("swarmlet_node_tasks", "gauge", "Tasks placed on the node.",
             [({"node": i.name}, float(i.tasks)) for i in infos])
    h = master.obs.reconcile
    name = "swarmlet_master_reconcile_duration_seconds"
    t.lines += [f"# HELP {name} Time of one reconcile pass (plan, commit, push).",
                f"# TYPE {name} histogram"]
    for le, n in h.cumulative():
        t.lines.append(f'{name}_bucket{{le="{le}"}} {n}')
    t.lines += [f"{name}_sum {h.sum:g}", f"{name}_count {h.count}"]
    for key, value in sorted(master.counters.items()):
        t.family(f"swarmlet_master_{key}_total", "counter", f"Master {key.replace('_', ' ')}.",
                 [({}, float(value))])
    gcs = gctune.stats()
    t.family("swarmlet_master_gc_collections_total", "counter",
             "Garbage collections of the master process, by generation.",
             [({"generation": str(g)}, float(n)) for g, n in enumerate(gcs["count"])])
    t.family("swarmlet_master_gc_seconds_total", "counter",
             "Time the master spent in garbage collection, by generation.",
             [({"generation": str(g)}, float(x)) for g, x in enumerate(gcs["seconds"])])
    scaler = getattr(master, "autoscaler", None)
    if scaler is not None:
        t.family("swarmlet_master_autoscale_cpu_percent", "gauge",
                 "Average CPU of a service's replicas (percent of its target basis).",
                 [({"service": s}, v) for s, v in sorted(scaler.last_cpu.items())])
    book = getattr(master, "certbook", None)
    if book is not None:
        now = master.clock()
        t.family("swarmlet_edge_cert_expiry_days", "gauge",
                 "Days until an edge certificate expires (negative: expired).",
                 [({"name": c.name, "source": c.source}, (c.not_after - now) / 86400.0)
                  for c in book.in_use()])
        acme = master.acme
        t.family("swarmlet_edge_acme_orders_total", "counter",
                 "ACME orders by result since the master started.",
                 [({"result": k}, float(v)) for k, v in sorted(acme.orders.items())])
        t.family("swarmlet_edge_acme_failing_hosts", "gauge",
                 "ACME hosts whose last order failed (waiting for the next attempt).",
                 [({}, float(sum(1 for s in acme.states.values() if s.failures)))])
    text = "\n".join(t.lines) + "\n"
    ingress = getattr(master, "ingress", None)
    if ingress is not None and (getattr(ingress, "proxies", None) or ingress.snapshot()):
        text += ingress.metrics_text()
    return text
