"""The load generator counts every request truthfully and refuses targets
outside loopback and the allowed lab networks."""

from __future__ import annotations

import pytest
from aiohttp import web

from tests.tools.loadgen import check_target, run_load

pytestmark = pytest.mark.integration


async def test_counts_every_outcome(aiohttp_server_factory):
    n = {"i": 0}

    async def handler(request):
        n["i"] += 1
        return web.Response(status=500 if n["i"] % 4 == 0 else 200, text=f"hit {n['i']}\n")

    url = await aiohttp_server_factory(handler)
    res = await run_load(url, concurrency=4, duration=10, max_requests=200)
    assert res.total == 200 == n["i"]
    assert res.failed == 50 and res.statuses[500] == 50
    assert res.served == 150


async def test_connection_errors_count_as_failures():
    res = await run_load("http://127.0.0.1:9/", concurrency=2, duration=5, max_requests=10, timeout=1)
    assert res.total == 10 and res.failed == 10 and res.served == 0


@pytest.mark.parametrize("url", ["http://8.8.8.8/", "http://10.1.2.3:80/", "http://192.168.1.1/"])
def test_refuses_foreign_targets(url):
    with pytest.raises(ValueError):
        check_target(url)


def test_allows_an_explicit_lab_network():
    check_target("http://172.18.0.2:8080/", allowed=["172.18.0.0/16"])
