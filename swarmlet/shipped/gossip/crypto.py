"""AES-256-GCM envelopes for gossip packets, and the cluster keyring behind them.

Two envelopes (wire version 2; the first byte is ``0x20 | kind``):

- pair: ``0x21 | sender id (4) | recipient id (4) | nonce (12) | ciphertext | tag (16)``,
  the first 9 bytes bound in as associated data. The key is derived per pair of
  members and per cluster key: HKDF-SHA256 of their static ECDH secret (from their
  cluster certificates), salted with the cluster key. Holding the cluster key alone
  opens nothing and forges nothing; holding one node's key forges only that node.
  Every protocol message travels in this envelope.
- hello: ``0x22 | nonce (12) | ciphertext | tag (16)``, sealed with the cluster key
  (``Keyring.seal``); it carries only a certificate, which is checked against the CA,
  so it needs no more. It is how two members that do not know each other start.

The ids are the first 4 bytes of the SHA-256 of each side's certificate (a collision
only means trying two keys). Why not an ECDSA signature per packet: 64 more bytes and
~100 µs of CPU per packet (bench/gossip/crypto), against ~1 µs and 8 bytes here.

The keyring holds a primary cluster key (used to seal) and extra keys (also tried to
open), so ``swarmlet key rotate`` can install a new key everywhere, make it primary,
then drop the old one with no packet refused. Opening raises only ``AuthError``.
Keys on disk (``/etc/swarmlet/gossip.keys``) are a JSON list of base64 strings, the
first one primary.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from pathlib import Path
from typing import List, Sequence, Union

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..exceptions import AuthError, ConfigError

ENC_VERSION = 2
V1_BYTE = 0x01                       # what wire version 1 (swarmlet before this) sends
PAIR_BYTE = (ENC_VERSION << 4) | 1
HELLO_BYTE = (ENC_VERSION << 4) | 2
NONCE_SIZE = 12
TAG_SIZE = 16
ID_SIZE = 4
PAIR_HEADER = 1 + 2 * ID_SIZE
OVERHEAD = 1 + NONCE_SIZE + TAG_SIZE           # hello envelope
PAIR_OVERHEAD = PAIR_HEADER + NONCE_SIZE + TAG_SIZE
KEY_SIZE = 32
_HELLO_AAD = bytes((HELLO_BYTE,))
_PAIR_INFO = b"swarmlet gossip v2 pair key"


def generate_key() -> bytes:
    return os.urandom(KEY_SIZE)


def pair_key(cluster_key: bytes, secret: bytes, fp_a: bytes, fp_b: bytes) -> bytes:
    """The AES key two members share under one cluster key (same on both sides)."""
    lo, hi = sorted((fp_a, fp_b))
    return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=cluster_key,
                info=_PAIR_INFO + lo + hi).derive(secret)


def seal_pair(aead: AESGCM, sid: bytes, rid: bytes, plaintext: bytes) -> bytes:
    head = bytes((PAIR_BYTE,)) + sid + rid
    nonce = os.urandom(NONCE_SIZE)
    return head + nonce + aead.encrypt(nonce, plaintext, head)


def pair_ids(packet: bytes) -> "tuple[bytes, bytes]":
    """(sender id, recipient id) of a pair envelope; ``AuthError`` if too short."""
    if len(packet) < PAIR_OVERHEAD or packet[0] != PAIR_BYTE:
        raise AuthError("not a pair envelope")
    return packet[1:1 + ID_SIZE], packet[1 + ID_SIZE:PAIR_HEADER]


def open_pair(aeads: Sequence[AESGCM], packet: bytes) -> bytes:
    head = packet[:PAIR_HEADER]
    nonce = packet[PAIR_HEADER:PAIR_HEADER + NONCE_SIZE]
    body = packet[PAIR_HEADER + NONCE_SIZE:]
    for a in aeads:
        try:
            return a.decrypt(nonce, body, head)
        except InvalidTag:
            continue
    raise AuthError("no pair key opens this packet")


class Keyring:
    """A primary key plus extra keys; seals with the primary, opens with any.

    ``generation`` changes with every add/use/remove, so caches of keys derived
    from the ring (the pair keys) know when to derive again.
    """

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ConfigError("a gossip keyring needs at least one key")
        self._keys: List[bytes] = []
        self._ciphers: List[AESGCM] = []
        self.generation = 0
        for k in keys:
            self.add(k)

    @property
    def primary(self) -> bytes:
        return self._keys[0]

    @property
    def keys(self) -> List[bytes]:
        return list(self._keys)

    def add(self, key: bytes) -> None:
        """Accept packets sealed with ``key`` too (first step of a rotation)."""
        if not isinstance(key, bytes) or len(key) != KEY_SIZE:
            raise ConfigError(f"gossip keys must be {KEY_SIZE} bytes (AES-256)")
        if key not in self._keys:
            self._keys.append(key)
            self._ciphers.append(AESGCM(key))
            self.generation += 1

    def use(self, key: bytes) -> None:
        """Make ``key`` (added if needed) the primary: new packets are sealed with it."""
        self.add(key)
        i = self._keys.index(key)
        if i:
            self._keys.insert(0, self._keys.pop(i))
            self._ciphers.insert(0, self._ciphers.pop(i))
            self.generation += 1

    def remove(self, key: bytes) -> None:
        """Stop accepting ``key``; the primary cannot be removed."""
        if key == self._keys[0]:
            raise ConfigError("cannot remove the primary gossip key; make another primary first")
        if key in self._keys:
            i = self._keys.index(key)
            del self._keys[i]
            del self._ciphers[i]
            self.generation += 1

    def replace(self, keys: Sequence[bytes]) -> None:
        """Become exactly ``keys`` (first primary), e.g. after reading the key file again."""
        if not keys:
            raise ConfigError("a gossip keyring needs at least one key")
        fresh = Keyring(keys)
        if fresh._keys != self._keys:
            self._keys, self._ciphers = fresh._keys, fresh._ciphers
            self.generation += 1

    def seal(self, plaintext: bytes) -> bytes:
        """The hello envelope, sealed with the primary cluster key."""
        nonce = os.urandom(NONCE_SIZE)
        return _HELLO_AAD + nonce + self._ciphers[0].encrypt(nonce, plaintext, _HELLO_AAD)

    def open(self, packet: bytes) -> bytes:
        if len(packet) < OVERHEAD:
            raise AuthError("encrypted packet too short")
        if packet[0] != HELLO_BYTE:
            raise AuthError(f"unknown envelope {packet[0]}")
        nonce = packet[1:1 + NONCE_SIZE]
        body = packet[1 + NONCE_SIZE:]
        for c in self._ciphers:
            try:
                return c.decrypt(nonce, body, _HELLO_AAD)
            except InvalidTag:
                continue
        raise AuthError("no key in the keyring opens this packet")

    # --- files ----------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps([base64.b64encode(k).decode("ascii") for k in self._keys])

    @classmethod
    def from_json(cls, text: str) -> "Keyring":
        try:
            raw = json.loads(text)
            if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
                raise ValueError("expected a JSON list of base64 strings")
            keys = [base64.b64decode(s, validate=True) for s in raw]
        except (ValueError, binascii.Error) as exc:
            raise ConfigError(f"invalid gossip key file: {exc}") from exc
        return cls(keys)

    @classmethod
    def load(cls, path: Union[str, Path]) -> "Keyring":
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read gossip keys {path}: {exc.strerror}") from exc
        return cls.from_json(text)
