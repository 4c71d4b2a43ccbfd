"""Encrypted values at rest: the cluster data key, sealing and opening, the size cap.

Owns how a value the master must keep but never show (a secret, a config, and
for issue 18 a certificate's key or the ACME account key) is stored: sealed
with AES-256-GCM under the cluster **data key**, with associated data that
binds each ciphertext to its purpose, name and version, so a ciphertext
copied onto another name or version (or another cluster) fails to open.

Envelope (Swarm does the same with its raft DEK and KEK):

- the **data key** (DEK, 32 random bytes) seals values. It is stored only
  *wrapped*: sealed under the key-encrypting key, in the store's meta
  ``vault`` (``{"kid", "dek"}``), so every master sharing a store (SQLite, or
  etcd for HA) reads the same data key;
- the **key-encrypting key** (KEK, 32 random bytes) is never in the store. It
  is the file ``vault.key`` (0600) in the home the master runs from:
  ``$SWARMLET_HOME/vault.key`` for the embedded master on the admin host, and
  the HA master's home (``/etc/swarmlet/master/vault.key``) on a server,
  uploaded there with the master's certificate. A copy of ``state.db``, an etcd
  snapshot or a backup of either opens nothing without it.

A sealed value is text: ``v1.<kid>.<base64(nonce 12 B + ciphertext + tag 16 B)>``.
The associated data is ``swarmlet/<cluster id>/<purpose>/<name>/<version>``.

``fingerprint`` is an HMAC-SHA256 of a value under a key derived from the data
key: the master can tell that a stack file's secret changed without keeping a
plain hash (a SHA-256 of a short password is a brute-force target; an HMAC
under a key nobody outside the master holds is not). Fingerprints are never
shown either.

For other parts (issue 18's certificates and ACME account key): the running master's vault is
``Master.secretbook.vault``; seal with a purpose of your own (``vault.seal("cert", host, 1,
pem)``) and store the result as a ``state.SecretVersion`` of that kind in ``Batch.secrets``:
both stores, the HA migration and the watch already carry it, and ``SecretBook`` only lists,
mounts and prunes the kinds ``secret`` and ``config``.

``MAX_SIZE`` (500 KiB, Swarm's limit): secrets are passwords, keys and
certificates, and configs are small files; 500 KiB also keeps one value, base64
in JSON, far inside a store transaction (etcd accepts 16 MiB, ``ha.etcdconf``)
and an agent's assignment (16 MiB). ``check_size`` is the one judge of it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets as _random
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..shipped.exceptions import ConfigError, StoreError, UsageError
from ..shipped.secretrefs import MAX_SIZE
KEY_FILE = "vault.key"
META_KEY = "vault"            # the store's meta: {"kid": ..., "dek": sealed data key}
_VERSION = "v1"
_NONCE = 12


def check_size(kind: str, name: str, size: int) -> None:
    """A value larger than ``MAX_SIZE`` is refused, with its size and the cap."""
    if size > MAX_SIZE:
        raise UsageError(f"{kind} {name!r} is {_kib(size)}; a {kind} may be at most "
                         f"{_kib(MAX_SIZE)}")


def _kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n % 1024 else f"{n // 1024} KiB"


def kid_of(key: bytes) -> str:
    """A short, public name for a key (which key sealed what), not the key."""
    return hashlib.sha256(b"swarmlet-vault-kid" + key).hexdigest()[:12]


def _seal(key: bytes, aad: bytes, data: bytes) -> str:
    nonce = _random.token_bytes(_NONCE)
    ct = AESGCM(key).encrypt(nonce, data, aad)
    return f"{_VERSION}.{kid_of(key)}.{base64.b64encode(nonce + ct).decode()}"


def _open(key: bytes, aad: bytes, sealed: str, what: str) -> bytes:
    try:
        version, kid, body = sealed.split(".", 2)
        raw = base64.b64decode(body, validate=True)
    except (ValueError, AttributeError) as exc:
        raise StoreError(f"{what}: the stored ciphertext is malformed") from exc
    if version != _VERSION:
        raise StoreError(f"{what}: sealed with format {version!r}, this master knows {_VERSION}")
    if kid != kid_of(key):
        raise StoreError(f"{what}: sealed under key {kid}, this master holds key {kid_of(key)}")
    try:
        return AESGCM(key).decrypt(raw[:_NONCE], raw[_NONCE:], aad)
    except (InvalidTag, ValueError) as exc:
        raise StoreError(f"{what}: the stored ciphertext does not open (tampered with, or "
                         "moved to another name or version)") from exc


class Vault:
    """Seals and opens values under one cluster's data key (see the module docstring)."""

    def __init__(self, dek: bytes, cluster_id: str) -> None:
        if len(dek) != 32:
            raise ConfigError("the vault's data key must be 32 bytes")
        self._dek = dek
        self.cluster_id = cluster_id
        self._fp_key = hmac.new(dek, b"swarmlet-fingerprint", hashlib.sha256).digest()

    def __repr__(self) -> str:      # never the key
        return f"Vault(kid={self.kid}, cluster={self.cluster_id})"

    @property
    def kid(self) -> str:
        return kid_of(self._dek)

    def _aad(self, purpose: str, name: str, version: int) -> bytes:
        return f"swarmlet/{self.cluster_id}/{purpose}/{name}/{int(version)}".encode()

    def seal(self, purpose: str, name: str, version: int, data: bytes) -> str:
        return _seal(self._dek, self._aad(purpose, name, version), bytes(data))

    def open(self, purpose: str, name: str, version: int, sealed: str) -> bytes:
        return _open(self._dek, self._aad(purpose, name, version), sealed,
                     f"{purpose} {name!r} version {version}")

    def fingerprint(self, purpose: str, name: str, data: bytes) -> str:
        msg = f"{purpose}/{name}/".encode() + bytes(data)
        return hmac.new(self._fp_key, msg, hashlib.sha256).hexdigest()

    # --- the data key in the store, wrapped by the key-encrypting key ----------------------

    @classmethod
    def unlock(cls, kek: bytes, meta: Optional[Mapping[str, Any]],
               cluster_id: str) -> Tuple["Vault", Optional[Dict[str, Any]]]:
        """The vault of a store whose meta ``vault`` is ``meta`` (None: a new data key is made
        for ``cluster_id``; the second value is then the meta to store). The cluster id the
        data key was made for is kept in that meta, so the binding survives ``init --force``.
        A KEK that does not open the stored data key is a ``ConfigError`` naming both key ids."""
        if not meta:
            dek = _random.token_bytes(32)
            aad = f"swarmlet/{cluster_id}/data-key".encode()
            return cls(dek, cluster_id), {"kid": kid_of(dek), "kek": kid_of(kek),
                                          "cluster": cluster_id, "dek": _seal(kek, aad, dek)}
        made_for = str(meta.get("cluster", cluster_id))
        try:
            dek = _open(kek, f"swarmlet/{made_for}/data-key".encode(), str(meta.get("dek", "")),
                        "the cluster data key")
        except StoreError as exc:
            raise ConfigError(
                f"this master's vault key ({kid_of(kek)}) does not open the cluster's data key "
                f"(wrapped under {meta.get('kek', '?')}): {exc}",
                hint="copy vault.key from the admin host's SWARMLET_HOME into this master's "
                     "home") from exc
        return cls(dek, made_for), None


def load_key(home: Path, create: bool = False) -> Optional[bytes]:
    """The key-encrypting key from ``home/vault.key`` (base64 of 32 bytes, 0600); ``create``
    makes one if there is none. None: no key (this master cannot open values)."""
    path = Path(home) / KEY_FILE
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        if not create:
            return None
        key = _random.token_bytes(32)
        tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}")
        fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(base64.b64encode(key).decode() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(str(tmp), str(path))     # never replace a key another process just made
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        return load_key(home)
    except OSError as exc:
        raise ConfigError(f"cannot read the vault key {path}: {exc.strerror}") from exc
    try:
        key = base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise ConfigError(f"{path}: expected the base64 of a 32-byte key") from exc
    if len(key) != 32:
        raise ConfigError(f"{path}: expected the base64 of a 32-byte key")
    return key
