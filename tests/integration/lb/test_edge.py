"""The edge on loopback: routing by host and longest path prefix on one port, TLS per SNI name,
redirects, HSTS, ACME tokens, and the bounds on handshakes (timeouts, caps, garbage).

Real aiohttp backends, the real ``Edge`` (as a node's ingress runs it), real TLS clients
(Python's ssl, which is OpenSSL) on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from typing import Any, Dict, List, Optional, Tuple

import pytest

from swarmlet.shipped.edge import Edge
from swarmlet.shipped.models import EdgeCert, EdgeUpdate, Route, RouteBackend
from swarmlet.webcerts import chain_info, self_signed
from tests.conftest import free_port

pytestmark = pytest.mark.integration


def route(service: str, hosts: Tuple[str, ...], port: int, path: str = "/", tls: str = "off",
          **kw: Any) -> Route:
    return Route(service, None, 8080, "/up", backends=(RouteBackend(f"{service}.1", "n1",
                                                                    "127.0.0.1", port),),
                 hosts=hosts, path=path, tls=tls, **kw)


def cert(name: str, *hosts: str) -> Tuple[EdgeCert, bytes]:
    pem, key = self_signed(list(hosts))
    return EdgeCert(name, hosts, pem.decode(), key.decode(),
                    fingerprint=chain_info(pem).fingerprint), pem


async def http(port: int, host: str, path: str = "/", extra: str = "") -> Tuple[int, Dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra}\r\n".encode())
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return parse(data)


def parse(data: bytes) -> Tuple[int, Dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return int(lines[0].split()[1]), headers, body


def client_ctx(*cas: bytes, minimum: Optional[ssl.TLSVersion] = None,
               maximum: Optional[ssl.TLSVersion] = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = bool(cas)
    ctx.verify_mode = ssl.CERT_REQUIRED if cas else ssl.CERT_NONE
    for ca in cas:
        ctx.load_verify_locations(cadata=ca.decode())
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    if minimum:
        ctx.minimum_version = minimum
    if maximum:
        ctx.maximum_version = maximum
    return ctx


async def https(port: int, host: str, path: str = "/", *, ctx: ssl.SSLContext,
                sni: Optional[str] = "") -> Tuple[int, Dict[str, str], bytes, Any]:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname=host if sni == "" else sni)
    sslobj = writer.get_extra_info("ssl_object")
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    info = {"alpn": sslobj.selected_alpn_protocol(), "version": sslobj.version(),
            "peer": sslobj.getpeercert(binary_form=True)}
    return (*parse(data), info)


@pytest.fixture
async def edge(backends):
    shop, api, other = await backends(3)
    e = Edge("127.0.0.1", http_port=free_port(), https_port=free_port(),
             handshake={"handshake_timeout": 0.5, "max_handshakes": 4, "shed_after": 0.3})
    shop_cert, shop_pem = cert("shop", "shop.example.com")
    api_cert, api_pem = cert("api.example.com", "api.example.com")
    await e.configure(EdgeUpdate(1, http_port=e.http_port, https_port=e.https_port,
                                 certs=(shop_cert, api_cert)))
    await e.apply([route("shop", ("shop.example.com",), shop.port, tls="manual", hsts=600),
                   route("api", ("api.example.com", "shop.example.com"), api.port, "/api",
                         tls="acme", redirect=False),
                   route("other", ("other.test",), other.port)])
    e.pems = {"shop": shop_pem, "api": api_pem}        # type: ignore[attr-defined]
    yield e
    await e.close()


async def test_host_and_longest_prefix_pick_the_service(edge):
    p = edge.http_port
    assert (await http(p, "other.test"))[2] == b"b2"
    assert (await http(p, "api.example.com", "/api/v1"))[2] == b"b1"
    assert (await http(p, "Other.Test.:80", "/x"))[2] == b"b2"          # case, port, dot
    # shop.example.com/api -> api (longest prefix, TLS without redirect); / -> shop (TLS: 308)
    assert (await http(p, "shop.example.com", "/api?q=1"))[2] == b"b1"
    assert (await http(p, "shop.example.com", "/apix"))[0] == 308


async def test_plain_exchanges_on_both_ports_take_the_express_lane(edge):
    assert (await http(edge.http_port, "other.test"))[2] == b"b2"
    status, headers, body, _ = await https(edge.https_port, "shop.example.com",
                                           ctx=client_ctx(edge.pems["shop"]))
    assert (status, body) == (200, b"b0")
    assert headers["strict-transport-security"] == "max-age=600"   # the site's extra line
    assert edge.sites["other"].metrics.express == 1
    assert edge.sites["shop"].metrics.express == 1
    assert (await http(edge.http_port, "shop.example.com"))[0] == 308  # the edge's own answer
    assert edge.sites["shop"].metrics.express == 1


async def test_an_unknown_host_gets_a_clear_404_or_the_default_service(edge):
    status, _, body = await http(edge.http_port, "nobody.test", "/x")
    assert status == 404 and b"no service is routed for host nobody.test (path /x)" in body
    await edge.configure(EdgeUpdate(2, http_port=edge.http_port, https_port=edge.https_port,
                                    default_service="other", certs=edge.cert_list))
    assert (await http(edge.http_port, "nobody.test"))[2] == b"b2"


async def test_plain_http_to_a_tls_host_is_redirected_keeping_the_target(edge):
    status, headers, body = await http(edge.http_port, "shop.example.com:80", "/cart?id=7")
    assert status == 308 and body == b""
    assert headers["location"] == f"https://shop.example.com:{edge.https_port}/cart?id=7"
    assert "strict-transport-security" not in headers      # HSTS only over TLS


async def test_acme_tokens_are_answered_on_plain_http_for_any_host(edge):
    edge.set_challenges({"tok-1": "tok-1.thumbprint"})
    status, headers, body = await http(edge.http_port, "shop.example.com",
                                       "/.well-known/acme-challenge/tok-1")
    assert (status, body) == (200, b"tok-1.thumbprint")      # before the redirect
    assert (await http(edge.http_port, "unknown.test", "/.well-known/acme-challenge/tok-1"))[2] \
        == b"tok-1.thumbprint"
    assert (await http(edge.http_port, "unknown.test", "/.well-known/acme-challenge/nope"))[0] == 404
    edge.set_challenges({})
    assert (await http(edge.http_port, "unknown.test", "/.well-known/acme-challenge/tok-1"))[0] == 404


async def test_tls_picks_the_certificate_by_sni_and_forwards_https(edge):
    ctx = client_ctx(edge.pems["shop"], edge.pems["api"])
    status, headers, body, info = await https(edge.https_port, "shop.example.com", "/headers",
                                              ctx=ctx)
    assert status == 200 and info["alpn"] == "http/1.1"
    assert headers["strict-transport-security"] == "max-age=600"
    import json
    seen = {k.lower(): v for k, v in json.loads(body)["headers"]}
    assert seen["x-forwarded-proto"] == "https" and seen["x-forwarded-for"] == "127.0.0.1"
    assert "proto=https" in seen["forwarded"]
    status, headers, body, info = await https(edge.https_port, "api.example.com", "/api", ctx=ctx)
    assert (status, body) == (200, b"b1") and "strict-transport-security" not in headers
    # a name without a certificate, and no SNI at all: the self-signed default, then the 404
    for sni in ("nobody.test", None):
        status, _, body, info = await https(edge.https_port, "nobody.test", ctx=client_ctx(),
                                            sni=sni)
        assert status == 404
        assert info["peer"] not in (ssl.PEM_cert_to_DER_cert(edge.pems["shop"].decode()),
                                    ssl.PEM_cert_to_DER_cert(edge.pems["api"].decode()))


async def test_only_tls_12_and_13_are_spoken(edge):
    ctx = client_ctx(edge.pems["shop"], maximum=ssl.TLSVersion.TLSv1_2)
    assert (await https(edge.https_port, "shop.example.com", ctx=ctx))[3]["version"] == "TLSv1.2"
    ctx = client_ctx(edge.pems["shop"], minimum=ssl.TLSVersion.TLSv1_3)
    assert (await https(edge.https_port, "shop.example.com", ctx=ctx))[3]["version"] == "TLSv1.3"
    old = client_ctx(maximum=ssl.TLSVersion.TLSv1_1)
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    try:
        old.set_ciphers("ALL:@SECLEVEL=0")
    except ssl.SSLError:
        pass
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await https(edge.https_port, "shop.example.com", ctx=old)


async def test_a_renewed_certificate_is_served_to_the_next_handshake(edge):
    ctx = client_ctx(edge.pems["shop"])
    new, new_pem = cert("shop", "shop.example.com")
    api = [c for c in edge.cert_list if c.name != "shop"]
    await edge.configure(EdgeUpdate(3, http_port=edge.http_port, https_port=edge.https_port,
                                    certs=(new, *api)))
    with pytest.raises(ssl.SSLCertVerificationError):
        await https(edge.https_port, "shop.example.com", ctx=ctx)
    info = (await https(edge.https_port, "shop.example.com", ctx=client_ctx(new_pem)))[3]
    assert info["peer"] == ssl.PEM_cert_to_DER_cert(new_pem.decode())


async def test_a_certificate_that_does_not_load_is_reported_and_the_others_serve(edge):
    bad = EdgeCert("broken", ("broken.test",), "-----BEGIN CERTIFICATE-----\nnope\n", "x")
    await edge.configure(EdgeUpdate(4, http_port=edge.http_port, https_port=edge.https_port,
                                    certs=(*edge.cert_list, bad)))
    assert "broken" in edge.status()["certs"]["errors"]
    ctx = client_ctx(edge.pems["shop"])
    assert (await https(edge.https_port, "shop.example.com", ctx=ctx))[0] == 200



async def test_large_bodies_and_pipelined_requests_cross_tls_whole(edge):
    """Reads past the TLS read buffer (64 KiB) and several requests in one TLS record."""
    import json
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", edge.https_port, ssl=client_ctx(edge.pems["shop"]),
        server_hostname="shop.example.com")
    body = bytes(range(256)) * 4096                 # 1 MiB
    writer.write(b"POST /upload HTTP/1.1\r\nHost: shop.example.com\r\nContent-Length: %d\r\n\r\n"
                 % len(body) + body + b"GET / HTTP/1.1\r\nHost: shop.example.com\r\n\r\n" * 3)
    answers = []
    for _ in range(4):
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        status, headers, _ = parse(head)
        answers.append((status, await reader.readexactly(int(headers["content-length"]))))
    writer.close()
    assert answers[0][0] == 200 and json.loads(answers[0][1])["bytes"] == len(body)
    assert answers[1:] == [(200, b"b0")] * 3

def _raw(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(5)
    return s


async def test_garbage_before_the_client_hello_is_cut_at_once(edge):
    s = await asyncio.to_thread(_raw, edge.https_port)
    t0 = time.monotonic()
    s.sendall(b"GET / HTTP/1.1\r\nHost: shop.example.com\r\n\r\n")
    data = await asyncio.to_thread(s.recv, 100)
    assert time.monotonic() - t0 < 0.4 and not data.startswith(b"HTTP")   # closed (or an alert)
    s.close()
    stats = edge.https.tls_server.stats()
    assert stats["handshake_failures"].get("garbage") == 1, stats


async def test_a_silent_or_slow_handshake_is_cut_at_the_timeout(edge):
    silent = await asyncio.to_thread(_raw, edge.https_port)
    slow = await asyncio.to_thread(_raw, edge.https_port)
    hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"          # a ClientHello's first bytes
    t0 = time.monotonic()
    for b in hello:
        await asyncio.to_thread(slow.sendall, bytes([b]))
        await asyncio.sleep(0.04)
    assert await asyncio.to_thread(silent.recv, 10) == b""
    assert 0.4 < time.monotonic() - t0 < 2.0
    assert await asyncio.to_thread(slow.recv, 10) == b""
    assert edge.https.tls_server.stats()["handshake_failures"].get("timeout") == 2


async def test_handshakes_past_the_cap_wait_and_slow_ones_give_way(edge):
    holders = [await asyncio.to_thread(_raw, edge.https_port) for _ in range(6)]   # cap is 4
    await asyncio.sleep(0.05)
    server = edge.https.tls_server
    assert len(server.pending) <= 4
    # a real client still gets through: the oldest slow handshakes are shed for it
    ctx = client_ctx(edge.pems["shop"])
    status = (await https(edge.https_port, "shop.example.com", ctx=ctx))[0]
    assert status == 200
    assert server.stats()["handshake_failures"].get("shed", 0) >= 1
    for h in holders:
        h.close()


async def test_a_mixed_flood_on_443_is_cut_and_counted_while_clients_are_served(edge):
    """Handshake floods, garbage before the ClientHello and slow handshakes all at once: each is
    cut (at once, at the timeout or shed at the cap) and counted, handshakes in progress never
    pass the cap, a client kept alive from before is served throughout and new clients still
    get through. (Other clients' p99 under each flood, beside nginx and HAProxy, is a figure:
    ``bench/lb/tlsflood``.)"""
    port = edge.https_port
    server = edge.https.tls_server
    ctx = client_ctx(edge.pems["shop"])
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                   server_hostname="shop.example.com")
    until = time.monotonic() + 2.5
    got = {"handshakes": 0, "garbage_cut": 0, "slow_cut": 0}
    hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(200))

    async def handshaker() -> None:
        while time.monotonic() < until:
            try:
                _, w = await asyncio.wait_for(asyncio.open_connection(
                    "127.0.0.1", port, ssl=client_ctx(), server_hostname="flood.test"), 5)
                got["handshakes"] += 1
                w.close()
            except (OSError, ssl.SSLError, asyncio.TimeoutError):
                pass                                # shed at the cap: what the cap is for

    async def garbage(junk: bytes) -> None:
        while time.monotonic() < until:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(junk)
            try:
                assert await asyncio.wait_for(r.read(), 5) == b""     # closed, no answer
            except ConnectionResetError:
                pass
            got["garbage_cut"] += 1
            w.close()

    async def slow() -> None:
        while time.monotonic() < until:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            try:
                for b in hello:                     # a byte every 0.1 s: never finishes
                    w.write(bytes([b]))
                    try:
                        if await asyncio.wait_for(r.read(1), 0.1) == b"":
                            break
                    except asyncio.TimeoutError:
                        continue
                else:
                    raise AssertionError("a slow handshake was never cut")
            except ConnectionResetError:
                pass
            got["slow_cut"] += 1
            w.close()

    peak = [0]

    async def kept_alive() -> int:
        ok = 0
        while time.monotonic() < until:
            writer.write(b"GET / HTTP/1.1\r\nHost: shop.example.com\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            status, headers, _ = parse(head)
            body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 5)
            assert (status, body) == (200, b"b0")
            ok += 1
            peak[0] = max(peak[0], len(server.pending))
            await asyncio.sleep(0.01)
        return ok

    async def newcomers() -> int:
        n = 0
        while time.monotonic() < until:
            for attempt in range(3):                # a slot frees within shed_after (0.3 s)
                try:
                    assert (await https(port, "shop.example.com", ctx=ctx))[0] == 200
                    break
                except (OSError, ssl.SSLError, asyncio.TimeoutError):
                    if attempt == 2:
                        raise
            n += 1
            await asyncio.sleep(0.2)
        return n

    floods = ([handshaker() for _ in range(4)]
              + [garbage(j) for j in (b"GET / HTTP/1.1\r\nHost: shop.example.com\r\n\r\n",
                                      b"\x00" * 64, b"\x16\x03\x01\x00\x05hello",
                                      b"SSH-2.0-OpenSSH_9.2\r\n")]
              + [slow() for _ in range(12)])
    results = await asyncio.wait_for(asyncio.gather(kept_alive(), newcomers(), *floods), 30)
    ok, fresh = results[0], results[1]
    assert ok >= 20 and fresh >= 3, (ok, fresh)   # newcomers wait for a shed slot
    assert got["handshakes"] >= 1 and got["garbage_cut"] >= 8 and got["slow_cut"] >= 12, got
    assert peak[0] <= 4
    stats = server.stats()
    fails = stats["handshake_failures"]
    assert fails.get("garbage", 0) + fails.get("error", 0) >= got["garbage_cut"] - 4, stats
    assert fails.get("timeout", 0) + fails.get("shed", 0) >= got["slow_cut"] - 12, stats
    await asyncio.sleep(0.7)                        # past the handshake timeout: nothing left
    assert server.stats()["in_progress"] == 0
    assert len(edge.https.clients) == 1             # only the client kept alive
    writer.close()


def _client_hello() -> bytes:
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_ctx().wrap_bio(inc, out, server_hostname="shop.example.com")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


async def test_a_record_no_client_hello_begins_is_cut_at_the_accept_without_a_task():
    """A handshake record header with a length no plaintext record has, or a handshake that is
    no ClientHello, is garbage told by the peek at the accept: no task, transport or SSL
    object is made for it (bench/lb/tlsflood's garbage flood sends such records)."""
    from swarmlet.shipped.lb.tls import CertStore
    from swarmlet.shipped.lb.tlsaccept import TLSServer
    server = TLSServer("127.0.0.1", 0, asyncio.Protocol, CertStore().main, handshake_timeout=2.0)
    server.start()
    loop = asyncio.get_running_loop()
    junk = [b"\x16\x03\x01\xff\xff" + bytes(range(200)), b"\x16\x03\x03\x00\x50\x02" + bytes(80)]
    socks = []
    staged = [0]

    def watch(n: int) -> None:
        staged[0] = max(staged[0], len(server.hellos) + len(server.tasks) + len(server.running))
        if n:
            loop.call_soon(watch, n - 1)
    try:
        for i in range(10):
            s = socket.create_connection(("127.0.0.1", server.bound_port))
            s.sendall(junk[i % 2])
            socks.append(s)
        time.sleep(0.05)                                   # every byte has arrived
        loop.call_soon(watch, 40)
        await asyncio.sleep(0.3)
        assert server.failures == {"garbage": 10}, server.stats()
        assert staged[0] == 0 and server.handshakes == 0
        for s in socks:                                    # each was closed, with a FIN
            s.settimeout(2)
            assert s.recv(100) == b""
    finally:
        server.close()
        for s in socks:
            s.close()


async def test_a_backlog_of_new_connections_is_taken_a_few_per_loop_turn():
    """Connections waiting in the backlog are accepted at most ``accept_batch`` per turn of the
    loop, garbage among them cut at the accept (no task for it), and at most
    ``handshakes_per_turn`` TLS handshakes start per turn: a flood is interleaved with the
    requests of the connections already served instead of holding a turn for itself
    (``bench/lb/tlsflood``: other clients' p99 while it lasts)."""
    from swarmlet.shipped.lb.tls import CertStore
    from swarmlet.shipped.lb.tlsaccept import TLSServer
    server = TLSServer("127.0.0.1", 0, asyncio.Protocol, CertStore().main, handshake_timeout=2.0,
                       max_handshakes=64, accept_batch=4, handshakes_per_turn=1)
    server.start()
    loop = asyncio.get_running_loop()
    hello = _client_hello()
    socks = []
    try:
        # all queued while the loop is busy here: 24 garbage connections, 6 ClientHellos
        for i in range(30):
            s = socket.create_connection(("127.0.0.1", server.bound_port))
            s.sendall(hello if i % 5 == 4 else b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            socks.append(s)
        time.sleep(0.05)                                   # every byte has arrived
        turns: List[Tuple[int, int]] = []

        def accepted() -> int:
            return len(server.pending) + sum(server.failures.values()) + server.handshakes

        def tick(n: int) -> None:
            turns.append((accepted(), len(server.running) + server.handshakes
                          + sum(v for k, v in server.failures.items() if k != "garbage")))
            if n:
                loop.call_soon(tick, n - 1)
        loop.call_soon(tick, 40)
        await asyncio.sleep(0.3)
        steps = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(turns, turns[1:])]
        assert turns[-1][0] == 30, turns                   # all taken, in time
        assert max(a for a, _ in steps) <= 4, steps        # a few per turn
        assert max(h for _, h in steps) <= 1, steps        # one handshake begun per turn
        assert server.failures.get("garbage") == 24, server.stats()   # cut at the accept
        assert len(server.running) + server.handshakes + len(server.hellos) == 6
    finally:
        server.close()
        for s in socks:
            s.close()


async def test_one_source_holds_at_most_its_share_of_the_handshake_slots():
    """Slow handshakes from one address (a ClientHello begun, never finished) take at most
    ``max_handshakes_per_source`` slots; the ones over it are closed at the accept and counted
    as ``source``, and a client from another address still gets a slot and its handshake,
    with no shed needed."""
    from swarmlet.shipped.lb.tls import CertStore
    from swarmlet.shipped.lb.tlsaccept import TLSServer
    server = TLSServer("127.0.0.1", 0, asyncio.Protocol, CertStore().main, handshake_timeout=5.0,
                       max_handshakes=8, max_handshakes_per_source=3, shed_after=5.0)
    server.start()
    hello = _client_hello()
    slow = []
    try:
        for _ in range(6):                                 # 6 from 127.0.0.2: 3 held, 3 cut
            s = socket.socket()
            s.bind(("127.0.0.2", 0))
            s.connect(("127.0.0.1", server.bound_port))
            s.sendall(hello[:20])                          # a ClientHello begun
            slow.append(s)
        for _ in range(50):
            if sum(server.failures.values()) + len(server.pending) >= 6:
                break
            await asyncio.sleep(0.02)
        assert server.failures == {"source": 3}, server.stats()
        assert len(server.pending) == 3 and server.stats()["sources"] == 1
        # another address: its own share, served at once
        ctx = client_ctx()
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            "127.0.0.1", server.bound_port, ssl=ctx, local_addr=("127.0.0.3", 0)), 5)
        assert writer.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
        writer.close()
        assert server.handshakes == 1 and "shed" not in server.failures
        for s in slow:                                     # the cut ones see the close
            s.settimeout(2)
            try:
                s.recv(100)
            except (ConnectionResetError, socket.timeout):
                pass
        for s in slow:                                     # the held ones end: slots free
            s.close()
        for _ in range(50):
            if not server.pending:
                break
            await asyncio.sleep(0.02)
        assert not server.pending and not server.per_source and not server.source
    finally:
        server.close()
        for s in slow:
            s.close()
