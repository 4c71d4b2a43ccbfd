"""When ACME asks the CA, and how a failure waits (pure); the edge settings' rules."""

from __future__ import annotations

import pytest

from swarmlet.master.acmeplan import (DAY, Backoff, HostState, after_failure, due, from_meta,
                                      next_wake, renew_at, to_meta)
from swarmlet.master.edgeconfig import DIRECTORIES, EdgeSettings, from_meta as settings_from, patched
from swarmlet.shipped.exceptions import UsageError

pytestmark = pytest.mark.unit


def test_a_90_day_certificate_renews_30_days_before_and_a_short_one_in_its_last_third():
    assert renew_at(0, 90 * DAY, 30) == 60 * DAY
    assert renew_at(1000, 1060, 30) == 1040
    assert renew_at(0, 10 * DAY, 30) == 10 * DAY - 10 * DAY / 3


def test_issue_on_first_deploy_renew_when_due_wait_after_failure():
    certs = {"a.test": (0.0, 90 * DAY), "b.test": (0.0, 90 * DAY)}
    states = {"c.test": HostState(failures=1, next_attempt=100.0)}
    assert due(["a.test", "b.test", "c.test", "d.test"], certs, states, 50.0, 30) == [("d.test", "issue")]
    assert due(["a.test", "c.test"], certs, states, 61 * DAY, 30) == [("a.test", "renew"), ("c.test", "issue")]
    assert next_wake(["a.test"], certs, {}, 0.0, 30) == 60 * DAY
    assert next_wake(["c.test"], certs, states, 50.0, 30) == 100.0
    assert next_wake([], certs, states, 0.0, 30) == float("inf")


def test_backoff_doubles_to_its_cap_and_obeys_the_ca():
    p = Backoff(base=60, cap=600, rate_limited=3600)
    st = HostState()
    waits = []
    for _ in range(6):
        st = after_failure(st, 0.0, "boom", p)
        waits.append(st.next_attempt)
    assert waits == [60, 120, 240, 480, 600, 600] and st.failures == 6 and st.last_error == "boom"
    assert after_failure(HostState(), 0.0, "slow down", p, rate_limited=True).next_attempt == 3600
    assert after_failure(HostState(), 0.0, "x", p, retry_after=900, rate_limited=True).next_attempt == 900
    assert after_failure(HostState(), 0.0, "x", p, retry_after=7).next_attempt == 60
    assert from_meta(to_meta(st)) == st and from_meta("junk") == HostState()


def test_edge_settings_are_judged():
    s = patched(EdgeSettings(), {"acme_directory": "letsencrypt", "https_port": 8443})
    assert s.acme_directory == DIRECTORIES["letsencrypt"] and s.https_port == 8443
    assert EdgeSettings().acme_directory == ""          # no CA is ever asked by default
    for bad in ({"acme_directory": "http://x/dir"}, {"http_port": 0}, {"https_port": 80},
                {"default_service": "Bad Name"}, {"acme_email": "nope"}, {"renew_before_days": 0},
                {"acme_ca_bundle": "not pem"}, {"whatever": 1}):
        with pytest.raises(UsageError):
            patched(EdgeSettings(), bad)
    assert settings_from({"http_port": "junk"}) == EdgeSettings()
