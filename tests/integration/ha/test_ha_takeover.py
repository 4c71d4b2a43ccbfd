"""A takeover that fails while the lease still holds is tried again (``HAMaster._supervise``).

An HA master in this process on a real single-member etcd (loopback, TLS). The first
``Master.start`` of the new term fails as it does when etcd is busy electing its own raft
leader (a ``StoreError``). The elector still holds the lease, so no leadership change comes to
wake the supervisor: before the fix the master held the lease and led nothing, and every other
master proxied to it and got 503 "not the leader" until the process was restarted.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from swarmlet.master import daemon
from swarmlet.master.ha_runner import HAMaster
from swarmlet.shipped.exceptions import StoreError
from tests.tools.hamasters import HAMasters

pytestmark = pytest.mark.integration


async def test_a_failed_takeover_is_retried_while_the_lease_holds(tmp_path, monkeypatch):
    h = HAMasters(tmp_path, 1)
    h.etcd.start()
    calls = []
    real_start = daemon.Master.start

    async def start_failing_once(self):
        calls.append(time.monotonic())
        if len(calls) == 1:
            await real_start(self)          # half started: a watch and loops to undo
            raise StoreError("etcd request timed out (an election is under way)")
        await real_start(self)

    monkeypatch.setattr(daemon.Master, "start", start_failing_once)
    ha = HAMaster(h.home("m0"))
    try:
        await ha.start()
        deadline = time.monotonic() + 15
        while not ha.leading() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert ha.leading(), f"still not leading after {len(calls)} takeover(s)"
        assert len(calls) == 2 and ha.elector.state.term == ha.current.master.term
        assert ha.elector.counters["won"] == 1      # the same term, not a new election
        assert calls[1] - calls[0] < 3.0
    finally:
        await ha.close()
        h.etcd.stop()
