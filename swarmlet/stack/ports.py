"""``ports:`` in short ("8080:80", "80", "127.0.0.1:8080:80/tcp", ranges) and long syntax.

A published port goes on the load balancer (Swarm's ingress mode), which is
``PortSpec.published``. Long syntax ``mode: host`` binds the port on the node
itself instead, which is ``PortSpec.host_port``. A host IP cannot be honoured
by the load balancer, so it is a warning rather than silently dropped.

Ports are told apart by number *and* protocol: ``5000:5000`` and
``5000:5000/udp`` are two ports, as in Docker. The load balancer and service
discovery speak TCP, so a UDP port published in ingress mode is a warning
(use ``mode: host`` to bind it on each node). ``expose:`` declares ports
that are reached by name only (never published), like a bare ``"80"``.
"""

from __future__ import annotations

import re
from typing import List, Optional, Tuple

from ..shipped.models import PortSpec
from .loader import Node
from .values import Context, as_choice, as_int, as_str, check_keys, fail

_SHORT = re.compile(
    r"(?:(?:(?P<ip>\[[0-9a-fA-F:.]+\]|[0-9.]+):)?(?P<pub>[0-9]+(?:-[0-9]+)?)?:)?"
    r"(?P<target>[0-9]+(?:-[0-9]+)?)(?:/(?P<proto>[a-z]+))?")
SHORT_WHAT = 'a port like "80", "8080:80" or "127.0.0.1:8080:80/tcp"'
PROTOCOLS = ("tcp", "udp")


def parse_ports(node: Node, ctx: Context) -> Tuple[PortSpec, ...]:
    if not node.is_seq:
        fail(node, "a list of ports")
    out: List[PortSpec] = []
    for item in node.value:
        with ctx.guard():
            specs = _long(item, ctx) if item.is_map else _short(item, ctx)
            for spec in specs:
                _check_unique(spec, out, item)
                if spec.published is not None and spec.protocol == "udp":
                    ctx.warn(item.mark, f"UDP port {spec.published} is not load-balanced (the load "
                                        "balancer serves TCP); use mode: host to bind it on each node")
                out.append(spec)
    return tuple(out)


def _check_unique(spec: PortSpec, seen: List[PortSpec], item: Node) -> None:
    for other in seen:
        if other.protocol != spec.protocol:
            continue
        if spec.published is not None and spec.published == other.published:
            fail(item, f"a published port not used twice (port {spec.published}/{spec.protocol})")
        if spec.host_port is not None and spec.host_port == other.host_port:
            fail(item, f"a host port not used twice (port {spec.host_port}/{spec.protocol})")


def parse_expose(node: Node, ports: Tuple[PortSpec, ...], ctx: Context) -> Tuple[PortSpec, ...]:
    """``expose: ["80", "9000-9001/udp"]``: ports reached by name, added where not declared yet."""
    if not node.is_seq:
        fail(node, "a list of ports")
    out = list(ports)
    for item in node.value:
        with ctx.guard():
            v = item.value
            text = str(v) if isinstance(v, int) and not isinstance(v, bool) else v
            if not isinstance(text, str):
                fail(item, 'a port like "80" or "9000-9001/udp"')
            m = re.fullmatch(r"([0-9]+(?:-[0-9]+)?)(?:/(tcp|udp))?", text.strip())
            if not m:
                fail(item, 'a port like "80" or "9000-9001/udp"')
            proto = m.group(2) or "tcp"
            for t in _port_range(m.group(1), item):
                if not any(p.target == t and p.protocol == proto for p in out):
                    out.append(PortSpec(target=t, protocol=proto))
    return tuple(out)


def _port_range(text: str, item: Node) -> List[int]:
    lo, _, hi = text.partition("-")
    first, last = int(lo), int(hi or lo)
    if not (1 <= first <= last <= 65535):
        fail(item, "port numbers from 1 to 65535 (ranges low-high)")
    return list(range(first, last + 1))


def _short(item: Node, ctx: Context) -> List[PortSpec]:
    v = item.value
    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    if not isinstance(v, str):
        fail(item, SHORT_WHAT)
    m = _SHORT.fullmatch(v.strip())
    if not m:
        fail(item, SHORT_WHAT)
    proto = m.group("proto") or "tcp"
    if proto not in PROTOCOLS:
        fail(item, "protocol tcp or udp")
    if m.group("ip"):
        ctx.warn(item.mark, f"host IP {m.group('ip')} in port {v!r} ignored: "
                            "published ports are served by the load balancer on every node")
    targets = _port_range(m.group("target"), item)
    if not m.group("pub"):
        return [PortSpec(target=t, protocol=proto) for t in targets]
    published = _port_range(m.group("pub"), item)
    if len(published) != len(targets):
        fail(item, "published and target port ranges of the same length")
    return [PortSpec(target=t, published=p, protocol=proto) for t, p in zip(targets, published)]


def _long(item: Node, ctx: Context) -> List[PortSpec]:
    keys = check_keys(item, ("target", "published", "protocol", "mode", "host_ip"), ctx,
                      ignored={"name": "ports are not named in swarmlet",
                               "app_protocol": "the load balancer speaks HTTP"})
    if "target" not in keys:
        fail(item, "a port mapping with 'target'")
    target = as_int(keys["target"], 1, 65535)
    published: Optional[int] = None
    if "published" in keys:
        pub = keys["published"]
        if isinstance(pub.value, str) and pub.value.strip().isdigit():
            published = int(pub.value.strip())
            if not 1 <= published <= 65535:
                fail(pub, "an integer from 1 to 65535")
        else:
            published = as_int(pub, 1, 65535)
    proto = as_choice(keys["protocol"], PROTOCOLS) if "protocol" in keys else "tcp"
    mode = as_choice(keys["mode"], ("ingress", "host")) if "mode" in keys else "ingress"
    if "host_ip" in keys:
        ctx.warn(keys["host_ip"].mark, f"host_ip {as_str(keys['host_ip'])!r} ignored: "
                 "published ports are served by the load balancer on every node", "host_ip")
    if mode == "host":
        return [PortSpec(target=target, host_port=published, protocol=proto)]
    return [PortSpec(target=target, published=published, protocol=proto)]
