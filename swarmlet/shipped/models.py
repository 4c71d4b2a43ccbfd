"""The shared vocabulary: frozen specs (desired state) and observed status.

Specs are frozen dataclasses so a revision can never be edited in place. Task
states are ordered (as in swarmkit's ``TaskState``): a task's observed state
only moves forward, see ``TaskState.advance``.

This module is shipped to agents, so it stays Python 3.9 compatible (``Optional``
rather than ``X | None`` in annotations that are evaluated) and imports nothing
outside the standard library. ``to_wire``/``from_wire`` turn any of these into
plain msgpack/JSON-friendly data and back, validating types on the way in.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, Type, TypeVar

from .exceptions import ProtocolError

T = TypeVar("T")

# Labels a stack puts on its services (and their tasks): the stack's name and
# the service's short name in the file (the full name is ``<stack>_<short>``).
STACK_LABEL = "io.swarmlet.stack"
STACK_SERVICE_LABEL = "io.swarmlet.stack.service"


class TaskState(enum.IntEnum):
    """Observed task states, ordered; a transition never goes backwards."""

    NEW = 0
    PENDING = 1      # not placed yet (the scheduler explains why)
    ASSIGNED = 2     # placed on a node, the node may not know yet
    PREPARING = 3    # pulling the image, creating volumes
    STARTING = 4     # container created and starting
    RUNNING = 5
    FAILED = 6       # terminal, with a reason
    STOPPED = 7      # terminal, on purpose

    @property
    def terminal(self) -> bool:
        return self >= TaskState.FAILED

    def advance(self, new: "TaskState") -> "TaskState":
        """The state after observing ``new``: never earlier than ``self``."""
        return new if new >= self else self


class Health(str, enum.Enum):
    NONE = "none"          # no health check configured
    STARTING = "starting"  # within start_period / not enough checks yet
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


class NodeStatus(str, enum.Enum):
    READY = "ready"
    SUSPECT = "suspect"
    DOWN = "down"
    LEFT = "left"
    DRAINING = "draining"


@dataclass(frozen=True)
class PortSpec:
    target: int
    published: Optional[int] = None   # load-balancer port (ingress), if any
    host_port: Optional[int] = None   # fixed host port; None = dynamic
    protocol: str = "tcp"


@dataclass(frozen=True)
class HealthCheck:
    """``kind``: "http" (GET path), "cmd" (exec in container), "image" (the
    image's own HEALTHCHECK) or "none". Durations are seconds."""

    kind: str = "none"
    path: str = "/"
    port: Optional[int] = None        # container port for http; default first port
    command: Tuple[str, ...] = ()
    interval: float = 2.0
    timeout: float = 1.0
    retries: int = 3
    start_period: float = 0.0


@dataclass(frozen=True)
class Resources:
    cpus: Optional[float] = None      # CPUs, e.g. 0.5
    memory: Optional[int] = None      # bytes


@dataclass(frozen=True)
class RestartPolicy:
    condition: str = "any"            # any | on-failure | none
    max_attempts: Optional[int] = None
    delay: float = 0.5                # first backoff step, doubled per crash


@dataclass(frozen=True)
class VolumeMount:
    source: str                       # volume name (or host path for binds; "" for tmpfs)
    target: str
    kind: str = "volume"              # volume | bind (binds only when asked for) | tmpfs
    read_only: bool = False
    size: Optional[int] = None        # tmpfs: bytes (None: Docker's default, half the RAM)
    mode: Optional[int] = None        # tmpfs: file mode of the mount point, e.g. 0o1777


@dataclass(frozen=True)
class Ulimit:
    name: str                         # nofile, nproc, core, …
    soft: int
    hard: int


@dataclass(frozen=True)
class LogConfig:
    driver: str                       # json-file, local, journald, syslog, …
    options: Dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ContainerConfig:
    """Settings of each replica's container, applied by Docker as given: the keys
    ``docker stack deploy`` puts in a service's ContainerSpec. Empty values mean
    Docker's (or the image's) defaults. ``labels`` are container labels (a
    service's ``labels:``), kept apart from ``ServiceSpec.labels`` (``deploy.labels``)."""

    labels: Dict[str, str] = field(default_factory=dict)
    user: Optional[str] = None
    working_dir: Optional[str] = None
    hostname: Optional[str] = None    # may use {{.Service.Name}}, {{.Task.Slot}}, {{.Node.Hostname}}…
    cap_add: Tuple[str, ...] = ()
    cap_drop: Tuple[str, ...] = ()
    sysctls: Dict[str, str] = field(default_factory=dict)
    ulimits: Tuple[Ulimit, ...] = ()
    extra_hosts: Tuple[str, ...] = ()          # "host:ip", in file order
    dns: Tuple[str, ...] = ()
    dns_search: Tuple[str, ...] = ()
    dns_options: Tuple[str, ...] = ()
    stop_grace_period: Optional[float] = None  # seconds; None: the agent's stop_timeout
    stop_signal: Optional[str] = None
    init: Optional[bool] = None
    read_only: bool = False
    tty: bool = False
    stdin_open: bool = False
    logging: Optional[LogConfig] = None


@dataclass(frozen=True)
class UpdateConfig:
    parallelism: int = 1
    delay: float = 0.0
    failure_action: str = "rollback"  # rollback | pause | continue
    monitor: float = 5.0
    max_failure_ratio: float = 0.0
    order: str = "start-first"        # start-first | stop-first


@dataclass(frozen=True)
class LBOptions:
    """Load-balancer options for a service's published ports (``x-swarmlet.lb``)."""

    algorithm: str = "round_robin"    # round_robin | least_conn
    sticky: bool = False              # sticky sessions by cookie
    connect_timeout: float = 5.0      # seconds to connect to a replica
    timeout: float = 60.0             # seconds to wait for a replica's answer


@dataclass(frozen=True)
class EdgeSpec:
    """Routing by host name and path on the shared edge ports (80 and 443 by default),
    from ``x-swarmlet`` (``hosts``, ``path``, ``tls``...) or ``swarmlet run --host``.

    ``tls``: ``off`` (plain HTTP only), ``acme`` (a certificate per host name from the
    cluster's ACME CA, renewed on its own) or ``manual`` (the stored certificate
    ``cert``, uploaded by the user; its key is kept sealed by the master). For TLS
    hosts plain HTTP is answered with a redirect to HTTPS unless ``redirect`` is off;
    ``hsts`` > 0 adds ``Strict-Transport-Security: max-age=<hsts>`` to HTTPS answers."""

    hosts: Tuple[str, ...] = ()       # lower-case DNS names; "*.example.com" for manual TLS
    path: str = "/"                   # longest prefix wins, on segment boundaries
    port: Optional[int] = None        # container port routed to (None: the first TCP port)
    tls: str = "off"                  # off | acme | manual
    cert: str = ""                    # manual: the stored certificate's name
    redirect: bool = True             # TLS hosts: HTTP -> HTTPS (308)
    hsts: int = 0                     # max-age seconds; 0: no HSTS header


@dataclass(frozen=True)
class AutoscaleSpec:
    """Scale replicas between ``min`` and ``max`` to hold average CPU near ``cpu`` %.

    ``down_window``: seconds the recommendations must all stay below the current count
    before scaling down, and at most the wait after a change before one (the HPA's
    scale-down stabilization window, per service as there); 0 takes the master's
    (``AutoscalePolicy``: a 60 s window and a 60 s cooldown)."""

    min: int = 1
    max: int = 1
    cpu: float = 70.0
    down_window: float = 0.0


DOWN_WINDOW_RANGE = (1, 3600)       # seconds a service's own down_window may be (CLI, stacks, master)


@dataclass(frozen=True)
class SecretRef:
    """A secret or config a service mounts, by stored name and version (never its value).

    ``target``: a secret's file name under ``/run/secrets`` (or an absolute path);
    a config's absolute path. ``version`` 0 means "the newest", and is resolved by
    the master when the spec is stored, so a stored spec pins the version it runs
    (a rotation is a new revision; a rollback restores the older version)."""

    source: str
    target: str
    version: int = 0
    uid: str = "0"
    gid: str = "0"
    mode: int = 0o444


@dataclass(frozen=True)
class SecretValue:
    """A value sent to the one node that runs a task using it (inside its assignment, over
    mutual TLS). ``kind``: secret | config; ``data``: base64. Never persisted by the agent."""

    kind: str
    name: str
    version: int
    data: str = field(default="", repr=False)


@dataclass(frozen=True)
class ServiceSpec:
    """What the user asked for: one revision of one service."""

    name: str
    image: str
    replicas: int = 1
    mode: str = "replicated"          # replicated | global
    command: Optional[Tuple[str, ...]] = None
    entrypoint: Optional[Tuple[str, ...]] = None
    env: Dict[str, str] = field(default_factory=dict, repr=False)   # secrets: never in a log line
    ports: Tuple[PortSpec, ...] = ()
    volumes: Tuple[VolumeMount, ...] = ()
    health: HealthCheck = HealthCheck()
    limits: Resources = Resources()
    reservations: Resources = Resources()
    restart: RestartPolicy = RestartPolicy()
    constraints: Tuple[str, ...] = ()  # e.g. "node.labels.zone==a"
    max_per_node: Optional[int] = None
    labels: Dict[str, str] = field(default_factory=dict)
    update: UpdateConfig = UpdateConfig()
    rollback: UpdateConfig = UpdateConfig(failure_action="pause")
    lb: LBOptions = LBOptions()
    autoscale: Optional[AutoscaleSpec] = None
    placement: str = "spread"         # spread | binpack (master scheduler strategy)
    secrets: Tuple[SecretRef, ...] = ()   # mounted at /run/secrets/<target>
    configs: Tuple[SecretRef, ...] = ()   # mounted at their target
    edge: EdgeSpec = EdgeSpec()       # host/path routing and TLS on the edge ports
    preferences: Tuple[str, ...] = ()  # spread over these, e.g. "node.labels.zone" (Swarm's)
    endpoint_mode: str = "vip"        # vip | dnsrr (served through the VIP proxy as well)
    container: ContainerConfig = ContainerConfig()


@dataclass(frozen=True)
class TaskSpec:
    """One replica as an agent sees it: enough to create its container."""

    task_id: str
    service: str
    revision: int
    slot: int
    image: str
    command: Optional[Tuple[str, ...]] = None
    entrypoint: Optional[Tuple[str, ...]] = None
    env: Dict[str, str] = field(default_factory=dict, repr=False)   # secrets: never in a log line
    ports: Tuple[PortSpec, ...] = ()
    volumes: Tuple[VolumeMount, ...] = ()
    health: HealthCheck = HealthCheck()
    limits: Resources = Resources()
    restart: RestartPolicy = RestartPolicy()
    labels: Dict[str, str] = field(default_factory=dict)   # the container's labels
    secrets: Tuple[SecretRef, ...] = ()
    configs: Tuple[SecretRef, ...] = ()
    container: ContainerConfig = ContainerConfig()         # its labels are in ``labels``


@dataclass(frozen=True)
class RouteBackend:
    task_id: str
    node: str
    host: str
    port: int


@dataclass(frozen=True)
class Route:
    """One published port: the service behind it and its serving replicas (see ``routes``)."""

    service: str
    published: Optional[int]             # load-balanced port, None: reachable by name only
    target: int
    health_path: Optional[str] = "/"     # None: TCP connect checks
    lb: LBOptions = LBOptions()
    backends: Tuple[RouteBackend, ...] = ()
    vip: Optional[str] = None            # the service's virtual IP (see ``discovery``)
    hosts: Tuple[str, ...] = ()          # served on the edge ports by Host and ``path``
    path: str = "/"
    tls: str = "off"                     # off | acme | manual (see ``EdgeSpec``)
    redirect: bool = True
    hsts: int = 0
    stack: Optional[str] = None          # the stack the service belongs to, if any
    alias: Optional[str] = None          # its short name, known inside that stack only


@dataclass(frozen=True)
class RouteChange:
    """Backends of one route that came or went (``routediff``); ``key`` names the route."""

    key: str
    add: Tuple[RouteBackend, ...] = ()
    remove: Tuple[str, ...] = ()         # task ids


@dataclass(frozen=True)
class RoutesUpdate:
    """The routing table on its own channel (``PUT /v1/routes``), versioned apart from tasks.

    ``base == 0``: ``routes`` is the whole table. Otherwise a delta against the
    agent's table at version ``base`` of the same ``epoch`` (one master run):
    ``routes`` are routes new or changed apart from their backends (whole),
    ``removed`` route keys are gone, ``changes`` add and remove backends.
    ``draining`` is always whole. A health flip of one replica is one small
    ``RouteChange`` to each node, not every node's full assignment."""

    node: str
    version: int
    epoch: int = 0
    base: int = 0
    routes: Tuple[Route, ...] = ()
    removed: Tuple[str, ...] = ()
    changes: Tuple[RouteChange, ...] = ()
    draining: Tuple[str, ...] = ()
    term: int = 0


@dataclass(frozen=True)
class EdgeCert:
    """A certificate the edge serves: ``hosts`` are the SNI names it is chosen for."""

    name: str                            # an ACME host name, or a manual certificate's name
    hosts: Tuple[str, ...]
    cert: str                            # PEM: the leaf first, then its chain
    key: str = field(default="", repr=False)   # PEM private key: never in a log line
    not_after: float = 0.0               # UNIX time
    fingerprint: str = ""                # SHA-256 of the leaf (hex)


@dataclass(frozen=True)
class EdgeUpdate:
    """The edge's settings and certificates (``PUT /v1/edge``), versioned like routes:
    ordered by (term, epoch, version); the whole set every time (a handful of certificates)."""

    version: int
    epoch: int = 0
    term: int = 0
    http_port: int = 80
    https_port: int = 443
    default_service: str = ""            # answers unknown hosts (empty: 404)
    certs: Tuple[EdgeCert, ...] = ()


@dataclass(frozen=True)
class ChallengesUpdate:
    """ACME http-01 answers every ingress gives (``PUT /v1/challenges``): token ->
    key authorization. Small and short-lived, kept in memory only."""

    version: int
    epoch: int = 0
    term: int = 0
    tokens: Dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Assignment:
    """A node's full desired task set. Versioned: older never overwrites newer.

    ``routes`` is the cluster's routing table, so the node's ingress proxies
    keep routing while the master is down; ``draining`` names tasks leaving
    the routes on purpose (their in-flight requests may finish). ``term`` is the
    sending master's leader term (0: a single master): agents order assignments
    by (term, version) and refuse one of an older term, so a deposed HA leader
    can never move a task."""

    node: str
    version: int
    tasks: Tuple[TaskSpec, ...] = ()
    routes: Tuple[Route, ...] = ()
    draining: Tuple[str, ...] = ()
    term: int = 0
    # The values of the secrets and configs this node's tasks mount (only those): the
    # agent keeps them in memory (tmpfs) and stores the assignment without them.
    secrets: Tuple[SecretValue, ...] = ()


@dataclass(frozen=True)
class TaskStatus:
    task_id: str
    service: str
    revision: int
    state: TaskState
    health: Health = Health.NONE
    reason: str = ""
    container_id: Optional[str] = None
    host_ports: Dict[str, int] = field(default_factory=dict)  # "8080/tcp" -> 32768
    restarts: int = 0
    updated_at: float = 0.0


@dataclass(frozen=True)
class NodeInfo:
    """A node as the cluster sees it (gossip metadata plus master-side status)."""

    name: str
    address: str
    api_port: int = 7443
    status: NodeStatus = NodeStatus.READY
    labels: Dict[str, str] = field(default_factory=dict)
    version: str = ""
    cpus: float = 1.0
    cpu_percent: float = 0.0
    mem_used: int = 0
    mem_total: int = 0
    load1: float = 0.0
    tasks: int = 0


# --- wire codec ---------------------------------------------------------------

def to_wire(obj: Any) -> Any:
    """Plain data (dicts, lists, str, int, float, bool, None) for msgpack/JSON."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_wire(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (list, tuple)):
        return [to_wire(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_wire(v) for k, v in obj.items()}
    return obj


def from_wire(cls: Type[T], data: Any, where: str = "") -> T:
    """Build ``cls`` from plain data, checking every field's type.

    Unknown keys are ignored (forward compatibility); missing keys take their
    defaults; a wrong type raises ``ProtocolError`` naming the field.
    """
    return _decoder(cls)(data, where or cls.__name__)


# The decoder of each type is made once (``_compile``), and the path to a field (``where``) is
# a chain of (parent, suffix, kind) made into text only for an error. Resolving type hints and
# formatting every field's path for every value was most of a master's time in decoding node
# reports (bench/scale: 10,000 tasks).
Where = Any         # a str, or (parent, suffix, kind): kind 0 text, 1 "[index]", 2 "[key!r]"
Decoder = Callable[[Any, Where], Any]
_DECODERS: Dict[Any, Decoder] = {}


def _path(where: Where) -> str:
    parts: List[str] = []
    while isinstance(where, tuple):
        where, suffix, kind = where
        parts.append(suffix if kind == 0 else f"[{suffix}]" if kind == 1 else f"[{suffix!r}]")
    return str(where) + "".join(reversed(parts))


def _decoder(tp: Any) -> Decoder:
    d = _DECODERS.get(tp)
    if d is None:
        d = _DECODERS[tp] = _compile(tp)
    return d


def _decode(tp: Any, data: Any, where: str) -> Any:
    return _decoder(tp)(data, where)


def _compile(tp: Any) -> Decoder:   # noqa: C901 - one branch per kind of type, as before
    origin = typing.get_origin(tp)
    if tp is Any:
        return lambda data, where: data
    if origin is typing.Union:
        args = typing.get_args(tp)
        nullable = type(None) in args
        inner = [a for a in args if a is not type(None)][0]

        def union(data: Any, where: Where) -> Any:
            if data is None and nullable:
                return None
            return _decoder(inner)(data, where)
        return union
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        plan = [(f.name, hints[f.name], "." + f.name) for f in dataclasses.fields(tp)]

        def record(data: Any, where: Where) -> Any:
            if not isinstance(data, dict):
                raise ProtocolError(f"{_path(where)}: expected a mapping, got {type(data).__name__}")
            kwargs = {}
            for name, hint, suffix in plan:
                if name in data:
                    kwargs[name] = _decoder(hint)(data[name], (where, suffix, 0))
            try:
                return tp(**kwargs)
            except TypeError as exc:
                raise ProtocolError(f"{_path(where)}: {exc}") from exc
        return record
    if origin is tuple:
        (item,) = typing.get_args(tp)[:1]

        def tuple_of(data: Any, where: Where) -> Any:
            if not isinstance(data, (list, tuple)):
                raise ProtocolError(f"{_path(where)}: expected a list, got {type(data).__name__}")
            d = _decoder(item)
            return tuple([d(v, (where, i, 1)) for i, v in enumerate(data)])
        return tuple_of
    if origin is dict:
        kt, vt = typing.get_args(tp)

        def dict_of(data: Any, where: Where) -> Any:
            if not isinstance(data, dict):
                raise ProtocolError(f"{_path(where)}: expected a mapping, got {type(data).__name__}")
            dk, dv = _decoder(kt), _decoder(vt)
            return {dk(k, where): dv(v, (where, k, 2)) for k, v in data.items()}
        return dict_of
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        def member(data: Any, where: Where) -> Any:
            try:
                return tp(data)
            except ValueError as exc:
                raise ProtocolError(f"{_path(where)}: {data!r} is not a valid {tp.__name__}") from exc
        return member
    name = getattr(tp, "__name__", tp)

    def wrong(data: Any, where: Where) -> Any:
        raise ProtocolError(f"{_path(where)}: expected {name}, got {type(data).__name__}")
    if tp is float:
        def real(data: Any, where: Where) -> Any:
            if isinstance(data, (int, float)) and not isinstance(data, bool):
                return float(data)
            return wrong(data, where)
        return real
    if tp is int:
        def integer(data: Any, where: Where) -> Any:
            if isinstance(data, int) and not isinstance(data, bool):
                return data
            return wrong(data, where)
        return integer
    if tp in (str, bool, bytes):
        def exact(data: Any, where: Where) -> Any:
            if isinstance(data, tp):
                return data
            return wrong(data, where)
        return exact
    return lambda data, where: data
