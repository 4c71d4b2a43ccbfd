"""How long the master lets each watch wait: its setting, stretched where nodes are many."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from swarmlet.master.daemon import MasterConfig
from swarmlet.master.poller import LONG_POLL_MAX, Poller

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("nodes,cfg,want", [
    (3, MasterConfig(), 20.0),                          # a small cluster: the setting
    (400, MasterConfig(), 20.0),
    (1000, MasterConfig(), 50.0),                       # 20 idle answers a second in all
    (3000, MasterConfig(), LONG_POLL_MAX),              # never past what agents accept
    (1000, MasterConfig(long_poll=0.2), 50.0),
    (10, MasterConfig(long_poll=2.0), 2.0),             # tests' short waits stay short
])
async def test_long_poll_wait(nodes, cfg, want):
    m = SimpleNamespace(cfg=cfg, nodes={f"n{i}": None for i in range(nodes)})
    assert Poller(m).long_poll_wait() == want
