"""Failures on loopback: ejection and retry, rise and fall, panic mode, 5xx
ejection, a backend process SIGKILLed under load with no failed request, and
one killed between its response head and its body.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from tests.integration.lb.lb_support import free_port, wait_until
from swarmlet.shipped.lb import Backend, HealthConfig, LBConfig, OutlierConfig

pytestmark = pytest.mark.integration

NO_CHECKS = HealthConfig(enabled=False)
FAST_CHECKS = HealthConfig(interval=0.05, timeout=0.5, rise=2, fall=3)


def url(lb, path="/"):
    return f"http://127.0.0.1:{lb.port}{path}"


async def texts(session, u, n, method="GET"):
    out = []
    for _ in range(n):
        async with session.request(method, u, data=b"payload" if method == "POST" else None) as r:
            out.append((r.status, await r.text()))
    return out


class SilentCloser:
    """A backend that reads a request and hangs up without answering."""

    def __init__(self) -> None:
        self.requests = 0
        self.server = None

    async def start(self) -> Backend:
        async def handle(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            writer.close()
        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        return Backend("127.0.0.1", self.server.sockets[0].getsockname()[1], "/up")

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


async def test_connect_error_ejects_and_retries(backends, make_lb):
    (good,) = await backends(1)
    dead = Backend("127.0.0.1", free_port(), "/up", name="dead")
    lb = await make_lb(LBConfig(health=NO_CHECKS), [dead, good.backend])
    async with aiohttp.ClientSession() as s:
        answers = await texts(s, url(lb), 10)
    assert answers == [(200, "b0")] * 10          # no client saw the dead one
    st = lb.router.states[dead.key]
    assert st.ejected(lb.loop.time()) and st.eject_kind == "network"
    assert st.ejections_total == 1 and lb.metrics.retries == 1
    assert lb.metrics.upstream_errors == {"connect": 1}


async def test_idempotent_retried_after_send_but_post_is_not(backends, make_lb):
    (good,) = await backends(1)
    bad = SilentCloser()
    bad_backend = await bad.start()
    try:
        lb = await make_lb(LBConfig(health=NO_CHECKS), [bad_backend, good.backend])
        async with aiohttp.ClientSession() as s:
            gets = await texts(s, url(lb), 4)
        assert gets == [(200, "b0")] * 4 and bad.requests == 1   # GET replayed elsewhere

        lb2 = await make_lb(LBConfig(health=NO_CHECKS), [bad_backend, good.backend])
        async with aiohttp.ClientSession() as s:
            posts = await texts(s, url(lb2), 4, method="POST")
        statuses = Counter(status for status, _ in posts)
        # the POST that reached the silent backend is answered 502, never replayed
        assert statuses == {200: 3, 502: 1} and bad.requests == 2
        assert [t for st, t in posts if st == 502] == [
            "502 Bad Gateway: backend closed the connection\n"]
    finally:
        await bad.stop()


async def test_timeout_ejects_and_retries_idempotent_requests(backends, make_lb):
    slow, fast = await backends(2)
    slow.delay = 1.0
    cfg = LBConfig(health=NO_CHECKS, response_timeout=0.3)
    lb = await make_lb(cfg, [slow.backend, fast.backend])
    async with aiohttp.ClientSession() as s:
        assert await texts(s, url(lb), 4) == [(200, "b1")] * 4
    st = lb.router.states[slow.backend.key]
    assert st.ejections_total == 1 and lb.metrics.upstream_errors["timeout"] == 1


async def test_timeouts_give_504_and_post_is_sent_once(backends, make_lb):
    a, b = await backends(2)
    a.delay = b.delay = 1.0
    cfg = LBConfig(health=NO_CHECKS, response_timeout=0.3)
    lb = await make_lb(cfg, [a.backend, b.backend])
    async with aiohttp.ClientSession() as s:
        assert await texts(s, url(lb), 1, method="POST") == [
            (504, "504 Gateway Timeout: backend did not answer within 0.3s\n")]
        assert a.hits + b.hits == 1                 # not replayed: it may have had effects
        lb2 = await make_lb(cfg, [a.backend, b.backend])   # no ejections yet
        assert await texts(s, url(lb2), 1) == [
            (504, "504 Gateway Timeout: backend did not answer within 0.3s (after 2 attempts)\n")]
        assert a.hits + b.hits == 3                 # the GET went to both


async def test_fall_then_rise_with_thresholds(backends, make_lb):
    a, b = await backends(2)
    lb = await make_lb(LBConfig(health=FAST_CHECKS), [a.backend, b.backend])
    st = lb.router.states[a.backend.key]
    await wait_until(lambda: a.health_hits >= 2)   # checks run
    a.healthy = False
    hits_when_sick = a.health_hits
    await wait_until(lambda: not st.healthy)
    assert a.health_hits - hits_when_sick >= 3       # fall=3: not on the first failure
    async with aiohttp.ClientSession() as s:
        assert await texts(s, url(lb), 6) == [(200, "b1")] * 6
    a.healthy = True
    hits_when_well = a.health_hits
    await wait_until(lambda: st.healthy)
    assert a.health_hits - hits_when_well >= 2       # rise=2
    async with aiohttp.ClientSession() as s:
        assert {t for _, t in await texts(s, url(lb), 6)} == {"b0", "b1"}


async def test_checks_run_with_a_single_backend(backends, make_lb):
    (a,) = await backends(1)
    lb = await make_lb(LBConfig(health=FAST_CHECKS), [a.backend])
    a.healthy = False
    await wait_until(lambda: not lb.router.states[a.backend.key].healthy)
    a.healthy = True
    await wait_until(lambda: lb.router.states[a.backend.key].healthy)


async def test_panic_mode_routes_to_all_when_none_is_healthy(backends, make_lb):
    a, b = await backends(2)
    a.healthy = b.healthy = False                    # health says no, but they serve
    lb = await make_lb(LBConfig(health=FAST_CHECKS), [a.backend, b.backend])
    await wait_until(lambda: not any(st.healthy for st in lb.router.states.values()))
    async with aiohttp.ClientSession() as s:
        answers = await texts(s, url(lb), 6)
    assert {st for st, _ in answers} == {200}
    assert {t for _, t in answers} == {"b0", "b1"}
    assert lb.router.panic and lb.router.panics >= 6
    assert "swarmlet_lb_panic_routes_total" in lb.metrics_text()


async def test_consecutive_5xx_eject_for_a_growing_time(backends, make_lb):
    a, b = await backends(2)
    a.fail_status = 500
    cfg = LBConfig(health=NO_CHECKS,
                   outlier=OutlierConfig(consecutive_5xx=3, base_ejection=0.3, max_ejection=10))
    lb = await make_lb(cfg, [a.backend, b.backend])
    st = lb.router.states[a.backend.key]
    async with aiohttp.ClientSession() as s:
        first = await texts(s, url(lb), 6)           # a answers 500 three times: out
        assert Counter(first) == {(500, "b0 failing"): 3, (200, "b1"): 3}
        assert st.ejected(lb.loop.time()) and st.eject_kind == "5xx"
        assert await texts(s, url(lb), 4) == [(200, "b1")] * 4
        await wait_until(lambda: not st.ejected(lb.loop.time()))
        await texts(s, url(lb), 6)                   # back in, fails again: ejected longer
        assert st.ejections == 2
        assert st.ejected_until - lb.loop.time() > 0.35


async def test_no_failed_request_when_a_backend_is_killed_under_load(make_lb):
    script = Path(__file__).with_name("lb_backend_proc.py")
    procs = [subprocess.Popen([sys.executable, str(script), f"r{i}"], stdout=subprocess.PIPE)
             for i in range(3)]
    try:
        ports = [int(p.stdout.readline()) for p in procs]
        cfg = LBConfig(health=HealthConfig(interval=0.2, timeout=0.5))
        lb = await make_lb(cfg, [Backend("127.0.0.1", port, None, name=f"r{i}")
                                 for i, port in enumerate(ports)])
        results: Counter = Counter()
        stop = asyncio.Event()

        async def worker(s):
            for _ in range(2000):                    # bounded
                if stop.is_set():
                    return
                async with s.get(url(lb)) as r:
                    results[(r.status, await r.text())] += 1

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=20)) as s:
            workers = [asyncio.ensure_future(worker(s)) for _ in range(20)]
            await wait_until(lambda: sum(results.values()) >= 300)
            procs[1].send_signal(signal.SIGKILL)     # a replica crashes mid-load
            killed_at = sum(results.values())
            await wait_until(lambda: sum(results.values()) >= killed_at + 600, timeout=20)
            stop.set()
            await asyncio.gather(*workers)
        assert {status for status, _ in results} == {200}, results
        after = sum(results.values()) - killed_at
        assert after >= 600 and results[(200, "r0")] and results[(200, "r2")]
        assert lb.router.states[("127.0.0.1", ports[1])].ejections_total >= 1
        assert lb.metrics.retries >= 1                # the failure path was really taken
    finally:
        for p in procs:
            p.kill()
            p.wait()


async def test_tcp_check_marks_a_closed_port_down(make_lb):
    dead = Backend("127.0.0.1", free_port(), None)        # no health path: TCP connect
    lb = await make_lb(LBConfig(health=FAST_CHECKS), [dead])
    st = lb.router.states[dead.key]
    await wait_until(lambda: not st.healthy)
    assert st.fail_streak >= 3 and "could not connect" in st.last_error


async def test_client_going_away_frees_the_backend(backends, make_lb):
    (a,) = await backends(1)
    lb = await make_lb(LBConfig(health=NO_CHECKS), [a.backend])
    reader, writer = await asyncio.open_connection("127.0.0.1", lb.port)
    writer.write(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.wait_for(a.held.wait(), 5)
    st = lb.router.states[a.backend.key]
    assert st.active == 1
    writer.close()
    await wait_until(lambda: st.active == 0 and lb.metrics.client_aborts == 1)
    assert lb.metrics.open_connections == 0


async def test_cut_backend_retries_its_in_flight_requests_elsewhere(backends, make_lb):
    a, b = await backends(2)
    lb = await make_lb(LBConfig(health=NO_CHECKS), [a.backend])
    async with aiohttp.ClientSession() as s:
        pending = asyncio.ensure_future(texts(s, url(lb, "/hold"), 1))
        await asyncio.wait_for(a.held.wait(), 5)
        lb.set_backends([b.backend])                   # a's task died: no drain wait
        lb.cut_backend(*a.backend.key)
        b.release.set()
        assert await asyncio.wait_for(pending, 5) == [(200, "b1 released")]
    await wait_until(lambda: a.backend.key not in lb.router.states)


@pytest.mark.parametrize("hold", [True, False])
async def test_backend_killed_between_head_and_body(make_lb, hold):
    """Held answers make the cut retryable; without holding the client sees it."""
    script = Path(__file__).with_name("lb_backend_proc.py")
    a = subprocess.Popen([sys.executable, str(script), "a", "hang"], stdout=subprocess.PIPE)
    b = subprocess.Popen([sys.executable, str(script), "b"], stdout=subprocess.PIPE)
    try:
        pa, pb = int(a.stdout.readline()), int(b.stdout.readline())
        cfg = LBConfig(health=NO_CHECKS, hold_time=30.0, hold_bytes=16384 if hold else 0)
        lb = await make_lb(cfg, [Backend("127.0.0.1", pa, None), Backend("127.0.0.1", pb, None)])

        async def get(s):
            async with s.get(url(lb, "/hang")) as r:
                return r.status, await r.text()

        head_sent = asyncio.ensure_future(asyncio.to_thread(a.stdout.readline))
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
            for _ in range(4):                       # round robin: one of these reaches a
                req = asyncio.ensure_future(get(s))
                done, _ = await asyncio.wait({req, head_sent}, timeout=5,
                                             return_when=asyncio.FIRST_COMPLETED)
                if head_sent in done:
                    break
                assert req.result() == (200, "b")
            assert head_sent.done() and head_sent.result() == b"head\n"
            assert not req.done()                    # the head is held, or on its way
            a.send_signal(signal.SIGKILL)            # dies before its body
            if hold:
                assert await asyncio.wait_for(req, 5) == (200, "b")
                assert lb.metrics.retries == 1 and lb.metrics.upstream_errors == {"reset": 1}
            else:
                with pytest.raises(aiohttp.ClientPayloadError):
                    await asyncio.wait_for(req, 5)
    finally:
        for p in (a, b):
            p.kill()
            p.wait()
            p.stdout.close()


@pytest.mark.parametrize("hold", [True, False])
async def test_cut_during_a_close_delimited_answer_is_not_its_end(backends, make_lb, hold):
    """A body that ends at the close: our own cut (the task died) must not pass
    for that close. Held, the answer is retried elsewhere; streaming, it shows
    as truncated rather than as a complete 200."""
    started, release = asyncio.Event(), asyncio.Event()

    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npart1;")
        started.set()
        await release.wait()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        (b,) = await backends(1)
        dying = Backend("127.0.0.1", server.sockets[0].getsockname()[1], None)
        cfg = LBConfig(health=NO_CHECKS, hold_time=30.0, hold_bytes=16384 if hold else 0)
        lb = await make_lb(cfg, [dying])
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
            req = asyncio.ensure_future(texts(s, url(lb), 1))
            await asyncio.wait_for(started.wait(), 5)
            await wait_until(lambda: any(c.resp_started for c in lb.clients))
            lb.set_backends([b.backend])             # its task died: cut, as ingress does
            lb.cut_backend(*dying.key)
            if hold:
                assert await asyncio.wait_for(req, 5) == [(200, "b0")]
            else:
                with pytest.raises(aiohttp.ClientPayloadError):
                    await asyncio.wait_for(req, 5)
    finally:
        release.set()
        server.close()
        await server.wait_closed()


class ClosesKeptAlive:
    """Answers the first request of each connection (keep-alive) and hangs up on the next
    one, unanswered: the backend side of the close race on a pooled connection."""

    def __init__(self) -> None:
        self.cut = 0
        self.server = None

    async def start(self) -> Backend:
        async def handle(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            try:
                await reader.readuntil(b"\r\n\r\n")
                self.cut += 1
            except asyncio.IncompleteReadError:
                pass
            writer.close()
        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        return Backend("127.0.0.1", self.server.sockets[0].getsockname()[1], "/up")

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


async def test_a_pooled_connection_closed_under_a_request_does_not_use_up_an_attempt(make_lb):
    """With one attempt per request, a GET that met a kept-alive connection closing under it
    is still sent again on a fresh one: that close says nothing about the backend (it was
    answered 502 before). A fresh failure is still the one attempt."""
    be = ClosesKeptAlive()
    backend = await be.start()
    try:
        lb = await make_lb(LBConfig(health=NO_CHECKS, max_attempts=1), [backend])
        async with aiohttp.ClientSession() as s:
            answers = await texts(s, url(lb), 6)
        assert answers == [(200, "ok")] * 6
        assert be.cut >= 1 and lb.metrics.retries == be.cut
    finally:
        await be.stop()
