"""The etcd CA: a CA of its own, beside the cluster CA, for etcd members and their clients.

Why a second CA: every agent holds a certificate of the cluster CA. If etcd
trusted the cluster CA, any agent's key would open the whole control-plane
state. With its own CA (kubeadm does the same), only the etcd members and the
masters hold certificates etcd accepts. Its key stays on the admin host
(``etcd-ca.key``, 0600): members and masters receive leaf certificates only.

Files in ``$SWARMLET_HOME``: ``etcd-ca.crt``, ``etcd-ca.key``; per member and
master the leaf is made at ``master ha`` time and uploaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .. import home as homedir
from .. import pki

CA_CERT = "etcd-ca.crt"
CA_KEY = "etcd-ca.key"


def create_ca(cluster_id: str, cluster_name: str) -> pki.KeyPair:
    return pki.create_ca(cluster_id, f"{cluster_name} etcd")


def ensure_ca(home: Path, cluster_id: str, cluster_name: str) -> pki.KeyPair:
    """The etcd CA in ``home``, made on first use (0600 key)."""
    try:
        return pki.KeyPair((home / CA_KEY).read_bytes(), (home / CA_CERT).read_bytes())
    except FileNotFoundError:
        pass
    ca = create_ca(cluster_id, cluster_name)
    homedir.write_atomic(home / CA_KEY, ca.key_pem, 0o600)
    homedir.write_atomic(home / CA_CERT, ca.cert_pem, 0o644)
    return ca


def member_cert(ca: pki.KeyPair, name: str, sans: Sequence[str]) -> pki.KeyPair:
    """A member's certificate: serves clients and peers, and is a client of its peers."""
    return pki.issue(ca, f"etcd-{name}", "master", list(dict.fromkeys([*sans, "127.0.0.1", "localhost"])))


def client_cert(ca: pki.KeyPair, name: str) -> pki.KeyPair:
    """A master's client certificate for etcd."""
    return pki.issue(ca, f"master-{name}", "master", [])
