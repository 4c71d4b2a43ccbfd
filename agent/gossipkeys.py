"""The agent's gossip keyring on disk and live: what ``swarmlet key rotate`` changes.

``PUT /v1/gossip/keys`` (``agent/api.py``) hands the whole keyring here, first key
primary: it is written to ``/etc/swarmlet/gossip.keys`` atomically (a 0600 temp file
in the same directory, fsync, rename, fsync of the directory), then swapped into the
running gossip node, so a restart and the live agent always agree. Keys never appear
in answers or logs: only their fingerprints (first 8 bytes of SHA-256, hex).
Python 3.9, standard library only.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import os
from typing import Any, Dict, List

from swarmlet.shipped.exceptions import ConfigError, ProtocolError

KEY_SIZE = 32
MAX_KEYS = 8


def fingerprint(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:16]


def parse(body: Any) -> List[bytes]:
    """``{"keys": [base64, ...]}`` (first primary) -> keys; ``ProtocolError`` if malformed."""
    raw = body.get("keys") if isinstance(body, dict) else None
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_KEYS:
        raise ProtocolError(f"'keys' must be a list of 1 to {MAX_KEYS} base64 strings")
    keys: List[bytes] = []
    for k in raw:
        try:
            b = base64.b64decode(k, validate=True) if isinstance(k, str) else b""
        except (ValueError, binascii.Error):
            b = b""
        if len(b) != KEY_SIZE:
            raise ProtocolError(f"every gossip key must be {KEY_SIZE} bytes, base64")
        if b not in keys:
            keys.append(b)
    return keys


def write(path: str, keys: List[bytes]) -> None:
    """Replace the key file atomically, 0600 from the first byte."""
    text = json.dumps([base64.b64encode(k).decode("ascii") for k in keys])
    d = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(d, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, text.encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dfd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise ConfigError(f"cannot write gossip keys {path}: {exc.strerror}") from exc


def summary(keys: List[bytes], live: bool) -> Dict[str, Any]:
    return {"keys": [fingerprint(k) for k in keys], "primary": fingerprint(keys[0]),
            "live": live}


async def apply(agent: Any, keys: List[bytes]) -> Dict[str, Any]:
    """Persist, then use, exactly ``keys``. ``live`` is False when gossip is not running
    (it starts with these keys next time)."""
    await asyncio.to_thread(write, agent.config.gossip_keys, keys)
    ring = getattr(agent.members, "keyring", None)
    if ring is not None:
        ring.replace(keys)
    return summary(keys, ring is not None)


def current(agent: Any) -> Dict[str, Any]:
    ring = getattr(agent.members, "keyring", None)
    if ring is not None:
        return summary(ring.keys, True)
    from .config import load_gossip_keys
    try:
        return summary(load_gossip_keys(agent.config.gossip_keys), False)
    except ConfigError:
        return {"keys": [], "primary": None, "live": False}
