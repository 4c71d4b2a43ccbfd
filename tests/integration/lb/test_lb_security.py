"""Regression tests for the load balancer findings of issue 13 (each failed on the
code before the fix): raw bytes from a real client, through a real balancer on
loopback, to a recording backend that keeps exactly what it receives.
"""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from swarmlet.shipped.lb import Backend, HealthConfig, LBConfig, LoadBalancer
from tests.lbconf.client import exchange, parse_responses
from tests.lbconf.recorder import Recorder

pytestmark = pytest.mark.integration

NO_CHECKS = HealthConfig(enabled=False)


@pytest.fixture
async def rec():
    r = await Recorder().start()
    yield r
    await r.stop()


@pytest.fixture
async def lb(rec, make_lb):
    return await make_lb(LBConfig(health=NO_CHECKS), [Backend("127.0.0.1", rec.port, None)])


def targets(rec: Recorder, mark: int = 0) -> list:
    return [s.target for s in rec.requests(mark)]


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.1 ") else 0


# --- finding 1: Connection tokens never remove framing or Host ---------------------------

SMUGGLED = b"GET /SMUGGLED HTTP/1.1\r\nHost: a\r\n\r\n"
SMUGGLE = (b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\nConnection: Content-Length"
           b"\r\n\r\n%s" % (len(SMUGGLED), SMUGGLED))


async def test_connection_content_length_cannot_smuggle_a_request(rec, lb):
    raw, _ = await exchange(lb.port, SMUGGLE)
    victim, _ = await exchange(lb.port, b"GET /victim HTTP/1.1\r\nHost: a\r\n\r\n")
    seen = rec.requests()
    assert "/SMUGGLED" not in [s.target for s in seen]
    assert [s.target for s in seen] == ["/x", "/victim"]
    assert seen[0].header("content-length") == [str(len(SMUGGLED))]
    assert seen[0].body == SMUGGLED
    assert status_of(raw) == 200 and b"/victim" in victim


async def test_connection_content_length_in_an_answer_keeps_its_framing(rec, lb):
    rec.responses["cl"] = (b"HTTP/1.1 200 OK\r\nConnection: Content-Length\r\n"
                           b"Content-Length: 5\r\n\r\nhello")
    raw, _ = await exchange(lb.port, b"GET /r/cl HTTP/1.1\r\nHost: a\r\n\r\n",
                            then=b"GET /second HTTP/1.1\r\nHost: a\r\n\r\n")
    answers, left = parse_responses(raw)
    assert [a.status for a in answers] == [200, 200] and left == b""
    assert answers[0].body == b"hello" and answers[0].header("content-length") == ["5"]
    assert b"/second" in answers[1].body


async def test_connection_host_keeps_the_host(rec, lb):
    await exchange(lb.port, b"GET /h HTTP/1.1\r\nHost: shop.example\r\nConnection: Host\r\n\r\n")
    (seen,) = rec.requests()
    assert seen.header("host") == ["shop.example"]


# --- finding 2: nothing goes upstream until the head is valid ------------------------------

@pytest.mark.parametrize("coding,status", [
    (b"gzip", 501), (b"xchunked", 501), (b"identity, chunked", 501), (b"gzip, chunked", 501),
    (b"chunked, chunked", 400),
])
async def test_unimplemented_transfer_codings_are_refused_before_forwarding(rec, lb, coding,
                                                                           status):
    raw, closed = await exchange(lb.port, b"POST /te HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
                                 + coding + b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    assert status_of(raw) == status and closed
    await asyncio.sleep(0.1)
    assert rec.since() == [] and rec.conns == []     # the backend saw nothing at all


async def test_content_length_with_transfer_encoding_is_refused(rec, lb):
    raw, closed = await exchange(lb.port, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
                                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert status_of(raw) == 400 and closed and rec.conns == []


# --- finding 3: limits as bytes arrive, tunnels with backpressure, a connection cap --------

async def test_endless_header_is_refused_within_the_limit(rec, lb):
    reader, writer = await asyncio.open_connection("127.0.0.1", lb.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: a\r\nX-Flood: ")
    sent = 0
    answer = b""
    try:
        for _ in range(200):                 # up to 200 × 8 KiB = 1.6 MiB, never a CRLF
            writer.write(b"a" * 8192)
            sent += 8192
            try:
                answer = await asyncio.wait_for(reader.read(4096), 0.02)
                break
            except asyncio.TimeoutError:
                pass
    except ConnectionError:
        pass
    finally:
        writer.transport.abort()
    assert status_of(answer) == 431
    assert sent <= 64 * 1024                 # refused long before the head could grow
    assert rec.conns == []


async def test_long_target_is_414(rec, lb):
    raw, _ = await exchange(lb.port, b"GET /" + b"u" * 20000 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    assert status_of(raw) == 414 and rec.conns == []


async def test_upgrade_buffer_is_bounded_before_the_101(rec, lb):
    rec.upgrade_delay = 3.0
    reader, writer = await asyncio.open_connection("127.0.0.1", lb.port)
    writer.write(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket"
                 b"\r\n\r\n")
    blob = b"x" * (1 << 20)
    pushed = 0
    try:
        for _ in range(64):                  # try to push 64 MiB before the backend answers
            writer.write(blob)
            await asyncio.wait_for(writer.drain(), 0.5)
            pushed += len(blob)
    except asyncio.TimeoutError:
        pass                                 # backpressure: the proxy stopped reading
    buffered = sum(len(b) for c in lb.clients for b in (c.tunnel_buf or ()))
    writer.transport.abort()
    assert buffered <= 1 << 20 and pushed < 32 << 20


async def test_client_connections_are_capped(rec, make_lb):
    lb = await make_lb(LBConfig(health=NO_CHECKS, max_connections=3),
                       [Backend("127.0.0.1", rec.port, None)])
    held = [await asyncio.open_connection("127.0.0.1", lb.port) for _ in range(3)]
    await asyncio.sleep(0.05)
    raw, closed = await exchange(lb.port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert status_of(raw) == 503 and closed and lb.metrics.refused_connections == 1
    for _, w in held:
        w.transport.abort()


# --- finding 4: Host, and 400s where the connection used to just close ---------------------

@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\n\r\n",                                   # no Host in HTTP/1.1
    b"GET /\r\n\r\n",                                            # HTTP/0.9
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",             # two Hosts
    b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",                      # an invalid one
])
async def test_bad_host_is_400_and_not_forwarded(rec, lb, data):
    raw, _ = await exchange(lb.port, data)
    assert status_of(raw) == 400 and rec.conns == []


async def test_absolute_form_target_sets_the_host(rec, lb):
    raw, _ = await exchange(lb.port, b"GET http://shop.example:8080/p?q=1 HTTP/1.1\r\n"
                            b"Host: other.example\r\n\r\n")
    (seen,) = rec.requests()
    assert status_of(raw) == 200
    assert seen.target == "/p?q=1" and seen.header("host") == ["shop.example:8080"]


async def test_bad_second_request_on_a_kept_alive_connection_is_400(rec, lb):
    raw, closed = await exchange(lb.port, b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n"
                                 b"GET /two HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n")
    answers, left = parse_responses(raw)
    assert [a.status for a in answers] == [200, 400] and left == b"" and closed
    assert targets(rec) == ["/one"]


async def test_bad_chunk_size_is_400_and_never_completes_upstream(rec, lb):
    raw, closed = await exchange(lb.port, b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
                                 b"chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n")
    assert status_of(raw) == 400 and closed
    assert rec.requests() == []


async def test_bad_chunk_in_a_later_read_aborts_the_backend_request(rec, lb):
    reader, writer = await asyncio.open_connection("127.0.0.1", lb.port)
    writer.write(b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"5\r\nhello\r\n")
    await asyncio.sleep(0.2)                 # the head and a chunk went upstream
    writer.write(b"zz\r\nxx\r\n0\r\n\r\n")
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert status_of(raw) == 400
    await asyncio.sleep(0.1)
    assert rec.requests() == []              # the backend never saw the request end
    assert [k for k, _ in rec.since()] == ["partial"]


# --- finding 5: the sticky cookie is keyed --------------------------------------------------

async def test_sticky_cookie_is_keyed_and_reveals_no_address(rec):
    backend = Backend("127.0.0.1", rec.port, None)
    cookies = []
    for key in (b"k" * 32, b"k" * 32, b"j" * 32):
        lb = LoadBalancer("127.0.0.1", 0, LBConfig(health=NO_CHECKS, sticky_cookie="S",
                                                   sticky_key=key))
        lb.set_backends([backend])
        await lb.start()
        try:
            raw, _ = await exchange(lb.port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        finally:
            await lb.stop(grace=0.1)
        (answer,), _ = parse_responses(raw)
        (cookie,) = answer.header("set-cookie")
        cookies.append(cookie.split(";")[0].split("=", 1)[1])
    unkeyed = hashlib.sha1(backend.address.encode()).hexdigest()
    assert cookies[0] == cookies[1] != cookies[2]        # same key, same cookie; else not
    assert not any(unkeyed.startswith(c) or c in unkeyed for c in cookies)


async def test_deep_pipelines_are_parsed_as_they_drain(rec, lb):
    """More pipelined requests than max_pipeline in one write: parsing waits for the
    queue to drain (bounded memory) and every request is answered, in order."""
    data = b"".join(b"GET /p%d HTTP/1.1\r\nHost: a\r\n\r\n" % i for i in range(40))
    raw, _ = await exchange(lb.port, data, timeout=10, idle=1.0)
    answers, left = parse_responses(raw)
    assert [a.status for a in answers] == [200] * 40 and left == b""
    assert [a.body.split(b" ")[3] for a in answers] == [b"/p%d" % i for i in range(40)]
