"""The proxy end to end on loopback: balancing, headers, streaming, websocket,
framing corner cases, errors with clear bodies, metrics, live backend changes.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import aiohttp
import pytest

from tests.integration.lb.lb_support import free_port, headers_of, wait_until
from swarmlet.shipped.lb import Backend, HealthConfig, LBConfig

pytestmark = pytest.mark.integration

NO_CHECKS = HealthConfig(enabled=False)


def url(lb, path="/"):
    return f"http://127.0.0.1:{lb.port}{path}"


async def get_text(session, u, **kw):
    async with session.get(u, **kw) as resp:
        return resp.status, await resp.text()


async def test_round_robin_spreads_evenly(backends, make_lb):
    bs = await backends(3)
    lb = await make_lb(LBConfig(health=NO_CHECKS), [b.backend for b in bs])
    async with aiohttp.ClientSession() as s:
        answers = [await get_text(s, url(lb)) for _ in range(30)]
    assert {status for status, _ in answers} == {200}
    assert Counter(text for _, text in answers) == {"b0": 10, "b1": 10, "b2": 10}


async def test_forwarding_headers_and_hop_by_hop(backends, make_lb):
    (b,) = await backends(1)
    lb = await make_lb(LBConfig(health=NO_CHECKS), [b.backend])
    async with aiohttp.ClientSession() as s:
        async with s.get(url(lb, "/headers"), headers={
            "X-Forwarded-For": "203.0.113.7", "Forwarded": "for=203.0.113.7",
            "X-Forwarded-Proto": "https-spoofed", "Connection": "keep-alive, X-Private",
            "X-Private": "secret", "Keep-Alive": "timeout=5", "Proxy-Authorization": "Basic x",
            "TE": "trailers", "X-App": "kept", "Host": "shop.example:8080"}) as resp:
            assert resp.status == 200
            h = headers_of(await resp.json())
    assert h["x-forwarded-for"] == ["203.0.113.7, 127.0.0.1"]
    assert h["x-forwarded-proto"] == ["http"]
    assert h["x-forwarded-host"] == ["shop.example:8080"]
    assert h["forwarded"] == ['for=203.0.113.7, for=127.0.0.1;proto=http;host="shop.example:8080"']
    assert h["host"] == ["shop.example:8080"]
    assert h["x-app"] == ["kept"]
    for hop in ("x-private", "keep-alive", "proxy-authorization", "te"):
        assert hop not in h, hop


async def test_plain_exchanges_take_the_express_lane_and_the_rest_the_general_path(backends,
                                                                                 make_lb):
    (b,) = await backends(1)
    lb = await make_lb(LBConfig(health=NO_CHECKS), [b.backend])
    async with aiohttp.ClientSession() as s:
        for _ in range(3):                              # kept alive: one connection
            assert await get_text(s, url(lb)) == (200, "b0")
        assert lb.metrics.express == 3
        # requests the lane declines (forwarding to append to, a body): llhttp's, and their
        # plain answers the lane's (the two lanes are independent)
        async with s.get(url(lb, "/headers"), headers={"X-Forwarded-For": "203.0.113.7"}) as resp:
            h = headers_of(await resp.json())
        assert h["x-forwarded-for"] == ["203.0.113.7, 127.0.0.1"]
        async with s.post(url(lb, "/echo"), data=b"abc") as resp:
            assert (resp.status, await resp.text()) == (200, "b0")
        assert lb.metrics.express == 5
        b.release.set()
        async with s.get(url(lb, "/stream")) as resp:   # a chunked answer: llhttp's
            assert resp.headers["Transfer-Encoding"] == "chunked"
            await resp.read()
        assert lb.metrics.express == 5
        assert await get_text(s, url(lb)) == (200, "b0")
    assert lb.metrics.express == 6
    assert sum(lb.metrics.requests.values()) == 7


async def test_streams_chunked_response_without_buffering(backends, make_lb):
    (b,) = await backends(1)
    lb = await make_lb(LBConfig(health=NO_CHECKS), [b.backend])
    async with aiohttp.ClientSession() as s:
        async with s.get(url(lb, "/stream")) as resp:
            assert resp.headers["Transfer-Encoding"] == "chunked"
            first = await asyncio.wait_for(resp.content.readexactly(6), 5)
            assert first == b"first;"   # arrived while the backend still holds the rest
            b.release.set()
            rest = await resp.content.read()
    assert rest == b"piece0;piece1;piece2;"


async def test_streams_chunked_request_body(backends, make_lb):
    (b,) = await backends(1)
    lb = await make_lb(LBConfig(health=NO_CHECKS), [b.backend])

    async def body():
        yield b"x" * 1000
        # the backend must have the first piece before we send the next one
        await asyncio.wait_for(b.first_piece.wait(), 5)
        for _ in range(50):
            yield b"y" * 10000

    async with aiohttp.ClientSession() as s:
        async with s.post(url(lb, "/upload"), data=body()) as resp:
            assert resp.status == 200
            got = await resp.json()
    assert got["bytes"] == 1000 + 50 * 10000
    assert got["chunked"] == "chunked"


async def test_large_body_with_length_both_ways(backends, make_lb):
    (b,) = await backends(1)
    lb = await make_lb(LBConfig(health=NO_CHECKS), [b.backend])
    data = bytes(range(256)) * 8192          # 2 MiB, over the retry buffer
    async with aiohttp.ClientSession() as s:
        async with s.post(url(lb, "/upload"), data=data) as resp:
            assert (await resp.json())["bytes"] == len(data)


async def test_websocket_through_the_proxy(backends, make_lb):
    (b,) = await backends(1)
    lb = await make_lb(LBConfig(health=NO_CHECKS), [b.backend])
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(url(lb, "/ws")) as ws:
            for i in range(5):
                await ws.send_str(f"hello{i}")
                assert (await ws.receive(timeout=5)).data == f"b0:hello{i}"
            await ws.send_bytes(b"\x01\x02\x03")
            assert (await ws.receive(timeout=5)).data == b"\x03\x02\x01"
    assert lb.metrics.tunnels == 1
    await wait_until(lambda: lb.router.states[b.backend.key].active == 0)


async def test_raw_framing_http10_head_pipelining(backends, make_lb):
    (b,) = await backends(1)
    lb = await make_lb(LBConfig(health=NO_CHECKS), [b.backend])
    reader, writer = await asyncio.open_connection("127.0.0.1", lb.port)
    # two pipelined requests, the second a HEAD: answered in order, HEAD without body
    writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nHEAD /b HTTP/1.1\r\nHost: x\r\n\r\n")
    first = await reader.readuntil(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200")
    assert await reader.readexactly(2) == b"b0"
    second = await reader.readuntil(b"\r\n\r\n")
    assert second.startswith(b"HTTP/1.1 200") and b"Content-Length: 2" in second
    writer.write(b"GET /c HTTP/1.0\r\n\r\n")    # HTTP/1.0: answer, then close
    answer = await asyncio.wait_for(reader.read(), 5)
    assert answer.startswith(b"HTTP/1.1 200") and b"Connection: close" in answer
    assert answer.endswith(b"b0")
    writer.close()


async def test_malformed_request_is_400(make_lb, backends):
    (b,) = await backends(1)
    lb = await make_lb(LBConfig(health=NO_CHECKS), [b.backend])
    reader, writer = await asyncio.open_connection("127.0.0.1", lb.port)
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 5)
    assert answer.startswith(b"HTTP/1.1 400") and b"malformed request" in answer
    writer.close()


async def test_503_with_clear_body_when_no_backend(make_lb):
    lb = await make_lb(LBConfig(health=NO_CHECKS), [])
    async with aiohttp.ClientSession() as s:
        status, text = await get_text(s, url(lb))
    assert status == 503
    assert text == "503 Service Unavailable: no backend available for this service\n"


async def test_502_when_every_backend_refuses(make_lb):
    dead = [Backend("127.0.0.1", free_port()), Backend("127.0.0.1", free_port())]
    lb = await make_lb(LBConfig(health=NO_CHECKS), dead)
    async with aiohttp.ClientSession() as s:
        status, text = await get_text(s, url(lb))
    assert status == 502
    assert text.startswith("502 Bad Gateway: could not connect to backend")
    assert "after 2 attempts" in text


async def test_504_for_a_slow_backend(backends, make_lb):
    (b,) = await backends(1)
    lb = await make_lb(LBConfig(health=NO_CHECKS, response_timeout=0.3), [b.backend])
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    async with aiohttp.ClientSession() as s:
        status, text = await get_text(s, url(lb, "/slow?s=1"))
    assert status == 504
    assert text == "504 Gateway Timeout: backend did not answer within 0.3s\n"
    assert loop.time() - t0 < 2.0


async def test_sticky_cookie_pins_a_client(backends, make_lb):
    bs = await backends(3)
    lb = await make_lb(LBConfig(health=NO_CHECKS, sticky_cookie="SWL"), [b.backend for b in bs])
    # unsafe=True: aiohttp keeps no cookies for IP hosts otherwise
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        async with s.get(url(lb)) as resp:
            first = await resp.text()
            assert "SWL" in resp.cookies
        later = [await get_text(s, url(lb)) for _ in range(6)]
    assert {text for _, text in later} == {first}


async def test_set_backends_live_with_graceful_drain(backends, make_lb):
    a, b = await backends(2)
    lb = await make_lb(LBConfig(health=NO_CHECKS, drain_timeout=10), [a.backend])
    async with aiohttp.ClientSession() as s:
        held = asyncio.ensure_future(get_text(s, url(lb, "/hold")))
        await asyncio.wait_for(a.held.wait(), 5)
        lb.set_backends([b.backend])          # a leaves while serving a request
        answers = [await get_text(s, url(lb)) for _ in range(5)]
        assert answers == [(200, "b1")] * 5
        assert lb.router.states[a.backend.key].draining
        a.release.set()
        assert await asyncio.wait_for(held, 5) == (200, "b0 released")
    await wait_until(lambda: a.backend.key not in lb.router.states)


async def test_metrics_and_status_on_the_admin_port(backends, make_lb):
    (b,) = await backends(1)
    lb = await make_lb(LBConfig(health=NO_CHECKS), [b.backend], admin_port=0)
    async with aiohttp.ClientSession() as s:
        for _ in range(3):
            await get_text(s, url(lb))
        admin = f"http://127.0.0.1:{lb.admin_bound_port}"
        async with s.get(admin + "/metrics") as resp:
            assert resp.headers["Content-Type"].startswith("text/plain")
            text = await resp.text()
        async with s.get(admin + "/status") as resp:
            status = await resp.json()
    assert f'swarmlet_lb_requests_total{{listener="{lb.name}",code="200"}} 3' in text
    assert f'swarmlet_lb_request_duration_seconds_count{{listener="{lb.name}"}} 3' in text
    assert "# TYPE swarmlet_lb_request_duration_seconds histogram" in text
    assert "swarmlet_lb_backend_up{" in text and "swarmlet_lb_backend_ejections_total{" in text
    assert status["requests"] == 3 and status["backends"][0]["requests"] == 3


async def test_stop_lets_in_flight_requests_finish(backends, make_lb):
    (a,) = await backends(1)
    lb = await make_lb(LBConfig(health=NO_CHECKS), [a.backend])
    async with aiohttp.ClientSession() as s:
        pending = asyncio.ensure_future(get_text(s, url(lb, "/hold")))
        await asyncio.wait_for(a.held.wait(), 5)
        stopping = asyncio.ensure_future(lb.stop(grace=5))
        await asyncio.sleep(0)                 # stop() has begun: no new connections
        a.release.set()
        assert await asyncio.wait_for(pending, 5) == (200, "b0 released")
        await asyncio.wait_for(stopping, 5)
    assert not lb.clients


async def test_close_delimited_answer_ends_for_a_keep_alive_client(make_lb):
    """A backend ending its body by closing: an HTTP/1.1 client gets it re-chunked,
    the last chunk included, although no read follows the close."""
    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npart1;")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"part2")
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        lb = await make_lb(LBConfig(health=NO_CHECKS), [Backend("127.0.0.1", port, None)])
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
            for _ in range(2):                       # and the client connection lives on
                async with s.get(url(lb)) as r:
                    assert r.headers.get("Transfer-Encoding") == "chunked"
                    assert await r.text() == "part1;part2"
        assert lb.metrics.connections == 1
    finally:
        server.close()
        await server.wait_closed()
