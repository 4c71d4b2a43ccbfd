"""Server-side stack apply: the real master over mutual TLS with its real SQLite store.

The whole stack is judged, planned and stored in one transaction, or nothing
changes (``POST /v1/stacks/NAME``); ``dry_run`` asks the same endpoint for the
plan alone. No agents: what is checked is what the master stores.
"""

from __future__ import annotations

import pytest

from swarmlet.shipped.exceptions import APIError
from swarmlet.shipped.models import PortSpec, ServiceSpec, to_wire
from swarmlet.stack.service import STACK_LABEL
from tests.integration.master.test_master_daemon import Env

pytestmark = pytest.mark.integration


def _spec(name, stack="shop", port=None, image="img:1", replicas=1, **kw):
    ports = (PortSpec(8080, published=port),) if port else ()
    labels = {STACK_LABEL: stack} if stack else {}
    return ServiceSpec(name, image, replicas=replicas, ports=ports, labels=labels, **kw)


async def _apply(env, stack, specs, dry_run=False, prune=False):
    return await env.call("POST", f"/v1/stacks/{stack}", {
        "services": [to_wire(s) for s in specs], "dry_run": dry_run, "prune": prune})


async def _state(env):
    return {s["name"]: (s["revision"], s["image"], s["replicas"])
            for s in await env.call("GET", "/v1/services")}


def _service_writes(env):
    """Every store commit that wrote or removed services: (names written, names removed)."""
    seen = []
    env.master.master.store.watch(lambda rev, b: (b.services or b.delete_services) and seen.append(
        (sorted(s.name for s in b.services), sorted(b.delete_services))))
    return seen


async def test_stack_apply_is_all_or_nothing(tmp_path, docker_client):
    env = Env(tmp_path / "home", docker_client)
    try:
        await env.start_master()
        writes = _service_writes(env)
        await env.call("POST", "/v1/services", to_wire(_spec("legacy", stack=None, port=18081)))
        # dry run: the plan, and nothing stored
        before = await _state(env)
        plan = await _apply(env, "shop", [_spec("web", port=18080), _spec("api")], dry_run=True)
        assert [c["name"] for c in plan["create"]] == ["api", "web"] and plan["applied"] == []
        assert "Plan: 2 to create" in plan["text"]
        assert await _state(env) == before and len(writes) == 1

        # apply: both services in one commit (one store revision)
        out = await _apply(env, "shop", [_spec("web", port=18080), _spec("api")])
        assert sorted((a["name"], a["action"]) for a in out["applied"]) == [("api", "create"),
                                                                           ("web", "create")]
        services = await _state(env)
        assert writes[1:] == [(["api", "web"], [])]        # one transaction for the whole stack
        assert services["web"] == (1, "img:1", 1) and services["api"] == (1, "img:1", 1)

        # one service valid for the loader but invalid for the master (its port belongs to
        # another service): the update of the other changes nothing either
        before = await _state(env)
        clash = [_spec("web", port=18080, image="img:2"), _spec("api", port=18081)]
        plan = await _apply(env, "shop", clash, dry_run=True)     # the dry run says so
        assert plan["problems"] == ["port 18081/tcp is published by service 'legacy'"]
        with pytest.raises(APIError) as exc:
            await _apply(env, "shop", clash)
        assert exc.value.status == 409
        assert "stack 'shop' not applied, nothing changed: port 18081/tcp is published by " \
               "service 'legacy'" in str(exc.value)
        assert await _state(env) == before and len(writes) == 2

        # a spec the validator refuses: nothing changes, every problem named
        with pytest.raises(APIError) as exc:
            await _apply(env, "shop", [_spec("web", image="img:2"), _spec("Bad")])
        assert exc.value.status == 400 and "service 'Bad': name: expected" in str(exc.value)
        with pytest.raises(APIError) as exc:     # a service that does not say it is of this stack
            await _apply(env, "shop", [_spec("web", image="img:2"), _spec("x", stack="other")])
        assert exc.value.status == 400 and "io.swarmlet.stack=shop" in str(exc.value)
        assert await _state(env) == before

        # prune: an update and a removal in one commit; services of other stacks stay
        out = await _apply(env, "shop", [_spec("web", port=18080, replicas=2)], prune=True)
        assert sorted((a["name"], a["action"]) for a in out["applied"]) == [("api", "remove"),
                                                                           ("web", "update")]
        services = await _state(env)
        assert writes[2:] == [(["web"], ["api"])]
        assert set(services) == {"web", "legacy"} and services["web"][2] == 2
        # the same stack again: nothing to do, nothing stored
        out = await _apply(env, "shop", [_spec("web", port=18080, replicas=2)], prune=True)
        assert out["applied"] == [] and not out["has_changes"]
        assert len(writes) == 3 and await _state(env) == services
    finally:
        await env.close()
