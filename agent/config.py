"""The agent's config file (``/etc/swarmlet/agent.json``, written by ``swarmlet join``).

Owns parsing and validating it into a frozen ``AgentConfig``. The keys are
the contract in docs/internal-apis.md; a few optional tuning keys (binds,
timings, docker URL) have defaults so tests and the lab can override them.
Errors are ``ConfigError`` naming the file and the key.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from swarmlet.shipped.exceptions import ConfigError


@dataclass(frozen=True)
class AgentConfig:
    name: str
    address: str
    api_port: int = 7443
    gossip_port: int = 7946
    cluster_id: str = ""
    labels: Dict[str, str] = field(default_factory=dict)
    seeds: Tuple[str, ...] = ()
    state_dir: str = "/var/lib/swarmlet"
    cert: str = "/etc/swarmlet/agent.crt"
    key: str = "/etc/swarmlet/agent.key"
    ca: str = "/etc/swarmlet/ca.crt"
    gossip_keys: str = "/etc/swarmlet/gossip.keys"
    secrets_dir: str = "/run/swarmlet/secrets"   # tmpfs: secret and config values (secretfiles)
    # Optional tuning, not written by join.
    api_bind: str = "0.0.0.0"
    gossip_bind: str = "0.0.0.0"
    gossip: bool = True                 # false: run without the mesh (tests, single node)
    ingress: bool = True                # run a proxy for every published port (routes)
    ingress_bind: str = "0.0.0.0"
    ingress_process: bool = True        # the LBs in a worker process (false: on the agent's loop)
    ingress_max_connections: int = 4096  # client connections per published port
    ingress_workers: int = 0            # LB worker processes sharing the ports (0: one per core)
    edge_handshake_timeout: float = 10.0   # a TLS handshake on the edge must finish in this
    edge_max_handshakes: int = 256      # TLS handshakes in progress per worker; more wait
    edge_max_handshakes_per_source: int = 64   # of those, from one IPv4 address or IPv6 /64
    discovery: bool = True              # services reachable by name via VIPs (needs root, `ip`)
    docker_url: Optional[str] = None    # None: DOCKER_HOST or the local socket
    resync_interval: float = 10.0       # full re-list even without Docker events
    stats_interval: float = 5.0         # utilization sampling and gossip meta refresh
    max_backoff: float = 30.0           # cap of the crash-restart backoff
    backoff_reset: float = 10.0         # a run this long resets the backoff
    stop_timeout: int = 10              # seconds Docker waits before SIGKILL
    drain_delay: float = 2.0            # an unassigned task keeps running this long (LB drain)
    lag_probe_interval: float = 0.1     # loop-lag probe period (finer costs idle CPU)

    def seed_addrs(self) -> List[Tuple[str, int]]:
        out = []
        for s in self.seeds:
            host, _, port = s.rpartition(":")
            out.append((host or s, int(port) if port.isdigit() else 7946))
        return out


_STR = ("name", "address", "cluster_id", "state_dir", "cert", "key", "ca", "gossip_keys",
        "api_bind", "gossip_bind", "ingress_bind", "secrets_dir")
_INT = ("api_port", "gossip_port", "stop_timeout", "ingress_max_connections", "ingress_workers",
        "edge_max_handshakes", "edge_max_handshakes_per_source")
_FLOAT = ("edge_handshake_timeout", "drain_delay", "resync_interval", "stats_interval", "max_backoff", "backoff_reset", "lag_probe_interval")


def parse(data: Any, where: str = "agent.json") -> AgentConfig:
    """An ``AgentConfig`` from decoded JSON; unknown keys are ignored."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object")
    kw: Dict[str, Any] = {}
    for k in ("name", "address"):
        if not isinstance(data.get(k), str) or not data[k]:
            raise ConfigError(f"{where}: '{k}' is required (a non-empty string)")
    for k, v in data.items():
        if k in _STR:
            if not isinstance(v, str):
                raise ConfigError(f"{where}: '{k}' must be a string")
            kw[k] = v
        elif k in _INT:
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 65535:
                raise ConfigError(f"{where}: '{k}' must be an integer 0..65535")
            kw[k] = v
        elif k in _FLOAT:
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
                raise ConfigError(f"{where}: '{k}' must be a positive number")
            kw[k] = float(v)
        elif k == "labels":
            if not isinstance(v, dict) or not all(isinstance(a, str) and isinstance(b, str)
                                                  for a, b in v.items()):
                raise ConfigError(f"{where}: 'labels' must map strings to strings")
            kw[k] = dict(v)
        elif k == "seeds":
            if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
                raise ConfigError(f"{where}: 'seeds' must be a list of 'host:port' strings")
            kw[k] = tuple(v)
        elif k in ("gossip", "ingress", "discovery", "ingress_process"):
            kw[k] = bool(v)
        elif k == "docker_url":
            kw[k] = v if isinstance(v, str) and v else None
    for name in ("ingress_max_connections", "edge_max_handshakes",
                 "edge_max_handshakes_per_source"):
        if kw.get(name, 1) < 1:
            raise ConfigError(f"{where}: '{name}' must be at least 1")
    return AgentConfig(**kw)


def load(path: str) -> AgentConfig:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read agent config {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from exc
    return parse(data, path)


def load_gossip_keys(path: str) -> List[bytes]:
    """The keyring: a JSON list of base64 32-byte keys, the first is primary."""
    try:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
        keys = [base64.b64decode(k, validate=True) for k in raw]
    except OSError as exc:
        raise ConfigError(f"cannot read gossip keys {path}: {exc.strerror}") from exc
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: gossip keys must be a JSON list of base64 strings") from exc
    if not keys or any(len(k) != 32 for k in keys):
        raise ConfigError(f"{path}: gossip keys must be 32 bytes each, at least one")
    return keys
