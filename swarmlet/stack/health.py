"""``healthcheck:`` and the ``x-swarmlet`` extension of a service.

``healthcheck.test`` becomes a command check: ``["CMD", …]`` runs as given,
``["CMD-SHELL", "…"]`` and a plain string run through ``/bin/sh -c``,
``["NONE"]`` and ``disable: true`` turn checks off. Without a healthcheck the
service has none (``kind="none"``), as our images declare no HEALTHCHECK.

``x-swarmlet`` holds what Compose cannot say::

    x-swarmlet:
      health: /health              # or {path: /health, port: 8080}: an HTTP GET check
      lb: {algorithm: least_conn, sticky: true, connect_timeout: 5s, timeout: 60s}
      autoscale: {min: 2, max: 6, cpu: 70, down_window: 5m}   # down_window: optional

Timings a ``healthcheck:`` omits take Docker's defaults (interval 30 s, timeout
30 s, 3 retries, start period 0), so an app that is slow to answer behaves as
under Docker. An ``x-swarmlet.health`` HTTP check is swarmlet's own and keeps
the load balancer's faster defaults (``HealthCheck()``: every 2 s, 1 s timeout,
3 retries); it takes the timings ``healthcheck:`` gives explicitly. When
``healthcheck.test`` is given too, the HTTP check wins and the test is
reported as ignored.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Tuple

from .edge import EDGE_KEYS
from ..shipped.models import DOWN_WINDOW_RANGE, AutoscaleSpec, HealthCheck, LBOptions, PortSpec
from .loader import Node
from .values import (Context, as_bool, as_choice, as_duration, as_float, as_int, as_map,
                     as_str, check_keys, fail)

TEST_WHAT = 'a test like ["CMD", "prog", "arg"], ["CMD-SHELL", "cmd"], ["NONE"] or a string'
# Docker's defaults for a HEALTHCHECK that leaves a timing out (docker run --health-*).
DOCKER_DEFAULTS = HealthCheck(interval=30.0, timeout=30.0, retries=3, start_period=0.0)


def parse_healthcheck(node: Node, ctx: Context) -> Tuple[HealthCheck, Optional[Node], Dict[str, object]]:
    """The check (Docker's defaults for omitted timings), the ``test`` node if
    there was one, and the timings the file gives explicitly."""
    keys = check_keys(node, ("test", "interval", "timeout", "retries", "start_period", "disable"),
                      ctx, ignored={"start_interval": "checks run at 'interval' from the start"})
    timing: Dict[str, object] = {}
    for name in ("interval", "timeout", "start_period"):
        if name in keys:
            with ctx.guard():
                timing[name] = as_duration(keys[name])
                if name != "start_period" and timing[name] <= 0:
                    del timing[name]
                    fail(keys[name], "a duration above zero")
    if "retries" in keys:
        with ctx.guard():
            timing["retries"] = as_int(keys["retries"], 1)
    check = dataclasses.replace(DOCKER_DEFAULTS, **timing)
    if "disable" in keys and as_bool(keys["disable"]):
        return dataclasses.replace(check, kind="none"), None, timing
    if "test" not in keys:
        return check, None, timing
    test = keys["test"]
    return dataclasses.replace(check, **_test(test)), test, timing


def _test(node: Node) -> Dict[str, object]:
    if isinstance(node.value, str):
        if not node.value.strip():
            fail(node, TEST_WHAT)
        return {"kind": "cmd", "command": ("/bin/sh", "-c", node.value)}
    if not node.is_seq or not node.value:
        fail(node, TEST_WHAT)
    words = tuple(as_str(item, "a string") for item in node.value)
    head, rest = words[0], words[1:]
    if head == "NONE" and not rest:
        return {"kind": "none"}
    if head == "CMD" and rest:
        return {"kind": "cmd", "command": rest}
    if head == "CMD-SHELL" and len(rest) == 1:
        return {"kind": "cmd", "command": ("/bin/sh", "-c", rest[0])}
    fail(node, TEST_WHAT)


def apply_extras(node: Node, timing: Dict[str, object], test: Optional[Node],
                 ports: Tuple[PortSpec, ...], ctx: Context) -> Dict[str, object]:
    """ServiceSpec fields from ``x-swarmlet`` (health, lb, autoscale, max_per_node).

    ``timing``: what ``healthcheck:`` set explicitly, applied over the LB's defaults."""
    keys = check_keys(node, ("health", "lb", "autoscale", "max_per_node") + EDGE_KEYS, ctx)
    out: Dict[str, object] = {}
    if "health" in keys:
        with ctx.guard():
            out["health"] = _http_health(keys["health"], dataclasses.replace(HealthCheck(), **timing),
                                         ports)
            if test is not None:
                ctx.warn(test.mark, "healthcheck.test ignored: x-swarmlet.health sets an HTTP check",
                         "test")
    if "lb" in keys:
        with ctx.guard():
            out["lb"] = _lb(keys["lb"], ctx)
    if "autoscale" in keys:
        with ctx.guard():
            out["autoscale"] = _autoscale(keys["autoscale"], ctx)
    if "max_per_node" in keys:
        with ctx.guard():
            out["max_per_node"] = as_int(keys["max_per_node"], 1)
    return out


def _http_health(node: Node, base: HealthCheck, ports: Tuple[PortSpec, ...]) -> HealthCheck:
    if isinstance(node.value, str):
        path, port_node = node, None
    else:
        keys = as_map(node)
        if "path" not in keys:
            fail(node, "a health path like /health, or a mapping with 'path'")
        for key in keys:
            if key not in ("path", "port"):
                fail(keys[key], "only 'path' and 'port' under x-swarmlet.health")
        path, port_node = keys["path"], keys.get("port")
    path_text = as_str(path, "an HTTP path starting with /")
    if not path_text.startswith("/"):
        fail(path, "an HTTP path starting with /")
    port = as_int(port_node, 1, 65535) if port_node is not None else None
    if port is None and not ports:
        fail(node, "a 'port' for the HTTP health check (the service publishes no port)")
    return dataclasses.replace(base, kind="http", path=path_text, port=port, command=())


def _lb(node: Node, ctx: Context) -> LBOptions:
    keys = check_keys(node, ("algorithm", "sticky", "connect_timeout", "timeout"), ctx)
    opts: Dict[str, object] = {}
    if "algorithm" in keys:
        opts["algorithm"] = as_choice(keys["algorithm"], ("round_robin", "least_conn"))
    if "sticky" in keys:
        opts["sticky"] = as_bool(keys["sticky"])
    for name in ("connect_timeout", "timeout"):
        if name in keys:
            seconds = as_duration(keys[name])
            if seconds <= 0:
                fail(keys[name], "a duration above zero")
            opts[name] = seconds
    return LBOptions(**opts)


def _autoscale(node: Node, ctx: Context) -> AutoscaleSpec:
    keys = check_keys(node, ("min", "max", "cpu", "down_window"), ctx)
    for name in ("min", "max"):
        if name not in keys:
            fail(node, f"an autoscale mapping with 'min', 'max' and 'cpu' ('{name}' is missing)")
    lo = as_int(keys["min"], 1)
    hi = as_int(keys["max"], 1)
    if hi < lo:
        fail(keys["max"], f"max >= min ({lo})")
    cpu = as_float(keys["cpu"], 1, 100) if "cpu" in keys else 70.0
    window = 0.0
    if "down_window" in keys:
        window = as_duration(keys["down_window"])
        if not DOWN_WINDOW_RANGE[0] <= window <= DOWN_WINDOW_RANGE[1]:
            fail(keys["down_window"], "a duration from 1s to 1h")
    return AutoscaleSpec(min=lo, max=hi, cpu=cpu, down_window=window)
