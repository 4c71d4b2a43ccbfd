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


def _routes(variant: int):
    shop = Entry("shop", "SHOP", tls="acme", hsts=60)
    api = Entry("api", "API", tls="acme", redirect=False)
    plain = Entry("plain", "PLAIN")
    wild = Entry("wild", "WILD", tls="manual")
    deep = Entry("deep", "DEEP")
    routes = {"shop": (("shop.example.com",), "/", shop),
              "api": (("shop.example.com", "api.example.com"), "/api", api),
              "plain": (("plain.test",), "/", plain),
              "wild": (("*.wild.test",), "/", wild),
              "deep": (("*.deep.test", "one.deep.test"), "/v2", deep)}
    if variant:                         # a route change: plain.test gains a prefix
        routes["api"] = (("plain.test", "api.example.com"), "/api", api)
    return routes


def _fresh(variant: int, default: str, tokens: dict, https_port: int) -> EdgeTable:
    t = EdgeTable()
    t.set_entries(_routes(variant))
    t.set_default(default)
    t.set_tokens(tokens)
    t.https_port = https_port
    return t


def _shown(d):
    kind, value = d
    return kind, value.service if kind == SITE else value


def test_kept_decisions_are_the_ones_made_afresh():
    """A long-lived table (keeping decisions per Host) answers what a new one (keeping
    none yet) answers, over hosts, paths, TLS, tokens, defaults and route changes."""
    import random
    rng = random.Random(7)
    hosts = [b"shop.example.com", b"SHOP.example.com:443", b"api.example.com", b"plain.test",
             b"plain.test.", b"a.wild.test", b"A.WILD.test:8443", b"wild.test", b"one.deep.test",
             b"two.deep.test", b"evil.test", b"", b"[::1]:443"]
    paths = [b"/", b"/x", b"/api", b"/api/v1?q", b"/apix", b"/v2/a", b"/v2x", b"*",
             b"/.well-known/acme-challenge/abc", b"/.well-known/acme-challenge/zzz"]
    state = {"variant": 0, "default": "", "tokens": {}, "https_port": 443}
    t = _fresh(**state)
    kept_some = False
    for step in range(6000):
        if rng.random() < 0.01:
            change = rng.choice(["variant", "default", "tokens", "https_port"])
            if change == "variant":
                state["variant"] ^= 1
                t.set_entries(_routes(state["variant"]))
            elif change == "default":
                state["default"] = rng.choice(["", "plain", "deep", "nobody"])
                t.set_default(state["default"])
            elif change == "tokens":
                state["tokens"] = rng.choice([{}, {"abc": "abc.thumb"}])
                t.set_tokens(state["tokens"])
            else:
                state["https_port"] = rng.choice([443, 8443])
                t.https_port = state["https_port"]
        host, path, tls = rng.choice(hosts), rng.choice(paths), rng.random() < 0.5
        got = _shown(t.decide(host, path, tls))
        assert got == _shown(_fresh(**state).decide(host, path, tls)), (step, host, path, tls, state)
        kept_some = kept_some or bool(t._kept)
    assert kept_some


def test_only_hosts_routed_on_slash_alone_keep_their_decision():
    t = table()
    t.decide(b"plain.test", b"/x", False)
    t.decide(b"shop.example.com", b"/x", True)          # shop has /api too: path decides
    t.decide(b"shop.example.com", b"/x", False)         # a redirect names the target
    assert set(t._kept) == {(b"plain.test", False)}


def test_kept_decisions_are_bounded_whatever_hosts_clients_send():
    t = table()
    t.set_default("plain")
    for i in range(10000):
        assert t.decide(b"h%d.test" % i, b"/", True)[1].site == "PLAIN"
        assert len(t._kept) <= 4096


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
