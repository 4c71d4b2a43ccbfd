"""Liveness rules, gossip view merging, CLI flag parsing, and the JSON views."""

from __future__ import annotations

import pytest

from swarmlet.cli.services import build_spec, parse_port, parse_scale, parse_size
from swarmlet.shipped.exceptions import UsageError
from swarmlet.master.liveness import LivenessConfig, gossip_views, liveness
from swarmlet.master.state import SHUTDOWN, Task, next_revision
from swarmlet.master.views import task_row
from swarmlet.shipped.models import Health, NodeStatus, PortSpec, ServiceSpec, TaskState

pytestmark = pytest.mark.unit
CFG = LivenessConfig(down_after=2.0, partition_grace=30.0, never_seen_grace=10.0)


@pytest.mark.parametrize("reachable,since,gossip,now,want", [
    (True, None, "dead", 100, NodeStatus.READY),         # the master reaches it: that wins
    (False, 99, "left", 100, NodeStatus.LEFT),
    (False, 99.5, "dead", 100, NodeStatus.DOWN),
    (False, 99, "suspect", 100, NodeStatus.SUSPECT),      # peers doubt it too, not long enough
    (False, 97, "suspect", 100, NodeStatus.DOWN),
    (False, 97, None, 100, NodeStatus.DOWN),              # no gossip opinion (one node)
    (False, 80, "alive", 100, NodeStatus.SUSPECT),        # only the master's link is broken
    (False, 60, "alive", 100, NodeStatus.DOWN),
    (False, None, None, 5, NodeStatus.SUSPECT),           # never reached yet, registered at 0
    (False, None, None, 13, NodeStatus.DOWN),
])
def test_liveness(reachable, since, gossip, now, want):
    assert liveness(now, reachable, since, gossip, 0.0, CFG) == want


@pytest.mark.parametrize("since,gossip,now,want", [
    (99, "dead", 100, NodeStatus.SUSPECT),      # the host is up: its agent restarts; gossip
    (90, "suspect", 100, NodeStatus.SUSPECT),   # (in that agent) adds nothing
    (85, "dead", 100, NodeStatus.DOWN),         # restart_grace (15 s) out: replaced
    (99, "left", 100, NodeStatus.LEFT),
    (None, None, 13, NodeStatus.DOWN),          # never reached: the registration rules
])
def test_a_refused_connection_waits_for_the_agent_to_restart(since, gossip, now, want):
    assert liveness(now, False, since, gossip, 0.0, LivenessConfig(), refused=True) == want
    if since is not None and gossip != "left":   # the same failure timed out: down at once
        assert liveness(now, False, since, "dead", 0.0, LivenessConfig()) == NodeStatus.DOWN


def test_gossip_views_gravest_wins():
    a = [{"name": "n1", "state": "alive"}, {"name": "n2", "state": "alive"}]
    b = [{"name": "n1", "state": "suspect"}, {"name": "n3", "state": "weird"}]
    assert gossip_views([a, b]) == {"n1": "suspect", "n2": "alive"}


def test_flag_parsing():
    assert parse_size("512m") == 512 << 20 and parse_size("2GiB") == 2 << 30
    assert parse_size("1.5g") == 3 << 29 and parse_size("100") == 100
    assert parse_port("8080:80") == PortSpec(target=80, published=8080)
    assert parse_port("53/udp") == PortSpec(target=53, protocol="udp")
    assert parse_scale(("web=5", "api=0")) == [("web", 5), ("api", 0)]
    for bad in ("x", "0"):
        with pytest.raises(UsageError):
            parse_size(bad)
    for bad in ("80:x", "1:2:3", "70000", "80/sctp"):
        with pytest.raises(UsageError):
            parse_port(bad)
    with pytest.raises(UsageError):
        parse_scale(("web",))
    spec = build_spec("web", "img", 2, ("8080:80",), ("A=1",), "/health", 0.5, "256m",
                      ("node.labels.zone==a",), 1, "spread", "replicated", ())
    assert spec.reservations.cpus == 0.5 and spec.reservations.memory == 256 << 20
    assert spec.health.kind == "http" and spec.env == {"A": "1"}
    with pytest.raises(UsageError, match="constraint"):
        build_spec("web", "img", 1, (), (), None, None, None, ("zone=a",), None, "spread",
                   "replicated", ())


def test_revisions_keep_template_across_scaling():
    s1 = next_revision(None, ServiceSpec("w", "img:1", replicas=1), 1.0)
    s2 = next_revision(s1, ServiceSpec("w", "img:1", replicas=4), 2.0)
    s3 = next_revision(s2, ServiceSpec("w", "img:2", replicas=4), 3.0)
    assert (s2.revision, s2.current_from) == (2, 1)
    assert (s3.revision, s3.current_from) == (3, 3)


def test_ps_row_keys_and_stopping_state():
    t = Task("w.1.x", "w", 1, 2, node="n1", desired=SHUTDOWN, state=TaskState.RUNNING,
             health=Health.HEALTHY, reason="scaled down")
    row = task_row(t)
    assert {k: row[k] for k in ("service", "task", "node", "state", "health", "reason", "revision")} == {
        "service": "w", "task": "w.1.x", "node": "n1", "state": "stopping", "health": "healthy",
        "reason": "scaled down", "revision": 2}
