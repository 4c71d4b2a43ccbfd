"""AES-256-GCM envelope for gossip packets, and the keyring behind it.

Envelope (as memberlist): ``version byte (1) | nonce (12, random) | ciphertext | tag (16)``,
the version byte bound in as associated data. The keyring holds a primary key (used to
seal) and extra keys (also tried to open), so ``swarmlet key rotate`` can install a new
key everywhere, make it primary, then drop the old one without a moment of downtime.

Opening never raises anything but ``AuthError``; the core counts and drops those.
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
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..exceptions import AuthError, ConfigError

ENC_VERSION = 1
NONCE_SIZE = 12
TAG_SIZE = 16
OVERHEAD = 1 + NONCE_SIZE + TAG_SIZE
KEY_SIZE = 32
_AAD = bytes((ENC_VERSION,))


def generate_key() -> bytes:
    return os.urandom(KEY_SIZE)


class Keyring:
    """A primary key plus extra keys; seals with the primary, opens with any."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ConfigError("a gossip keyring needs at least one key")
        self._keys: List[bytes] = []
        self._ciphers: List[AESGCM] = []
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

    def use(self, key: bytes) -> None:
        """Make ``key`` (added if needed) the primary: new packets are sealed with it."""
        self.add(key)
        i = self._keys.index(key)
        self._keys.insert(0, self._keys.pop(i))
        self._ciphers.insert(0, self._ciphers.pop(i))

    def remove(self, key: bytes) -> None:
        """Stop accepting ``key``; the primary cannot be removed."""
        if key == self._keys[0]:
            raise ConfigError("cannot remove the primary gossip key; make another primary first")
        if key in self._keys:
            i = self._keys.index(key)
            del self._keys[i]
            del self._ciphers[i]

    def seal(self, plaintext: bytes) -> bytes:
        nonce = os.urandom(NONCE_SIZE)
        return _AAD + nonce + self._ciphers[0].encrypt(nonce, plaintext, _AAD)

    def open(self, packet: bytes) -> bytes:
        if len(packet) < OVERHEAD:
            raise AuthError("encrypted packet too short")
        if packet[0] != ENC_VERSION:
            raise AuthError(f"unknown encryption version {packet[0]}")
        nonce = packet[1:1 + NONCE_SIZE]
        body = packet[1 + NONCE_SIZE:]
        for c in self._ciphers:
            try:
                return c.decrypt(nonce, body, _AAD)
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
