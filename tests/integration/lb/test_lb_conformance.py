"""The LB conformance suite in CI: the same crafted bytes (tests/lbconf/cases.py,
84 cases) to swarmlet, nginx and HAProxy, each in front of its own recording
backend. swarmlet must never desync and never forward more of a case than the
more permissive of the two. nginx and haproxy are prerequisites
(scripts/bootstrap.sh): a missing one fails this test, it never skips.

The table is printed (``-s`` shows it); ``bench/lb/conformance`` runs the same.
"""

from __future__ import annotations

import pytest

from tests.lbconf.cases import cases
from tests.lbconf.harness import run_all, summary, table, violations
from tests.lbconf.peers import MissingPeer

pytestmark = pytest.mark.integration


async def test_swarmlet_meets_the_conformance_targets():
    groups = {c.group for c in cases()}
    assert len(cases()) >= 60 and {"cl-te", "te-obfuscated", "chunk-size", "host", "pipelining",
                                   "bad-second", "hop-by-hop", "upgrade", "head-204-304",
                                   "response-framing"} <= groups
    try:
        results = await run_all()
    except MissingPeer as exc:
        pytest.fail(f"the conformance suite needs its peers: {exc}")
    print("\n" + table(results) + "\n\n" + summary(results))
    assert violations(results) == []
    # the peers really ran and disagree where expected (the harness is not blind)
    assert results["cl+te"]["nginx"].statuses[:1] == [400]
    assert results["cl+te"]["haproxy"].forwarded == 1
    assert all(o.statuses[:1] == [200] for o in results["pipe-2-get"].values())
