"""Helpers of the chaos tier: observe the cluster, run counted load in the
background, measure time to full capacity and leftovers, and write the report.

Observation goes around the thing under test where it can: the master's API
directly (mutual TLS with the cli certificate, no CLI subprocess per poll),
and each node's dockerd through ``docker exec`` on the lab container (works
even while the node is cut off from the lab network). Faults themselves are
injected the way an operator would: ssh into the node, `swarmlet lab stop`,
`docker network disconnect`.

Every loop here is bounded by a deadline.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence

from swarmlet import cluster as clusterlib
from tests.tools.loadgen import LoadResult, run_load

REPO = Path(__file__).resolve().parents[2]
REPORT = REPO / "artifacts" / "chaos-report.json"
SERVICE = "hello_web"   # the hello stack's web (stacks prefix their services)
REPLICAS = 3


class Master:
    """The master's API over mutual TLS, synchronously (tests poll it)."""

    def __init__(self, home: str) -> None:
        self.cluster = clusterlib.load(Path(home))
        self.ctx = self.cluster.client_ssl("cli")

    def get(self, path: str, timeout: float = 5.0):
        conn = http.client.HTTPSConnection("127.0.0.1", self.cluster.master_port,
                                           context=self.ctx, timeout=timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise AssertionError(f"GET {path}: {resp.status} {body[:200]!r}")
            return json.loads(body)
        finally:
            conn.close()

    def tasks(self, service: str = SERVICE) -> List[dict]:
        return self.get(f"/v1/tasks?service={service}")

    def try_tasks(self, service: str = SERVICE) -> Optional[List[dict]]:
        try:
            return self.tasks(service)
        except (OSError, AssertionError, ValueError):
            return None

    def nodes(self) -> List[dict]:
        return self.get("/v1/nodes")


def healthy(rows: Iterable[dict]) -> List[dict]:
    return [r for r in rows if r["state"] == "running" and r["health"] == "healthy"]


def wait_until(what: str, pred: Callable[[], bool], timeout: float = 60.0,
               every: float = 0.25) -> float:
    """Poll ``pred`` until true; returns the seconds it took. Bounded by ``timeout``."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        if pred():
            return time.monotonic() - t0
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def node_exec(docker_client, node: dict, command: str) -> str:
    """Run ``command`` in the lab node's container (not over the lab network)."""
    ct = docker_client.containers.get(node["name"])
    rc, out = ct.exec_run(["sh", "-c", command])
    if rc != 0:
        raise AssertionError(f"{node['name']}: {command}: {rc} {out[-300:]!r}")
    return out.decode()


def node_running(docker_client, node: dict) -> bool:
    return docker_client.containers.get(node["name"]).status == "running"


def containers(docker_client, nodes: Sequence[dict], service: str = SERVICE) -> Dict[str, List[str]]:
    """Running containers of ``service`` per running node: {node: [task id…]}."""
    out: Dict[str, List[str]] = {}
    for n in nodes:
        if not node_running(docker_client, n):
            continue
        text = node_exec(docker_client, n, "docker ps --filter label=io.swarmlet.service="
                         f"{service} --format '{{{{.Label \"io.swarmlet.task\"}}}}'")
        out[n["name"]] = text.split()
    return out


def leftovers(docker_client, nodes: Sequence[dict], master: Master,
              replicas: int = REPLICAS) -> Dict[str, int]:
    """Extra containers on the nodes and over-replication in the master's view."""
    per_node = containers(docker_client, nodes)
    total = sum(len(v) for v in per_node.values())
    tasks = [t for t in (master.try_tasks() or []) if t["state"] == "running"]
    return {"containers": total, "extra_containers": max(0, total - replicas),
            "running_tasks": len(tasks), "over_replicated": max(0, len(tasks) - replicas)}


def steady(docker_client, nodes: Sequence[dict], master: Master, timeout: float = 120.0) -> float:
    """Wait for the resting state every scenario starts from: ``REPLICAS`` healthy
    tasks, one per node, and exactly that many containers."""
    def ok() -> bool:
        rows = master.try_tasks()
        if rows is None:
            return False
        h = healthy(rows)
        return (len(h) == REPLICAS == len(rows) and len({r["node"] for r in h}) == len(nodes)
                and sum(len(v) for v in containers(docker_client, nodes).values()) == REPLICAS)
    return wait_until("the resting state (3 healthy replicas, one per node)", ok, timeout, every=0.5)


class Load:
    """Counted load in a background thread against one or more URLs, until
    ``stop()`` or ``max_seconds`` (a bound, never the expected end)."""

    def __init__(self, urls: Sequence[str], allowed: Sequence[str], max_seconds: float = 240.0,
                 concurrency: int = 4, timeout: float = 5.0) -> None:
        self.urls = list(urls)
        self.allowed = list(allowed)
        self.max_seconds = max_seconds
        self.concurrency = concurrency
        self.timeout = timeout
        self.results: List[LoadResult] = []
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stop: Optional[asyncio.Event] = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.t0 = 0.0

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            self.results = list(await asyncio.gather(*(
                run_load(u, concurrency=self.concurrency, duration=self.max_seconds,
                         max_requests=2_000_000, timeout=self.timeout,
                         allowed_networks=self.allowed, stop=self._stop) for u in self.urls)))
        asyncio.run(main())

    def __enter__(self) -> "Load":
        self.t0 = time.monotonic()
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> "Load":
        if self._thread.is_alive() and self._loop is not None and self._stop is not None:
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:
                pass                            # it ended by itself meanwhile
        return self.join()

    def join(self) -> "Load":
        """Wait for the load to end by itself (``max_seconds``)."""
        self._thread.join(timeout=self.max_seconds + 30)
        assert not self._thread.is_alive(), "the load did not end within its bound"
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def served(self) -> int:
        return sum(r.served for r in self.results)

    @property
    def failed(self) -> int:
        return sum(r.failed for r in self.results)

    def summary(self) -> dict:
        return {"served": self.served, "failed": self.failed,
                "per_url": [r.summary() for r in self.results]}


def record(scenario: str, load: Optional[Load] = None, **figures) -> dict:
    """Append one scenario's figures to artifacts/chaos-report.json and print them."""
    row: Dict[str, object] = {"scenario": scenario, "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                              "run": os.environ.get("SWARMLET_CHAOS_RUN", str(os.getpid()))}
    if load is not None:
        total = load.served + load.failed
        row.update(served=load.served, failed=load.failed,
                   failed_pct=round(100.0 * load.failed / total, 3) if total else 0.0,
                   statuses=_merge(r.statuses for r in load.results),
                   errors=_merge(r.errors for r in load.results))
    row.update({k: (round(v, 2) if isinstance(v, float) else v) for k, v in figures.items()})
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    try:
        rows = json.loads(REPORT.read_text())
    except (FileNotFoundError, ValueError):
        rows = []
    rows.append(row)
    REPORT.write_text(json.dumps(rows, indent=1) + "\n")
    RUN_ROWS.append(row)
    print(f"\nchaos {scenario}: {json.dumps(row)}")
    return row


def _merge(counters) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for c in counters:
        for k, v in c.items():
            out[str(k)] = out.get(str(k), 0) + v
    return out


RUN_ROWS: List[dict] = []   # this session's rows, for the terminal summary


def table(rows: List[dict]) -> str:
    cols = ["scenario", "served", "failed", "failed_pct", "capacity_s", "extra_containers",
            "over_replicated", "outcome"]
    lines = [cols] + [[str(r.get(c, "-")) for c in cols] for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(cols))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths)) for line in lines)
