"""A member whose address answers nothing (a dead machine: no RST, no ARP reply).

Loopback always answers, so the dead member here is a listening socket whose accept queue
is full: Linux drops further SYNs, and a connect to it hangs as it would to a dead host.
The first call pays the connect bound (``CONNECT_TIMEOUT``), not the request timeout, and
every other client of this process then tries that member last (``_DOWN``): a failover
pays a dead member's timeout once per process, not once per client (elector, store, probe).
"""

from __future__ import annotations

import socket
import time

import pytest

from swarmlet.ha import etcd as E

pytestmark = pytest.mark.integration


@pytest.fixture
def blackhole():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    fill = []
    for _ in range(4):          # fill the accept queue: later SYNs are dropped
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(srv.getsockname())
        fill.append(c)
    time.sleep(0.1)
    yield f"https://127.0.0.1:{srv.getsockname()[1]}"
    for c in fill:
        c.close()
    srv.close()


def test_a_dead_member_costs_the_connect_bound_once_per_process(etcd1, blackhole):
    E._DOWN.pop(blackhole, None)
    first = E.Etcd([blackhole] + etcd1.endpoints, etcd1.client)
    t0 = time.monotonic()
    first.range("/dead-member-test/x")
    took = time.monotonic() - t0
    assert E.CONNECT_TIMEOUT * 0.9 <= took < E.DEFAULT_TIMEOUT, took
    other = E.Etcd([blackhole] + etcd1.endpoints, etcd1.client)      # another client here
    t0 = time.monotonic()
    other.range("/dead-member-test/x")
    assert time.monotonic() - t0 < E.CONNECT_TIMEOUT * 0.5
    first.close()
    other.close()
