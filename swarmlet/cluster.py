"""The cluster on the admin host: create it (``init``), load it, and its node registry.

Owns the files under ``$SWARMLET_HOME`` that describe the cluster (see "Admin
host files" in docs/internal-apis.md): ``cluster.json``, the CA (``ca.crt``,
``ca.key``), the master and CLI certificates, the gossip key file and
``known_hosts``. It also owns ``nodes.json``: the nodes joined from this host
with the SSH details needed to upgrade or remove them later (the master keeps
the live view; this file is what ``leave`` needs even when the master is down).

Every secret is written 0600 through ``home.write_atomic``; the directory is 0700.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import ssl
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from . import home as homedir
from . import pki
from .shipped import tlsutil
from .shipped.exceptions import ConfigError
from .signer import LocalSigner

MASTER_PORT = 7440
HA_AGENT_CERT_DAYS = 365.0
AGENT_API_PORT = 7443
GOSSIP_PORT = 7946
GOSSIP_KEY_BYTES = 32


@dataclass(frozen=True)
class Cluster:
    """A loaded cluster: its identity and where its files are."""

    id: str
    name: str
    home: Path
    advertise_addr: Optional[str] = None
    master_port: int = MASTER_PORT
    api_port: int = AGENT_API_PORT
    gossip_port: int = GOSSIP_PORT

    def path(self, name: str) -> Path:
        return self.home / name

    @property
    def known_hosts(self) -> Path:
        return self.home / "known_hosts"

    @property
    def bundles_dir(self) -> Path:
        return self.home / "bundles"

    @property
    def master_dir(self) -> Path:
        return self.home / "master"

    def ca(self) -> pki.KeyPair:
        return pki.KeyPair(self.path("ca.key").read_bytes(), self.path("ca.crt").read_bytes())

    def gossip_keys(self) -> List[bytes]:
        """The gossip keyring, primary first."""
        raw = json.loads(self.path("gossip.keys").read_text())
        return [base64.b64decode(k) for k in raw]

    def gossip_keys_text(self) -> str:
        return self.path("gossip.keys").read_text()

    def client_ssl(self, role: str = "cli", expect: Optional[tlsutil.Expect] = None) -> ssl.SSLContext:
        """A mutual-TLS client context with the ``cli`` (or ``master``) certificate.

        Requests go through ``swarmlet.client``, which makes one per peer; this
        is for tests and tools that speak TLS themselves.
        """
        return tlsutil.client_context(
            str(self.path(f"{role}.crt")), str(self.path(f"{role}.key")), str(self.path("ca.crt")),
            expect=expect, denylist=self.denylist())

    def signer(self) -> LocalSigner:
        return LocalSigner(self.home)

    def denylist(self) -> tlsutil.Denylist:
        """The certificates revoked so far (from the signer's ledger)."""
        return self.signer().denylist()

    def issue_agent(self, node_name: str, sans: List[str]) -> pki.KeyPair:
        return self.signer().issue(node_name, "agent", sans, self.agent_cert_days())

    def agent_cert_days(self) -> float:
        """30 days where the master (on this host, beside the CA key) renews them; a year with
        HA masters on the servers, which hold no CA key and so cannot renew (docs/security.md)."""
        return pki.LIFETIME_DAYS["agent"] if not self.masters else HA_AGENT_CERT_DAYS

    def renew_local_certs(self, now: Optional[float] = None) -> List[str]:
        """Renew this host's ``master``/``cli`` certificates if due; the roles renewed."""
        now = time.time() if now is None else now
        done = []
        for role in ("master", "cli"):
            try:
                info = pki.cert_info(self.path(f"{role}.crt").read_bytes())
            except FileNotFoundError:
                continue
            if pki.needs_renewal(info.not_after, now, pki.LIFETIME_DAYS[role]):
                sans = [s for s in info.sans if s != info.name]
                kp = self.signer().issue(info.name, role, sans)
                homedir.write_atomic(self.path(f"{role}.key"), kp.key_pem, 0o600)
                homedir.write_atomic(self.path(f"{role}.crt"), kp.cert_pem, 0o644)
                done.append(role)
        return done

    masters: Tuple[str, ...] = ()    # the HA masters' API URLs (swarmlet master ha); () = this host

    def master_url(self) -> str:
        return self.masters[0] if self.masters else f"https://127.0.0.1:{self.master_port}"

    def master_urls(self) -> List[str]:
        """Every master to try, in order: the HA masters, or the one on this host."""
        return list(self.masters) if self.masters else [self.master_url()]


def _cluster_file(home: Path) -> Path:
    return home / "cluster.json"


def exists(home: Optional[Path] = None) -> bool:
    return _cluster_file(home or homedir.home()).exists()


def _default_name() -> str:
    return "swarmlet"


def init(
    name: Optional[str] = None,
    advertise_addr: Optional[str] = None,
    force: bool = False,
    master_port: int = MASTER_PORT,
    home: Optional[Path] = None,
) -> Cluster:
    """Create a new cluster under ``home``; refuse if one exists unless ``force``."""
    home = home or homedir.home()
    os.chmod(home, 0o700)
    if _cluster_file(home).exists() and not force:
        existing = json.loads(_cluster_file(home).read_text())
        raise ConfigError(
            f"a cluster already exists in {home} (name {existing.get('name')!r}, id {existing.get('id')})",
            hint="use --force to replace it (its nodes will no longer trust this host), "
                 "or set SWARMLET_HOME to another directory",
        )
    cluster_id = uuid.uuid4().hex[:16]
    cname = name or _default_name()
    ca = pki.create_ca(cluster_id, cname)
    homedir.write_atomic(home / "ca.key", ca.key_pem, 0o600)
    homedir.write_atomic(home / "ca.crt", ca.cert_pem, 0o644)
    master_sans = ["localhost", "127.0.0.1", socket.gethostname()]
    if advertise_addr:
        master_sans.append(advertise_addr)
    for stale in ("ca.index.json",):   # a new CA: the old one's ledger means nothing
        try:
            (home / stale).unlink()
        except FileNotFoundError:
            pass
    signer = LocalSigner(home)
    for role, cn, sans in (("master", "master", master_sans), ("cli", "cli", [])):
        kp = signer.issue(cn, role, sans)
        homedir.write_atomic(home / f"{role}.key", kp.key_pem, 0o600)
        homedir.write_atomic(home / f"{role}.crt", kp.cert_pem, 0o644)
    key = base64.b64encode(secrets.token_bytes(GOSSIP_KEY_BYTES)).decode()
    homedir.write_atomic(home / "gossip.keys", json.dumps([key]).encode(), 0o600)
    # the vault's key-encrypting key (master/vault.py); kept by --force: the store's
    # sealed values stay readable with it
    if not (home / "vault.key").exists():
        homedir.write_atomic(home / "vault.key",
                             base64.b64encode(secrets.token_bytes(32)) + b"\n", 0o600)
    if force:
        # A new CA: old nodes and cached host keys belong to the old cluster.
        for stale in ("nodes.json",):
            try:
                (home / stale).unlink()
            except FileNotFoundError:
                pass
    if not (home / "known_hosts").exists():
        homedir.write_atomic(home / "known_hosts", b"", 0o600)
    meta = {
        "id": cluster_id, "name": cname, "advertise_addr": advertise_addr,
        "master_port": master_port, "api_port": AGENT_API_PORT, "gossip_port": GOSSIP_PORT,
        "created_at": time.time(),
    }
    homedir.write_atomic(_cluster_file(home), json.dumps(meta, indent=2).encode(), 0o600)
    for sub in ("master", "bundles"):
        (home / sub).mkdir(mode=0o700, exist_ok=True)
    return load(home)


def load(home: Optional[Path] = None) -> Cluster:
    """The cluster in ``home``; ``ConfigError`` with a hint if there is none."""
    home = home or homedir.home()
    try:
        meta = json.loads(_cluster_file(home).read_text())
    except FileNotFoundError:
        raise ConfigError(f"no cluster in {home}", hint="run 'swarmlet init' first") from None
    except ValueError as exc:
        raise ConfigError(f"{_cluster_file(home)} is not valid JSON: {exc}") from exc
    try:
        return Cluster(
            id=str(meta["id"]), name=str(meta.get("name", "swarmlet")), home=home,
            advertise_addr=meta.get("advertise_addr"),
            master_port=int(meta.get("master_port", MASTER_PORT)),
            api_port=int(meta.get("api_port", AGENT_API_PORT)),
            gossip_port=int(meta.get("gossip_port", GOSSIP_PORT)),
            masters=tuple(str(m["url"]) for m in meta.get("masters") or []),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{_cluster_file(home)} is invalid: {exc}") from exc


# --- node registry (nodes.json) ------------------------------------------------

@dataclass(frozen=True)
class NodeRecord:
    """A node joined from this host, with what is needed to reach it over SSH again."""

    name: str
    address: str
    ssh_host: str
    ssh_user: str = "root"
    ssh_port: int = 22
    identity: Optional[str] = None
    api_port: int = AGENT_API_PORT
    gossip_port: int = GOSSIP_PORT
    labels: Dict[str, str] = field(default_factory=dict)
    init: str = "systemd"
    bundle: str = ""
    joined_at: float = 0.0
    privilege: str = "root"     # root | sudo | user (a docker-group user without root or sudo)
    agent_home: str = ""        # the user's home when privilege is "user" (the agent lives under it)


def _nodes_file(cluster: Cluster) -> Path:
    return cluster.home / "nodes.json"


def nodes(cluster: Cluster) -> List[NodeRecord]:
    try:
        raw = json.loads(_nodes_file(cluster).read_text())
    except FileNotFoundError:
        return []
    except ValueError as exc:
        raise ConfigError(f"{_nodes_file(cluster)} is not valid JSON: {exc}") from exc
    known = set(NodeRecord.__dataclass_fields__)
    return [NodeRecord(**{k: v for k, v in r.items() if k in known}) for r in raw]


def save_node(cluster: Cluster, rec: NodeRecord) -> None:
    """Add or replace ``rec`` (matched by name) in the registry."""
    recs = [r for r in nodes(cluster) if r.name != rec.name]
    recs.append(rec)
    _write_nodes(cluster, recs)


def forget_node(cluster: Cluster, name: str) -> bool:
    recs = nodes(cluster)
    kept = [r for r in recs if r.name != name]
    _write_nodes(cluster, kept)
    return len(kept) != len(recs)


def find_node(cluster: Cluster, name_or_addr: str) -> Optional[NodeRecord]:
    for r in nodes(cluster):
        if name_or_addr in (r.name, r.address, r.ssh_host):
            return r
    return None


def _write_nodes(cluster: Cluster, recs: List[NodeRecord]) -> None:
    data = json.dumps([asdict(r) for r in sorted(recs, key=lambda r: r.name)], indent=2)
    homedir.write_atomic(_nodes_file(cluster), data.encode(), 0o600)
