"""The edge's decision per request head (pure): token, redirect, site, or a 404 that says why."""

from __future__ import annotations

import pytest

from swarmlet.shipped.lb.sites import ANSWER, REDIRECT, SITE, UNKNOWN, EdgeTable, Entry
from swarmlet.shipped.lb.workers import merge_metrics, merge_snapshots

pytestmark = pytest.mark.unit


def table(**kw) -> EdgeTable:
    t = EdgeTable()
    shop = Entry("shop", "SHOP", tls="acme", hsts=60)
    api = Entry("api", "API", tls="acme", redirect=False)
    plain = Entry("plain", "PLAIN")
    t.set_entries({"shop": (("shop.example.com",), "/", shop),
                   "api": (("shop.example.com", "api.example.com"), "/api", api),
                   "plain": (("plain.test",), "/", plain)})
    for k, v in kw.items():
        setattr(t, k, v)
    return t


def test_sites_by_host_and_longest_prefix_over_tls():
    t = table()
    assert t.decide(b"shop.example.com", b"/x", True)[1].site == "SHOP"
    assert t.decide(b"shop.example.com:443", b"/api/v1?q", True)[1].site == "API"
    assert t.decide(b"PLAIN.test", b"/", False)[1].site == "PLAIN"


def test_plain_http_to_a_tls_host_redirects_to_our_host_and_port():
    t = table()
    assert t.decide(b"Shop.Example.com:80", b"/a?b=1", False) == (
        REDIRECT, b"https://shop.example.com/a?b=1")
    t.https_port = 8443
    assert t.decide(b"shop.example.com", b"/", False) == (REDIRECT, b"https://shop.example.com:8443/")
    # redirect off: served over plain HTTP too
    assert t.decide(b"api.example.com", b"/api", False)[0] == SITE


def test_unknown_hosts_are_404_unless_a_default_service_is_set():
    t = table()
    kind, why = t.decide(b"evil.test", b"/x", False)
    assert kind == UNKNOWN and why == "no service is routed for host evil.test (path /x)"
    assert t.decide(b"", b"/", False) == (UNKNOWN, "no service is routed for host (none) (path /)")
    t.set_default("plain")
    assert t.decide(b"evil.test", b"/x", False)[1].site == "PLAIN"


def test_tokens_only_over_plain_http_and_only_known_ones():
    t = table()
    t.set_tokens({"abc": "abc.thumb"})
    assert t.decide(b"anything.test", b"/.well-known/acme-challenge/abc", False) == (ANSWER, b"abc.thumb")
    assert t.decide(b"shop.example.com", b"/.well-known/acme-challenge/abc", True)[0] == SITE
    assert t.decide(b"shop.example.com", b"/.well-known/acme-challenge/zzz", False)[0] == REDIRECT


def test_hsts_line_is_built_once():
    assert Entry("s", None, "acme", hsts=60).hsts_line == b"Strict-Transport-Security: max-age=60\r\n"
    assert Entry("s", None).hsts_line == b""


def test_workers_figures_add_up_and_a_backend_is_up_only_if_up_everywhere():
    a = {"8080": {"service": "web", "requests": 3, "by_status": {"200": 3}, "connections_open": 1,
                  "duration_counts": [1, 2], "backends": [{"address": "h:1", "requests": 3,
                                                           "healthy": True, "active": 1}]}}
    b = {"8080": {"service": "web", "requests": 2, "by_status": {"200": 1, "502": 1},
                  "connections_open": 2, "duration_counts": [0, 2],
                  "backends": [{"address": "h:1", "requests": 2, "healthy": False, "active": 0}]}}
    m = merge_snapshots([a, b])["8080"]
    assert (m["requests"], m["by_status"], m["connections_open"], m["duration_counts"]) == (
        5, {"200": 4, "502": 1}, 3, [1, 4])
    assert m["backends"] == [{"address": "h:1", "requests": 5, "healthy": False, "active": 1,
                              "failures": 0, "ejections": 0, "requests_per_second": 0,
                              "draining": False}]
    text = merge_metrics([
        '# HELP x_total X\n# TYPE x_total counter\nx_total{l="a"} 3\n'
        '# HELP y_up Y\n# TYPE y_up gauge\ny_up{b="1"} 1\n',
        '# HELP x_total X\n# TYPE x_total counter\nx_total{l="a"} 4\nx_total{l="b"} 1\n'
        '# HELP y_up Y\n# TYPE y_up gauge\ny_up{b="1"} 0\n'])
    assert text == ('# HELP x_total X\n# TYPE x_total counter\nx_total{l="a"} 7\nx_total{l="b"} 1\n'
                    '# HELP y_up Y\n# TYPE y_up gauge\ny_up{b="1"} 0\n')
