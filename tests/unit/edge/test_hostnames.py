"""Host names and path prefixes: the rules the validator, the LB and the certificate store share."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from swarmlet.shipped.hostnames import (SiteTable, host_problem, path_problem, prefix_matches,
                                        request_host, request_path)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", ["shop.example.com", "a.b", "localhost", "x-1.example.org",
                                  "*.example.com"])
def test_valid_hosts(name):
    assert host_problem(name) is None


@pytest.mark.parametrize("name,why", [
    ("Shop.example.com", "lower-case"), ("-a.example.com", "lower-case"), ("a..b", "lower-case"),
    ("a_b.example.com", "lower-case"), ("*.com", "wildcard below a domain"),
    ("a.*.example.com", "lower-case"), ("10.0.0.1", "not an IP"), ("", "got none"),
    ("x" * 64 + ".com", "lower-case"), (("a" * 60 + ".") * 5 + "com", "at most 253")])
def test_invalid_hosts_say_why(name, why):
    assert why in host_problem(name)


def test_a_wildcard_cannot_be_asked_of_acme():
    assert "http-01" in host_problem("*.example.com", wildcard=False)


@pytest.mark.parametrize("path", ["/", "/api", "/api/v1", "/a-b.c~d"])
def test_valid_paths(path):
    assert path_problem(path) is None


@pytest.mark.parametrize("path", ["api", "/api/", "//x", "/a/../b", "/a/./b", "/a?b", "/a#b",
                                  "/a b", ""])
def test_invalid_paths(path):
    assert path_problem(path) is not None


def test_request_host_normalises_case_port_and_trailing_dot():
    assert request_host(b"Shop.Example.COM.:443") == "shop.example.com"
    assert request_host(b"shop.example.com") == "shop.example.com"
    assert request_host(b"[::1]:8080") == "[::1]"


def test_request_path_drops_query_and_absolute_form():
    assert request_path(b"/api/x?y=1") == "/api/x"
    assert request_path(b"http://a.example/api#f") == "/api"
    assert request_path(b"http://a.example") == "/"
    assert request_path(b"*") == "/"


def test_prefixes_match_on_segment_boundaries():
    assert prefix_matches("/api", "/api") and prefix_matches("/api", "/api/")
    assert prefix_matches("/api", "/api/v1") and not prefix_matches("/api", "/apix")
    assert prefix_matches("/", "/anything")


def test_longest_prefix_wins_and_exact_host_before_wildcard():
    t = SiteTable([("shop.example.com", "/", "shop"), ("shop.example.com", "/api", "api"),
                   ("shop.example.com", "/api/admin", "admin"), ("*.example.com", "/", "wild"),
                   ("*.example.com", "/static", "static")])
    assert t.lookup("shop.example.com", "/") == "shop"
    assert t.lookup("shop.example.com", "/api/x") == "api"
    assert t.lookup("shop.example.com", "/api/admin/y") == "admin"
    assert t.lookup("shop.example.com", "/apix") == "shop"
    assert t.lookup("other.example.com", "/") == "wild"
    assert t.lookup("a.b.example.com", "/") is None       # a wildcard takes one label
    assert t.lookup("example.com", "/") is None
    assert t.lookup("nowhere.test", "/") is None


def test_exact_host_without_a_matching_prefix_falls_back_to_the_wildcard():
    t = SiteTable([("shop.example.com", "/api", "api"), ("*.example.com", "/", "wild")])
    assert t.lookup("shop.example.com", "/") == "wild"


@given(st.lists(st.sampled_from(["/", "/a", "/a/b", "/b", "/a/b/c"]), min_size=1, unique=True),
       st.sampled_from(["/", "/a", "/a/", "/a/b/c/d", "/ab", "/b/x", "/c"]))
def test_lookup_is_the_longest_matching_prefix(prefixes, path):
    t = SiteTable([("h.test", p, p) for p in prefixes])
    matching = [p for p in prefixes if prefix_matches(p, path)]
    assert t.lookup("h.test", path) == (max(matching, key=len) if matching else None)
