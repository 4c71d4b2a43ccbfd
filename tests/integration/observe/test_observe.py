"""Seeing the cluster, against a real master with real in-process agents and real dockerd:
logs (merged, followed across a replacement), events, Prometheus metrics, ``swarmlet top``
in a pty and the dashboard in headless chromium (a node going down shows within 1 s of the
master knowing it), and autoscaling driven by the demo app's ``/burn``."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List

import pytest

from tests.conftest import free_port_pair

from swarmlet import cluster as clusterlib
from swarmlet.master.autoscale import AutoscalePolicy
from swarmlet.master.runner import run_master
from swarmlet.shipped.models import AutoscaleSpec, NodeStatus, PortSpec, Resources, ServiceSpec, to_wire
from tests.integration.agent.conftest import agent_image  # noqa: F401  (fixture)
from tests.integration.master.test_master_daemon import FAST, Env
from tests.integration.observe.cdp import CHROMIUM, Browser
from tests.support import CLI, interruptible

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]
ARTIFACTS = REPO / "artifacts"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
CHAT = ("sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done")


async def _env(tmp_path, docker_client, config=FAST) -> Env:
    env = Env(tmp_path / "home", docker_client)
    data = json.loads(env.c.path("cluster.json").read_text())
    data["master_port"] = free_port_pair()
    env.c.path("cluster.json").write_text(json.dumps(data))
    env.c = clusterlib.load(env.c.home)
    env.config = config
    return env


async def _start(env: Env, *shorts: str):
    agents = [await env.agent(s) for s in shorts]
    env.master = await run_master(env.c.home, bind="127.0.0.1", config=env.config)
    for a in agents:
        await env.register(a)
    return agents


@pytest.fixture
async def oenv(tmp_path, docker_client):
    env = await _env(tmp_path, docker_client)
    yield env
    await env.close()


def _running(rows, n: int, service: str) -> bool:
    live = [r for r in rows if r["service"] == service and r["desired"] == "running"]
    return len(live) == n and all(r["state"] == "running" for r in live)


class Reader:
    """Collects a subprocess's output from a file descriptor in a thread."""

    def __init__(self, fd: int) -> None:
        self.fd, self.buf, self.lock = fd, b"", threading.Lock()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self) -> None:
        while True:
            try:
                r, _, _ = select.select([self.fd], [], [], 0.2)
                if r:
                    chunk = os.read(self.fd, 65536)
                    if not chunk:
                        return
                    with self.lock:
                        self.buf += chunk
            except OSError:
                return

    def text(self) -> str:
        with self.lock:
            return self.buf.decode("utf-8", "replace")


async def _until(pred, timeout: float, what: str, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        await asyncio.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")


async def test_logs_events_and_metrics(oenv, agent_image):
    from prometheus_client.parser import text_string_to_metric_families
    a, b = await _start(oenv, "a", "b")
    await oenv.call("POST", "/v1/services", to_wire(ServiceSpec("chat", agent_image, replicas=2,
                                                                command=CHAT)))
    rows = await oenv.wait("2 chat replicas", lambda r: _running(r, 2, "chat"))
    assert {r["node"] for r in rows} == {a.config.name, b.config.name}
    cli = CLI({**os.environ, "SWARMLET_HOME": str(oenv.c.home)})
    await asyncio.sleep(1.0)

    # merged, prefixed, in time order
    p = await asyncio.to_thread(cli, "logs", "--tail", "4", "-t", "chat", timeout=60)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    tags = {ln.split(" |")[0].strip() for ln in lines}
    assert tags == {f"{r['task']}@{r['node']}" for r in rows}
    stamps = [ln.split(" | ", 1)[1].split()[0] for ln in lines]
    assert stamps == sorted(stamps) and all("tick" in ln for ln in lines)

    # follow across a replacement: node a dies, its replica is replaced on b
    proc = subprocess.Popen([sys.executable, "-m", "swarmlet.cli.main", "logs", "-f", "--tail", "1",
                             "chat"], env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=interruptible)
    out = Reader(proc.stdout.fileno())
    try:
        await _until(lambda: all(f"{r['task']}@" in out.text() for r in rows), 30, "both replicas")
        await a.stop()
        dead = next(r["task"] for r in rows if r["node"] == a.config.name)
        after = await oenv.wait("a replacement on b", lambda r: _running(r, 2, "chat") and dead not in
                                {x["task"] for x in r if x["desired"] == "running"}, timeout=60)
        new = next(r["task"] for r in after if r["desired"] == "running" and r["task"] not in
                   {x["task"] for x in rows})
        await _until(lambda: f"{new}@{b.config.name} | tick" in out.text(), 30, "the replacement's lines")
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.to_thread(proc.wait, 10)
    assert proc.returncode == 0, proc.stderr.read().decode()

    # events: node death, task placed/started, scale
    await oenv.call("PATCH", "/v1/services/chat", {"replicas": 3})
    p = await asyncio.to_thread(cli, "events", "-o", "json", timeout=60)
    evs = json.loads(p.stdout)
    text = [(e["kind"], e["subject"], e["message"]) for e in evs]
    assert any(k == "node" and s == a.config.name and m.endswith("-> down") for k, s, m in text), text
    assert any(k == "task" and s == new and f"placed on {b.config.name}" in m for k, s, m in text)
    assert any(k == "task" and s == new and "started" in m for k, s, m in text)
    assert any(k == "scale" and s == "chat" and m == "replicas 2 -> 3" for k, s, m in text)
    human = (await asyncio.to_thread(cli, "events", timeout=60)).stdout
    assert f"{a.config.name}: " in human and "-> down" in human

    # Prometheus text from the master (cli certificate) and an agent
    ctx = oenv.c.client_ssl("cli")
    body = await _get_text(oenv.master.url + "/metrics", ctx)
    fams = {f.name: f for f in text_string_to_metric_families(body)}
    nodes = {s.labels["status"]: s.value for s in fams["swarmlet_master_nodes"].samples}
    assert nodes["down"] == 1 and nodes["ready"] == 1
    tasks = {s.labels["state"]: s.value for s in fams["swarmlet_master_tasks"].samples}
    assert tasks["running"] >= 2
    hist = fams["swarmlet_master_reconcile_duration_seconds"]
    assert any(s.name.endswith("_count") and s.value > 0 for s in hist.samples)
    await _until(lambda: b.last_stats.get("tasks"), 10, "agent stats")
    ctx2 = oenv.c.client_ssl("cli")
    ctx2.check_hostname = False
    body = await _get_text(f"https://127.0.0.1:{b.api_port}/metrics", ctx2)
    fams = {f.name: f for f in text_string_to_metric_families(body)}
    assert fams["swarmlet_agent_node_cpu_percent"].samples[0].labels["node"] == b.config.name
    cpu = {s.labels["task"] for s in fams["swarmlet_agent_task_cpu_percent"].samples}
    assert new in cpu
    assert "swarmlet_agent_task_restarts" in fams and "swarmlet_agent_task_memory_used_bytes" in fams


async def _get_text(url: str, ctx) -> str:
    import aiohttp
    async with aiohttp.ClientSession() as s:
        async with s.get(url, ssl=ctx) as r:
            assert r.status == 200, await r.text()
            return await r.text()


def _top_row(text: str, node: str) -> str:
    frame = text.rsplit("\x1b[H", 1)[-1]
    for line in ANSI.sub("", frame).splitlines():
        if line.startswith(node + " "):
            return line
    return ""


async def test_top_and_dashboard_show_a_node_death(oenv, agent_image):
    # scripts/bootstrap.sh installs both: a missing one fails this test, it never skips
    assert shutil.which("tmux") and os.path.exists(CHROMIUM), f"needs tmux and {CHROMIUM}"
    a, b = await _start(oenv, "a", "b")
    m = oenv.master.master
    await oenv.call("POST", "/v1/services", to_wire(ServiceSpec("chat", agent_image, replicas=2,
                                                                command=CHAT)))
    await oenv.wait("2 chat replicas", lambda r: _running(r, 2, "chat"))

    # swarmlet top in a pty
    master_fd, slave_fd = pty.openpty()
    env = {**os.environ, "SWARMLET_HOME": str(oenv.c.home), "TERM": "xterm", "COLUMNS": "160"}
    top = subprocess.Popen([sys.executable, "-m", "swarmlet.cli.main", "top"], env=env,
                           stdin=slave_fd, stdout=slave_fd, stderr=slave_fd, start_new_session=True,
                           preexec_fn=interruptible)
    os.close(slave_fd)
    screen = Reader(master_fd)

    # the dashboard in headless chromium, logged in with the token `swarmlet dashboard` prints
    cli = CLI(env)
    p = await asyncio.to_thread(cli, "dashboard", "-o", "json", timeout=60)
    info = json.loads(p.stdout)
    browser = Browser(oenv.c.home / "chromium-profile")
    try:
        await browser.start()
        await browser.navigate(info["login"])
        node_status = (f"(document.querySelector('[data-node=\"{a.config.name}\"]')||{{dataset:{{}}}})"
                       ".dataset.status || ''")
        await _until(lambda: "ready" in _top_row(screen.text(), a.config.name), 30, "top shows node a")
        deadline = time.monotonic() + 30
        while await browser.eval(node_status) != "ready":
            assert time.monotonic() < deadline, await browser.eval("document.body.innerText")
            await asyncio.sleep(0.1)
        assert await browser.eval("document.querySelectorAll('[data-task]').length") == 2
        await browser.screenshot(ARTIFACTS / "dashboard-before.png")

        await a.stop()
        # When does the master know? Watch its state from the same loop.
        await _until(lambda: m.live[a.config.name].status == NodeStatus.DOWN, 30, "master: a down",
                     step=0.005)
        t_master = time.monotonic()
        t_page = t_top = None
        while t_page is None or t_top is None:
            if t_top is None and "down" in _top_row(screen.text(), a.config.name):
                t_top = time.monotonic()
            if t_page is None and await browser.eval(node_status) == "down":
                t_page = time.monotonic()
            assert time.monotonic() - t_master < 10, (ANSI.sub("", screen.text()[-2000:]))
            await asyncio.sleep(0.02)
        await browser.screenshot(ARTIFACTS / "dashboard-node-down.png")
        assert "down" in await browser.eval(
            f"document.querySelector('[data-node=\"{a.config.name}\"] [data-role=status]').textContent")
        print(f"node death: top +{t_top - t_master:.3f}s, dashboard +{t_page - t_master:.3f}s "
              "after the master knew")
        assert t_top - t_master < 1.0 and t_page - t_master < 1.0
        assert (ARTIFACTS / "dashboard-node-down.png").stat().st_size > 1000
    finally:
        await browser.close()
        os.killpg(top.pid, signal.SIGINT)   # Ctrl-C
        code = await asyncio.to_thread(top.wait, 10)
        os.close(master_fd)
    assert code == 0
    assert screen.text().endswith("\x1b[?25h\x1b[?1049l")   # the terminal is given back


async def test_dashboard_refuses_without_token_or_certificate(oenv, agent_image):
    import aiohttp
    await _start(oenv, "a")
    info = await oenv.call("GET", "/v1/dashboard")
    url = info["url"]
    async with aiohttp.ClientSession() as s:
        async with s.get(url + "api/overview", ssl=False) as r:
            assert r.status == 401
        async with s.get(url + "api/overview", ssl=False,
                         headers={"Authorization": "Bearer nope"}) as r:
            assert r.status == 401
        async with s.get(url + "api/overview", ssl=False,
                         headers={"Authorization": f"Bearer {info['token']}"}) as r:
            doc = await r.json()
            assert r.status == 200 and doc["nodes"][0]["name"].endswith("-a")
        async with s.get(url + "static/app.js", ssl=oenv.c.client_ssl("cli")) as r:
            assert r.status == 200 and "EventSource" in await r.text()   # the cli certificate
        async with s.get(url + "static/..%2Fserver.py", ssl=False,
                         headers={"Authorization": f"Bearer {info['token']}"}) as r:
            assert r.status == 404


FAST_SCALE = AutoscalePolicy(interval=0.5, up_window=3.0, down_window=8.0, up_cooldown=4.0,
                             down_cooldown=8.0, stale_after=5.0)


async def test_autoscale_up_under_burn_and_back_down(tmp_path, docker_client):
    import dataclasses
    import urllib.request
    try:
        docker_client.images.get("swarmlet-hello:1")
    except Exception:
        pytest.fail("swarmlet-hello:1 is not built: run examples/hello/build (scripts/test.sh does)")
    env = await _env(tmp_path, docker_client, dataclasses.replace(FAST, autoscale=FAST_SCALE))
    try:
        await _start(env, "a")
        spec = ServiceSpec("burner", "swarmlet-hello:1", replicas=1, ports=(PortSpec(8080),),
                           autoscale=AutoscaleSpec(min=1, max=3, cpu=25))
        await env.call("POST", "/v1/services", to_wire(spec))
        rows = await env.wait("a burner", lambda r: _running(r, 1, "burner"))
        port = rows[0]["host_ports"]["8080/tcp"]

        def burn() -> None:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/burn?seconds=15", timeout=60).read()

        t0 = time.monotonic()
        burner = asyncio.create_task(asyncio.to_thread(burn))
        counts: List[int] = []

        async def replicas() -> int:
            n = (await env.call("GET", "/v1/services/burner"))["replicas"]
            counts.append(n)
            return n

        while await replicas() < 2:
            assert time.monotonic() - t0 < 30, "no scale-up within 30 s of sustained load"
            await asyncio.sleep(0.25)
        t_up = time.monotonic() - t0
        await burner
        t_idle = time.monotonic()
        while await replicas() > 1:
            assert time.monotonic() - t_idle < 60, "no scale-down after the load"
            await asyncio.sleep(0.25)
        print(f"autoscale: up after {t_up:.1f}s of load, down {time.monotonic() - t_idle:.1f}s "
              "after it ended")
        assert all(1 <= n <= 3 for n in counts)
        # no flapping: the count went up, then down, never up-down-up
        moves = [b - a for a, b in zip(counts, counts[1:]) if b != a]
        signs = [m > 0 for m in moves]
        assert signs == sorted(signs, reverse=True), counts
        evs = await env.call("GET", "/v1/events?limit=200")
        scale = [e["message"] for e in evs if e["kind"] == "scale" and e["subject"] == "burner"]
        assert any(m.startswith("autoscale 1 -> ") for m in scale), scale
        assert any(m.endswith("-> 1") or " -> 1:" in m for m in scale), scale
    finally:
        await env.close()
