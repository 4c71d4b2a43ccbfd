"""The dashboard at 1,000 nodes with a rollout in progress, in headless chromium.

A real master (in this process: API, store, reconcile, pusher, poller, history,
dashboard, and its load balancer on a published port) runs 9,976 replicas on 1,000
simulated agents (``tests/tools/simagents.py``, two processes, mutual TLS on loopback
addresses); the 9,550 replicas of the 191 bulk services have no port, so that the routing
tables stay small and the deploy is quick (routing at scale is bench/scale's subject).
Real traffic goes through the master's load balancer to the replicas of one service,
with a share of 500s. Then: an autoscale step (its replicas report high
CPU), three node deaths, an update to a broken image that rolls back, and a rollout of
400 replicas that is still in progress when the page is looked at.

The test asserts that the charts draw (requests/s, error rate, p99 for the service
with traffic, node CPU and memory aggregates), that every kind of mark appears on the
time axis (the rollout as a span still open), that the heatmap holds one cell per node,
that the status filter leaves the dead nodes, that hovering a cell shows its details
and that clicking one charts it. Screenshots go to ``artifacts/``.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import aiohttp
import pytest

from swarmlet import cluster as clusterlib
from swarmlet.master.autoscale import AutoscalePolicy
from swarmlet.master.daemon import MasterConfig
from swarmlet.master.runner import run_master
from swarmlet.shipped.models import (AutoscaleSpec, HealthCheck, PortSpec, ServiceSpec, UpdateConfig,
                                     to_wire)
from tests.conftest import free_port, free_port_pair
from tests.integration.observe.cdp import Browser
from tests.tools.simagents import FleetProcs, roster

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]
ARTIFACTS = REPO / "artifacts"
NODES = 1000
PER_NODE = 10
HEALTH = HealthCheck(kind="http", path="/health", interval=1.0)
CONFIG = MasterConfig(history_interval=1.0, stats_interval=2.0,
                      autoscale=AutoscalePolicy(interval=0.5, up_window=2.0, down_window=300.0,
                                                up_cooldown=2.0, down_cooldown=300.0, stale_after=10.0))


T0 = [time.monotonic()]


async def _until(what: str, pred: Callable[[], Any], timeout: float, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await pred()
        if last:
            print(f"[{time.monotonic() - T0[0]:6.1f}s] {what}", flush=True)
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})"[:2000])


def _spec(name: str, replicas: int, image: str = "sim:1", **kw: Any) -> Dict[str, Any]:
    return to_wire(ServiceSpec(name, image, replicas=replicas, health=HEALTH,
                               ports=kw.pop("ports", (PortSpec(8080),)), **kw))


async def _traffic(url: str, stop: asyncio.Event, counts: Dict[str, int]) -> None:
    """About 60 requests a second through the master's load balancer, one in 25 a 500."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
        i = 0
        while not stop.is_set():
            i += 1
            path = "/fail" if i % 25 == 0 else "/"
            try:
                async with s.get(url + path) as r:
                    await r.read()
                    counts[str(r.status)] = counts.get(str(r.status), 0) + 1
            except (aiohttp.ClientError, asyncio.TimeoutError):
                counts["error"] = counts.get("error", 0) + 1
            await asyncio.sleep(1 / 60)


@pytest.mark.timeout(600)
async def test_dashboard_at_1000_nodes_with_a_rollout_in_progress(tmp_path: Path) -> None:
    T0[0] = time.monotonic()
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    c = clusterlib.init(name="thousand", home=home, master_port=free_port_pair())
    agent_port, front_port = free_port(), free_port()
    nodes = roster(NODES, prefix="rack", base="127.103")
    fleet = FleetProcs(home, nodes, agent_port, parts=2, run_delay=0.3, cluster_id=c.id,
                       workdir=tmp_path)
    await asyncio.to_thread(fleet.start)
    m = await run_master(home, bind="127.0.0.1", config=CONFIG)
    ctx = c.client_ssl("cli")
    ctx.check_hostname = False
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=16),
                                 timeout=aiohttp.ClientTimeout(total=120))
    browser = Browser(tmp_path / "chromium")
    stop = asyncio.Event()
    counts: Dict[str, int] = {}
    load = None

    async def call(method: str, path: str, body: Any = None) -> Any:
        async with http.request(method, m.url + path, json=body) as r:
            data = await r.json(content_type=None)
            assert r.status < 400, (method, path, r.status, data)
            return data
    try:
        sem = asyncio.Semaphore(16)

        async def reg(n: Dict[str, Any]) -> None:
            async with sem:
                await call("POST", "/v1/nodes", {"name": n["name"], "address": n["address"],
                                                 "api_port": agent_port, "labels": n["labels"]})
        await asyncio.gather(*(reg(n) for n in nodes))
        await _until("1,000 ready nodes", lambda: _status(call, lambda s: s["nodes"]["ready"] == NODES), 180)

        front = _spec("front", 20, ports=(PortSpec(8080, published=front_port),))
        await call("POST", "/v1/services", front)
        await call("POST", "/v1/services", _spec("auto", 2, autoscale=AutoscaleSpec(min=2, max=8, cpu=50)))
        await call("POST", "/v1/services", _spec("flaky", 4, update=UpdateConfig(monitor=1.0)))
        await call("POST", "/v1/services", _spec("big", 400, update=UpdateConfig(parallelism=2, monitor=5.0)))
        # The bulk has no port: routing at this size is bench/scale's subject, and 9,550
        # more replicas in every node's routing table made the deploy take three minutes here.
        rest = NODES * PER_NODE - 20 - 2 - 4 - 400
        bulk = [_spec(f"bulk-{i:03d}", 50, ports=()) for i in range(rest // 50)]

        async def create(spec: Dict[str, Any]) -> None:
            async with sem:
                await call("POST", "/v1/services", spec)
        await asyncio.gather(*(create(b) for b in bulk))
        total = 20 + 2 + 4 + 400 + 50 * len(bulk)
        await _until(f"{total} replicas serving",
                     lambda: _status(call, lambda s: s["tasks"]["healthy"] >= total), 300, every=1.0)

        load = asyncio.create_task(_traffic(f"http://127.0.0.1:{front_port}", stop, counts))
        await _until("traffic answered", lambda: _ok(counts.get("200", 0) > 100), 60)

        # two history samples apart (history_interval 1 s), so the marks stand apart on the
        # time axis
        await fleet.set_cpu("auto", 95.0)                                   # an autoscale step
        await asyncio.sleep(2)
        await fleet.kill([n["name"] for n in nodes[10:13]])                  # three deaths
        await asyncio.sleep(2)
        await call("PATCH", "/v1/services/flaky", {"image": "sim:broken"})   # rolls back
        await asyncio.sleep(2)
        await call("PATCH", "/v1/services/big", {"image": "sim:2"})          # stays in progress

        def kinds() -> set:
            return {mk["kind"] for mk in m.master.history.doc()["marks"]}
        await _until("marks of every kind", lambda: _ok(kinds() >= {"rollout", "rollback", "death",
                                                                     "autoscale"}), 120)
        assert m.master.rollout_view("big")["status"] == "updating"

        info = await call("GET", "/v1/dashboard")
        await browser.start()
        await browser.send("Emulation.setDeviceMetricsOverride", width=1400, height=1900,
                           deviceScaleFactor=1, mobile=False)
        await browser.navigate(info["login"])

        async def page(expr: str) -> Any:
            res = await browser.send("Runtime.evaluate", expression=expr, returnByValue=True)
            assert "exceptionDetails" not in res, (expr, res["exceptionDetails"])   # a bad probe
            return (res.get("result") or {}).get("value")
        await _until("the charts with samples", lambda: page(
            "!!document.body && Number(document.body.dataset.history || 0) >= 5 && "   # body: null while loading
            "document.querySelectorAll('.heat .cell').length"), 60)
        await _until("traffic in the charts", lambda: page(
            "document.querySelector('[data-chart=req_s] path[data-series=front]') && "
            "Number(document.querySelector('[data-chart=req_s] path[data-series=front]').dataset.points) >= 3"),
            60)
        assert await page("document.querySelectorAll('.heat .cell').length") == NODES
        for chart in ("error_rate", "p99_ms"):
            assert await page(f"!!document.querySelector('[data-chart={chart}] path[data-series=front]')"), chart
        for chart in ("cpu", "mem"):
            assert await page(f"document.querySelectorAll('[data-chart={chart}] path[data-series]').length") == 3
        for kind in ("rollout", "rollback", "death", "autoscale"):
            assert await page(f"document.querySelectorAll('[data-chart=req_s] [data-mark={kind}]').length"), kind
        open_rollout = await page("[...document.querySelectorAll('[data-chart=req_s] [data-mark=rollout] title')]"
                                  ".map(t => t.textContent).filter(t => t.includes('big'))")
        assert any("(in progress)" in t for t in open_rollout), open_rollout
        assert "rolling out" in await page("document.getElementById('summary').textContent")
        # no y-axis label starts left of its chart (the p99 chart's "1500ms" was cut off)
        clipped = await page("[...document.querySelectorAll('svg.chart')].flatMap(svg => "
                             "[...svg.querySelectorAll('text.tick')].filter(t => t.getBBox().x < 0)"
                             ".map(t => svg.dataset.chart + ': ' + t.textContent))")
        assert clipped == [], clipped
        await browser.screenshot(ARTIFACTS / "dashboard-1000-nodes.png")

        # filter by status: the three dead nodes
        await page("(s => { s.value = 'down'; s.dispatchEvent(new Event('change')); })"
                   "(document.getElementById('f-status'))")
        dead = await page("[...document.querySelectorAll('.heat .cell')].map(c => c.dataset.node)")
        assert sorted(dead) == sorted(n["name"] for n in nodes[10:13])
        # a label filter: one rack of 100 (the roster's rack label), none of them down
        await page("(s => { s.value = ''; s.dispatchEvent(new Event('change')); })"
                   "(document.getElementById('f-status'))")
        await page("(i => { i.value = 'rack=r004'; i.dispatchEvent(new Event('input')); })"
                   "(document.getElementById('f-label'))")
        assert await page("document.querySelectorAll('.heat .cell').length") == 100
        # hover details and a click that charts the node
        name = nodes[450]["name"]
        await page(f"document.querySelector('.heat .cell[data-node=\"{name}\"]')"
                   ".dispatchEvent(new MouseEvent('mouseover', {bubbles: true}))")
        tip = await page("document.getElementById('node-tip').innerText")
        assert name in tip and "tasks" in tip and "rack=r004" in tip, tip
        await page(f"document.querySelector('.heat .cell[data-node=\"{name}\"]').click()")
        await _until("the node's own CPU line", lambda: page(
            f"!!document.querySelector('[data-chart=cpu] path[data-series=\"{name}\"]')"), 30)
        await browser.screenshot(ARTIFACTS / "dashboard-1000-nodes-filtered.png")
        assert (ARTIFACTS / "dashboard-1000-nodes.png").stat().st_size > 20_000
        print(f"traffic: {json.dumps(counts)}")
        assert counts.get("500", 0) > 0 and counts.get("200", 0) > 0
    finally:
        stop.set()
        if load is not None:
            await load
        await browser.close()
        await http.close()
        await m.close()
        await fleet.close()


async def _ok(v: Any) -> Any:
    return v


async def _status(call: Any, pred: Callable[[Dict[str, Any]], bool]) -> bool:
    return pred(await call("GET", "/v1/status"))
