"""The ingress worker process (``IngressProcess``): fed routes over its socket pair,
restarted when it dies, gone when its parent goes, and flooded without stalling
the parent's loop (the agent's API, reconcile and gossip run there).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

from swarmlet.shipped.lb.supervisor import IngressProcess
from swarmlet.shipped.lb.workers import ingress_for
from swarmlet.shipped.models import Route, RouteBackend
from tests.conftest import free_port
from tests.lbconf.client import exchange, parse_responses
from tests.lbconf.peers import REPO
from tests.lbconf.recorder import Recorder

pytestmark = pytest.mark.integration


def route(port: int, backend_port: int) -> Route:
    return Route("web", port, 80, None, backends=(RouteBackend("web.1", "n", "127.0.0.1",
                                                               backend_port),))


async def get(port: int, path: str = "/") -> int:
    raw, _ = await exchange(port, f"GET {path} HTTP/1.1\r\nHost: a\r\n\r\n".encode(), idle=0.3)
    answers, _ = parse_responses(raw)
    return answers[0].status if answers else 0


async def wait_for(cond, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


@pytest.fixture
async def rec():
    r = await Recorder().start()
    yield r
    await r.stop()


async def test_worker_serves_reports_and_comes_back_after_a_kill(rec):
    port = free_port()
    ing = IngressProcess("127.0.0.1", status_interval=0.2)
    try:
        await ing.apply([route(port, rec.port)])
        assert ing.pid and ing.pid != os.getpid()
        assert await get(port, "/one") == 200 and rec.requests()[-1].target == "/one"

        async def reported() -> bool:
            return 'swarmlet_lb_requests_total{listener="web:' in ing.metrics_text()
        await wait_for(reported)
        assert ing.proxies == {port: "web"} and ing.snapshot()[str(port)]["requests"] >= 1

        first = ing.pid
        os.kill(first, signal.SIGKILL)      # the worker dies: supervised, fed again

        async def back() -> bool:
            try:
                return ing.pid != first and await get(port, "/two") == 200
            except ConnectionRefusedError:
                return False                # not bound yet
        await wait_for(back)
        assert ing.restarts == 1

        await ing.apply([])                 # the port is unpublished
        with pytest.raises(ConnectionRefusedError):
            await get(port)
    finally:
        await ing.close()
    assert ing._proc.returncode is not None


PARENT = """
import asyncio, sys
sys.path.insert(0, {repo!r})
from swarmlet.shipped.lb.supervisor import IngressProcess
from swarmlet.shipped.models import Route, RouteBackend
async def main():
    ing = IngressProcess("127.0.0.1")
    await ing.apply([Route("web", {port}, 80, None, backends=(RouteBackend("w", "n", "127.0.0.1", {backend}),))])
    print(ing.pid, flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


async def test_worker_never_outlives_its_parent(rec):
    port = free_port()
    parent = subprocess.Popen([sys.executable, "-c", PARENT.format(repo=str(REPO), port=port,
                                                                   backend=rec.port)],
                              stdout=subprocess.PIPE, text=True)
    try:
        worker = int(await asyncio.to_thread(parent.stdout.readline))
        assert await get(port) == 200
        parent.kill()                       # SIGKILL: no cleanup code runs in the parent
        parent.wait()

        async def gone() -> bool:
            try:
                os.kill(worker, 0)
            except ProcessLookupError:
                return True
            with open(f"/proc/{worker}/stat") as fh:    # a zombie of init counts as gone
                return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
        await wait_for(gone, 15)
    finally:
        parent.kill()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def test_a_flood_on_a_published_port_costs_the_worker_not_the_caller(rec):
    """The caller's loop (the agent's) ticks every 10 ms while its published port is
    flooded from another process (10 endless headers, 10 websockets sending before
    their 101): the ticks stay on time, and the flood's CPU is the worker's."""
    port = free_port()
    ing = IngressProcess("127.0.0.1")
    await ing.apply([route(port, rec.port)])
    rec.upgrade_delay = 60.0
    gaps = []
    try:
        me0, worker0 = time.process_time(), cpu_seconds(ing.pid)
        flood = subprocess.Popen([sys.executable, "-m", "tests.lbconf.flood", str(port), "3"],
                                 cwd=str(REPO), stdout=subprocess.PIPE, text=True)
        loop = asyncio.get_running_loop()
        last = loop.time()
        while flood.poll() is None:
            await asyncio.sleep(0.01)
            now = loop.time()
            gaps.append(now - last)
            last = now
        me, worker = time.process_time() - me0, cpu_seconds(ing.pid) - worker0
        assert flood.returncode == 0
        header_bytes = int(flood.stdout.read().split()[0])
        assert header_bytes > 10 * (1 << 20)          # the flood really flooded
        assert await get(port) == 200                  # and the port still serves
    finally:
        await ing.close()
    assert max(gaps) < 0.25, f"the caller's loop stalled {max(gaps):.3f}s"
    assert worker > 0.05 and me < worker, (me, worker)


async def test_two_workers_share_a_port_with_reuse_port(rec):
    """The way to several workers per node (issue 18): each binds with SO_REUSEPORT,
    fed the same table, and the kernel spreads the connections."""
    port = free_port()
    a = IngressProcess("127.0.0.1", reuse_port=True, status_interval=0.2)
    b = IngressProcess("127.0.0.1", reuse_port=True, status_interval=0.2)
    try:
        for ing in (a, b):
            await ing.apply([route(port, rec.port)])
            assert ing.errors == {}
        for i in range(16):
            assert await get(port, f"/{i}") == 200

        async def both_served() -> bool:
            return all(ing.snapshot().get(str(port), {}).get("requests", 0) > 0 for ing in (a, b))
        await wait_for(both_served)
    finally:
        await a.close()
        await b.close()


async def test_refresh_gets_fresh_figures(rec):
    port = free_port()
    ing = IngressProcess("127.0.0.1", status_interval=60.0)     # no timely push
    try:
        await ing.apply([route(port, rec.port)])
        assert await get(port) == 200
        await ing.refresh()
        assert 'code="200"} 1' in ing.metrics_text()
    finally:
        await ing.close()


async def test_a_port_taken_at_first_is_bound_once_free(rec):
    import socket
    port = free_port()
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", port))
    squatter.listen()
    ing = IngressProcess("127.0.0.1", status_interval=0.2)
    try:
        await ing.apply([route(port, rec.port)])
        assert port in ing.errors              # reported, not fatal
        squatter.close()

        async def bound() -> bool:
            try:
                return await get(port) == 200
            except ConnectionRefusedError:
                return False
        await wait_for(bound, 10)              # retried by the worker on its own
    finally:
        squatter.close()
        await ing.close()
