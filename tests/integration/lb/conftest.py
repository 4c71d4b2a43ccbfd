"""Fixtures for the load balancer tests: real backends and balancers on 127.0.0.1.

``backends(n)`` starts n ``TestBackend`` aiohttp servers; ``make_lb`` starts a
real ``LoadBalancer`` on an ephemeral port. Both are stopped afterwards.
"""

from __future__ import annotations

import os
from typing import Any, AsyncIterator, Callable, List, Optional

import pytest

from tests.integration.lb.lb_support import TestBackend
from swarmlet.shipped.lb import LBConfig, LoadBalancer


if os.environ.get("SWARMLET_LB_UVLOOP") == "1":
    @pytest.fixture(scope="session")
    def event_loop_policy():
        """SWARMLET_LB_UVLOOP=1: run these tests on uvloop, as ``python -m swarmlet.shipped.lb`` does."""
        import uvloop
        return uvloop.EventLoopPolicy()


@pytest.fixture
async def backends() -> AsyncIterator[Callable[..., Any]]:
    made: List[TestBackend] = []

    async def make(n: int = 1) -> List[TestBackend]:
        out = [await TestBackend(f"b{len(made) + i}").start() for i in range(n)]
        made.extend(out)
        return out

    yield make
    for b in made:
        b.release.set()
        await b.stop()


@pytest.fixture
async def make_lb() -> AsyncIterator[Callable[..., Any]]:
    made: List[LoadBalancer] = []

    async def make(config: Optional[LBConfig] = None, backends: Any = (),
                   **kw: Any) -> LoadBalancer:
        lb = LoadBalancer("127.0.0.1", 0, config or LBConfig(), **kw)
        lb.set_backends(backends)
        await lb.start()
        made.append(lb)
        return lb

    yield make
    for lb in made:
        await lb.stop(grace=0.5)
