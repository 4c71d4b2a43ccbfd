"""The one judge of a service spec: what every part of swarmlet accepts as a ``ServiceSpec``.

The stack loader (``stack/service.py``, which reports ``file:line:col``), the
CLI (``run``) and the master (every write: ``POST /v1/services``, ``PATCH``,
stack apply) call these same functions, so a spec is judged the same wherever
it is made: a service named ``Web`` is refused by the loader with its
position, by ``run`` before any request, and by the master with a 400.

- ``SERVICE_NAME``: lower-case letters, digits, ``_ . -``, at most 63,
  starting with a letter or digit (names become DNS-like aliases and
  container-name parts, so case must not matter);
- ``constraints``: the placement grammar (``constraints.parse``);
- ``problems(spec)``: every problem, each with the field it is about;
  ``validate_spec(spec)`` raises ``UsageError`` naming the first;
- ``port_clashes(specs, current, removing)``: the cross-service check, a
  published port (number *and* protocol: 53/tcp and 53/udp are two ports)
  that another service already holds. The master runs it on every write
  (one service, or a whole stack at once); ``check_ports`` raises
  ``APIError`` 409 with one line: "port 18080/tcp is published by service
  'hello'". ``deploy`` runs it first to point at the stack file's line.
- ``edge_problems(spec)`` (part of ``problems``): the ``edge`` of a service
  (host names, path prefix, TLS mode, the port it routes to), by the rules of
  ``hostnames.py``; ``route_clashes`` / ``check_routes`` are the cross-service
  check for it: one host and path prefix belongs to one service (409: "host
  shop.example.com path /api is routed to service 'shop'").

Pure, standard library only (shipped, so an agent could judge a spec too).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from . import secretrefs
from .constraints import parse as parse_constraint
from .hostnames import MAX_HOSTS, host_problem, path_problem
from .exceptions import APIError, UsageError
from .models import DOWN_WINDOW_RANGE, AutoscaleSpec, PortSpec, ServiceSpec

SERVICE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
SERVICE_NAME_WHAT = ("a service name of lower-case letters, digits, '_', '.' or '-' "
                     "(at most 63, starting with a letter or digit)")
MODES = ("replicated", "global")
TLS_MODES = ("off", "acme", "manual")
CERT_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
ENDPOINT_MODES = ("vip", "dnsrr")
PREFERENCE = re.compile(r"(node|engine)\.labels\.[A-Za-z0-9_.\-/]+|node\.(id|hostname)")
PLACEMENTS = ("spread", "binpack")     # the scheduler's strategies (a unit test keeps them equal)


@dataclass(frozen=True)
class Problem:
    field: str          # the ServiceSpec field, e.g. "name", "constraints"
    message: str        # "expected …, got …"

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def name_problem(name: str) -> Optional[str]:
    """Why ``name`` is not a service name, or None."""
    if isinstance(name, str) and SERVICE_NAME.fullmatch(name):
        return None
    return f"expected {SERVICE_NAME_WHAT}, got {name!r}"


def constraint_problem(expr: str) -> Optional[str]:
    try:
        parse_constraint(expr)
    except UsageError as exc:
        return str(exc)
    return None


def problems(spec: ServiceSpec) -> List[Problem]:
    """Every reason the master would refuse ``spec`` (empty: valid)."""
    out: List[Problem] = []
    why = name_problem(spec.name)
    if why:
        out.append(Problem("name", why))
    if not spec.image:
        out.append(Problem("image", "expected an image, got none"))
    if spec.replicas < 0:
        out.append(Problem("replicas", f"expected 0 or more replicas, got {spec.replicas}"))
    if spec.mode not in MODES:
        out.append(Problem("mode", f"expected one of {', '.join(MODES)}, got {spec.mode!r}"))
    if spec.placement not in PLACEMENTS:
        out.append(Problem("placement",
                           f"expected one of {', '.join(PLACEMENTS)}, got {spec.placement!r}"))
    if spec.max_per_node is not None and spec.max_per_node < 1:
        out.append(Problem("max_per_node", f"expected at least 1, got {spec.max_per_node}"))
    if spec.autoscale is not None:
        out += autoscale_problems(spec.autoscale)
    for expr in spec.constraints:
        why = constraint_problem(expr)
        if why:
            out.append(Problem("constraints", why))
    seen = set()
    for port in spec.ports:
        key = _held(port)
        if key is not None and key[:2] in seen:
            out.append(Problem("ports", f"expected each published port once, got "
                                        f"{key[0]}/{key[1]} twice"))
        elif key is not None:
            seen.add(key[:2])
    if spec.endpoint_mode not in ENDPOINT_MODES:
        out.append(Problem("endpoint_mode", f"expected one of {', '.join(ENDPOINT_MODES)}, "
                                            f"got {spec.endpoint_mode!r}"))
    for pref in spec.preferences:
        if not PREFERENCE.fullmatch(pref):
            out.append(Problem("preferences", f"expected a spread over node.labels.KEY, got {pref!r}"))
    for field, message in secretrefs.problems(spec):
        out.append(Problem(field, message))
    out += edge_problems(spec)
    return out


def autoscale_problems(a: AutoscaleSpec) -> List[Problem]:
    """What is wrong with an autoscale setting (the CLI and stack files check the same)."""
    out: List[Problem] = []
    if a.min < 0 or a.max < max(a.min, 1):
        out.append(Problem("autoscale", f"expected 0 <= min <= max and max >= 1, got "
                                        f"min {a.min}, max {a.max}"))
    if not 0 < a.cpu <= 1000:
        out.append(Problem("autoscale.cpu", f"expected a CPU target from 1 to 1000 %, got {a.cpu:g}"))
    lo, hi = DOWN_WINDOW_RANGE
    if a.down_window and not lo <= a.down_window <= hi:
        out.append(Problem("autoscale.down_window", f"expected {lo:g} to {hi:g} seconds (or 0: "
                                                    f"the master's), got {a.down_window:g}"))
    return out


def edge_port(spec: ServiceSpec) -> Optional[int]:
    """The container port the edge routes ``spec``'s hosts to (None: it has none)."""
    tcp = [p.target for p in spec.ports if p.protocol == "tcp"]
    if spec.edge.port is not None:
        return spec.edge.port if spec.edge.port in tcp else None
    return tcp[0] if tcp else None


def edge_problems(spec: ServiceSpec) -> List[Problem]:
    """What is wrong with ``spec.edge`` (empty: fine, or no edge routing at all)."""
    e = spec.edge
    out: List[Problem] = []
    if not e.hosts:
        if e.path != "/" or e.tls != "off" or e.cert or e.hsts or e.port is not None:
            out.append(Problem("edge", "expected 'hosts' for a path, tls, hsts or port on the "
                                       "edge (routing is by host name)"))
        return out
    if len(e.hosts) > MAX_HOSTS:
        out.append(Problem("edge.hosts", f"expected at most {MAX_HOSTS} hosts, got {len(e.hosts)}"))
    for host in e.hosts:
        why = host_problem(host, wildcard=e.tls != "acme")
        if why:
            out.append(Problem("edge.hosts", why))
    for host in sorted({h for h in e.hosts if e.hosts.count(h) > 1}):
        out.append(Problem("edge.hosts", f"expected each host once, got {host!r} twice"))
    why = path_problem(e.path)
    if why:
        out.append(Problem("edge.path", why))
    if e.tls not in TLS_MODES:
        out.append(Problem("edge.tls", f"expected one of {', '.join(TLS_MODES)}, got {e.tls!r}"))
    if e.tls == "manual" and not CERT_NAME.fullmatch(e.cert or ""):
        out.append(Problem("edge.cert", f"expected the name of a stored certificate, got "
                                        f"{e.cert!r}"))
    if e.tls != "manual" and e.cert:
        out.append(Problem("edge.cert", "a certificate name is for tls: manual only"))
    if e.hsts < 0:
        out.append(Problem("edge.hsts", f"expected a max-age of 0 or more seconds, got {e.hsts}"))
    if e.hsts and e.tls == "off":
        out.append(Problem("edge.hsts", "HSTS needs TLS (tls: acme or a certificate)"))
    if edge_port(spec) is None:
        if e.port is not None:
            out.append(Problem("edge.port", f"expected one of the service's TCP container ports, "
                                            f"got {e.port}"))
        else:
            out.append(Problem("edge.port", "hosts need a container port to route to: add "
                                            "ports: [\"8080\"] (or x-swarmlet.port)"))
    return out


def validate_spec(spec: ServiceSpec) -> None:
    """Raise ``UsageError`` (HTTP 400 at the master) for the first problem of ``spec``."""
    found = problems(spec)
    if found:
        raise UsageError(f"service {spec.name!r}: {found[0]}")


# --- ports held across services -------------------------------------------------

# (number, protocol, how): "published" ports are served by the load balancer on every node
# and on the master; "host" ports are bound by the replica on whichever node runs it.
Held = Tuple[int, str, str]


def _held(port: PortSpec) -> Optional[Held]:
    if port.host_port is not None:
        return (port.host_port, port.protocol, "host")
    if port.published is not None:
        return (port.published, port.protocol, "published")
    return None


@dataclass(frozen=True)
class Clash:
    service: str        # the service being written
    index: int          # which of its ``ports``
    port: int
    protocol: str
    holder: str         # the service that holds the port
    holder_how: str     # "published" or "host"

    @property
    def message(self) -> str:
        if self.holder_how == "published":
            return f"port {self.port}/{self.protocol} is published by service {self.holder!r}"
        return (f"port {self.port}/{self.protocol} is bound on its nodes by service "
                f"{self.holder!r} (host mode)")

    def __str__(self) -> str:
        return self.message


def _clash(mine: Held, theirs: Held) -> bool:
    """Two host-mode ports can share a number (the scheduler puts them on different nodes);
    a published port is taken on every node, so it clashes with any use of that port."""
    return mine[:2] == theirs[:2] and "published" in (mine[2], theirs[2])


def port_clashes(specs: Sequence[ServiceSpec], current: Mapping[str, ServiceSpec],
                 removing: Iterable[str] = ()) -> List[Clash]:
    """Ports of ``specs`` (written together, e.g. one stack) that another service holds.

    ``current``: every service as stored now; a service in ``specs`` replaces its stored
    self, and ``removing`` ones are gone. A port a service already holds is never refused
    to it again (a clash stored before this check existed must not block scaling it).
    """
    gone = set(removing) | {s.name for s in specs}
    holders: List[Tuple[Held, str]] = [(h, name) for name, spec in sorted(current.items())
                                       if name not in gone
                                       for h in (_held(p) for p in spec.ports) if h is not None]
    out: List[Clash] = []
    for spec in specs:
        before = current.get(spec.name)
        had = {_held(p) for p in before.ports} if before is not None else set()
        mine = [(i, h) for i, h in ((i, _held(p)) for i, p in enumerate(spec.ports)) if h is not None]
        for i, h in mine:
            for theirs, holder in holders:
                if _clash(h, theirs) and not (h in had and _holds(current.get(holder), theirs)):
                    out.append(Clash(spec.name, i, h[0], h[1], holder, theirs[2]))
                    break
        holders += [(h, spec.name) for _, h in mine]
    return out


def _holds(spec: Optional[ServiceSpec], held: Held) -> bool:
    """Whether the stored ``spec`` holds ``held`` (so the clash predates this write)."""
    return spec is not None and held in {_held(p) for p in spec.ports}


@dataclass(frozen=True)
class RouteClash:
    service: str        # the service being written
    host: str
    path: str
    holder: str         # the service that holds host + path

    @property
    def message(self) -> str:
        return f"host {self.host} path {self.path} is routed to service {self.holder!r}"

    def __str__(self) -> str:
        return self.message


def route_clashes(specs: Sequence[ServiceSpec], current: Mapping[str, ServiceSpec],
                  removing: Iterable[str] = ()) -> List[RouteClash]:
    """Hosts + path prefixes of ``specs`` that another service routes already (the same
    rules as ``port_clashes``: ``specs`` replace their stored selves, ``removing`` are gone)."""
    gone = set(removing) | {s.name for s in specs}
    held: Dict[Tuple[str, str], str] = {}
    for name, spec in sorted(current.items()):
        if name not in gone:
            for host in spec.edge.hosts:
                held.setdefault((host, spec.edge.path), name)
    out: List[RouteClash] = []
    for spec in specs:
        for host in spec.edge.hosts:
            key = (host, spec.edge.path)
            holder = held.get(key)
            if holder is not None and holder != spec.name:
                out.append(RouteClash(spec.name, host, spec.edge.path, holder))
            else:
                held[key] = spec.name
    return out


def check_routes(specs: Sequence[ServiceSpec], current: Mapping[str, ServiceSpec],
                 removing: Iterable[str] = ()) -> None:
    """Raise ``APIError`` (HTTP 409) naming the first clash of ``route_clashes``."""
    found = route_clashes(specs, current, removing)
    if found:
        raise APIError(found[0].message, status=409)


def check_ports(specs: Sequence[ServiceSpec], current: Mapping[str, ServiceSpec],
                removing: Iterable[str] = ()) -> None:
    """Raise ``APIError`` (HTTP 409) naming the first clash of ``port_clashes``."""
    found = port_clashes(specs, current, removing)
    if found:
        raise APIError(found[0].message, status=409)
