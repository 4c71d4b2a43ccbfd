"""What the TLS listener's peek at the accept takes for the start of a ClientHello (pure)."""

from __future__ import annotations

import ssl

import pytest

from swarmlet.shipped.lb.tlsaccept import may_begin_client_hello, source_of

pytestmark = pytest.mark.unit


def real_hellos():
    """ClientHellos as Python's OpenSSL writes them, TLS 1.2 and 1.3, with and without SNI."""
    out = []
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        for sni in (None, "shop.example.com"):
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.minimum_version = ctx.maximum_version = version
            inc, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            obj = ctx.wrap_bio(inc, outgoing, server_hostname=sni)
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                pass
            out.append(outgoing.read())
    return out


def test_every_prefix_of_a_real_client_hello_may_begin_one():
    for hello in real_hellos():
        assert hello[:1] == b"\x16"
        for n in range(1, 7):
            assert may_begin_client_hello(hello[:n]), (n, hello[:6])


@pytest.mark.parametrize("head", [
    b"",                                  # nothing: the peer closed
    b"GET / ", b"\x00\x01\x02\x03\x04\x05", b"SSH-2.0-OpenSSH_9",
    b"\x16\x02", b"\x16\x04\x01\x00\x10\x01",          # not version 3.x
    b"\x16\x03\x01\xff\xff\x01",          # 65,535 bytes: no plaintext record is that long
    b"\x16\x03\x01\x40\x01\x01",          # 2^14 + 1
    b"\x16\x03\x01\x00\x00\x01",          # an empty record
    b"\x16\x03\x03\x00\x50\x02",          # a ServerHello, not a ClientHello
    b"\x17\x03\x03\x00\x50\x01",          # application data before any handshake
])
def test_what_no_client_hello_begins_with_is_refused(head: bytes):
    assert not may_begin_client_hello(head)


def test_the_largest_plain_record_and_partial_heads_still_may():
    assert may_begin_client_hello(b"\x16\x03\x01\x40\x00\x01")   # exactly 2^14
    assert may_begin_client_hello(b"\x16\x03\x01\xff")            # the length not all here yet


@pytest.mark.parametrize("peer, source", [
    (("203.0.113.7", 50000), "203.0.113.7"),
    (("::ffff:203.0.113.7", 50000, 0, 0), "203.0.113.7"),      # IPv4-mapped: its IPv4 address
    (("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 443, 0, 0), "2001:db8:1:2::/64"),
    (("2001:db8:1:2::1", 443, 0, 0), "2001:db8:1:2::/64"),     # the same /64: the same source
    (("2001:db8:1:3::1", 443, 0, 0), "2001:db8:1:3::/64"),
    (("fe80::1%eth0", 443, 0, 2), "fe80::/64"),                # a zone is not part of it
    ("/run/edge.sock", "/run/edge.sock"),                      # not an IP: as it is
])
def test_handshakes_are_counted_per_ipv4_address_or_ipv6_64(peer, source):
    assert source_of(peer) == source
