"""An etcd member's command line, from what the cluster knows about it (pure).

The same function starts members in tests (loopback, temp dirs) and on servers
(``master ha`` writes it into the unit or the supervised loop), so the flags a
test proves are the flags production runs.

Choices, and why:
- TLS everywhere: clients and peers present certificates of the etcd CA
  (``etcdpki``) and etcd checks them (``--client-cert-auth``,
  ``--peer-client-cert-auth``). Agents hold certificates of the cluster CA,
  not of the etcd CA, so no agent (and no stolen agent key) can open etcd.
- Raft timing stays at etcd's defaults (heartbeat 100 ms, election 1 s): the
  leader lease (``election.DEFAULT_TTL``) is what bounds failover, and shorter
  raft timers flap on a shared 2-core machine.
- ``--max-txn-ops`` 16384 and ``--max-request-bytes`` 16 MiB: one master
  commit is one transaction (all or nothing), and a reconcile pass on a large
  cluster writes thousands of task keys at once (etcd's defaults are 128 ops
  and 1.5 MiB).
- Auto-compaction by revision (keep the last 10,000): followers' watches
  resume from a recent revision; an older one reloads the whole state.
- Watch progress every 5 s (etcd's default is 10 min), so a follower whose
  watch stream went silent (its member died without closing the socket)
  notices within its read timeout and resumes on another member.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

CLIENT_PORT = 2379
PEER_PORT = 2380
MAX_TXN_OPS = 16384
MAX_REQUEST_BYTES = 16 * 1024 * 1024
QUOTA_BACKEND_BYTES = 2 * 1024 ** 3


@dataclass(frozen=True)
class Member:
    """One etcd member: its name and where it listens (host, client and peer ports)."""

    name: str
    host: str
    client_port: int = CLIENT_PORT
    peer_port: int = PEER_PORT

    @property
    def client_url(self) -> str:
        return f"https://{_host(self.host)}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"https://{_host(self.host)}:{self.peer_port}"


@dataclass(frozen=True)
class TLSFiles:
    ca: str
    cert: str
    key: str


def _host(h: str) -> str:
    return f"[{h}]" if ":" in h else h


def initial_cluster(members: Sequence[Member]) -> str:
    return ",".join(f"{m.name}={m.peer_url}" for m in members)


def member_args(me: Member, members: Sequence[Member], data_dir: str, tls: TLSFiles,
                token: str, state: str = "new", listen_host: Optional[str] = None,
                quota_bytes: int = QUOTA_BACKEND_BYTES, binary: str = "etcd") -> List[str]:
    """The argv of ``me`` in a cluster of ``members`` (``state``: "new" or "existing")."""
    if state not in ("new", "existing"):
        raise ValueError(f"initial cluster state must be new or existing, not {state!r}")
    if me.name not in {m.name for m in members}:
        raise ValueError(f"{me.name} is not one of the members")
    bind = _host(listen_host or me.host)
    flags: Dict[str, str] = {
        "name": me.name,
        "data-dir": data_dir,
        "listen-client-urls": f"https://{bind}:{me.client_port}",
        "advertise-client-urls": me.client_url,
        "listen-peer-urls": f"https://{bind}:{me.peer_port}",
        "initial-advertise-peer-urls": me.peer_url,
        "initial-cluster": initial_cluster(members),
        "initial-cluster-state": state,
        "initial-cluster-token": token,
        "cert-file": tls.cert, "key-file": tls.key, "trusted-ca-file": tls.ca,
        "client-cert-auth": "true",
        "peer-cert-file": tls.cert, "peer-key-file": tls.key, "peer-trusted-ca-file": tls.ca,
        "peer-client-cert-auth": "true",
        "max-txn-ops": str(MAX_TXN_OPS),
        "max-request-bytes": str(MAX_REQUEST_BYTES),
        "quota-backend-bytes": str(quota_bytes),
        "auto-compaction-mode": "revision",
        "auto-compaction-retention": "10000",
        "experimental-watch-progress-notify-interval": "5s",
        "logger": "zap",
        "log-outputs": "stderr",
    }
    return [binary] + [f"--{k}={v}" for k, v in flags.items()]
