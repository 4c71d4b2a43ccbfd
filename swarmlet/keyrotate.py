"""Rotating the cluster's gossip key, the admin side of ``swarmlet key rotate``.

A gossip node opens packets with any key of its keyring and seals with the first
(the primary), so a rotation in three barriers refuses no packet on the way:

1. ``add``:  every node gets ``[old, new]`` (still sealing with old, opening both);
2. ``use``:  every node gets ``[new, old]`` (sealing with new; all can open it by now);
3. ``drop``: after ``grace`` seconds (packets in flight, and those held for a
   certificate, 2 s at most), every node gets ``[new]``.

Each step is ``PUT /v1/gossip/keys`` (``swarmlet.client``: mutual TLS with the ``cli``
certificate, each agent's certificate checked for its name and address) to every node
the master lists, concurrently; the agent persists its key file atomically (0600) and
swaps its live keyring. Before each step the admin host's ``gossip.keys`` (what
``join`` installs) takes the same list, and ``rotation.json`` (fingerprints only)
records the rotation, so an interrupted one is resumed, not started again.

A node that fails a step is reported alone; the others go on. Such a node keeps an old
keyring: once the others drop the old key it can no longer gossip, and needs
``swarmlet key rotate --sync`` (push the current keys to every node) or a re-join.
Keys are never printed or logged: only fingerprints (``agent/gossipkeys.py``).
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

from . import cluster as clusterlib
from . import home as homedir
from .client import Client
from .shipped.exceptions import ConfigError, SwarmletError
from .images import Node

STEPS = ("add", "use", "drop")
KEY_BYTES = 32
CALL_TIMEOUT = 10.0
PARALLEL = 32


def fingerprint(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:16]


@dataclass(frozen=True)
class StepEvent:
    """Progress for the CLI: a node's outcome of one step (``node`` "" for the host)."""

    step: str
    node: str
    ok: bool
    error: str = ""


@dataclass
class NodeResult:
    node: str
    done: List[str] = field(default_factory=list)     # steps that succeeded
    error: Optional[str] = None                       # the last failure, if any
    failed_step: Optional[str] = None                 # the first step it missed

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> Dict[str, object]:
        return {"node": self.node, "ok": self.ok, "steps": list(self.done),
                "failed_step": self.failed_step, "error": self.error}


@dataclass
class Report:
    new: str                  # fingerprint of the new primary
    old: List[str]            # fingerprints dropped
    nodes: List[NodeResult]
    resumed: bool = False

    @property
    def failed(self) -> List[NodeResult]:
        return [n for n in self.nodes if not n.ok]

    def to_dict(self) -> Dict[str, object]:
        return {"primary": self.new, "dropped": self.old, "resumed": self.resumed,
                "nodes": [n.to_dict() for n in self.nodes]}


Progress = Callable[[StepEvent], None]


def _encode(keys: Sequence[bytes]) -> List[str]:
    return [base64.b64encode(k).decode("ascii") for k in keys]


def _save_admin_keys(c: clusterlib.Cluster, keys: Sequence[bytes]) -> None:
    homedir.write_atomic(c.path("gossip.keys"), json.dumps(_encode(keys)).encode(), 0o600)


class _Lock:
    """One rotation at a time on this host."""

    def __init__(self, c: clusterlib.Cluster) -> None:
        self.path = c.path(".key-rotate.lock")
        self.fd = -1

    def __enter__(self) -> "_Lock":
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self.fd)
            raise ConfigError("another `swarmlet key rotate` is running on this host") from exc
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _plan(c: clusterlib.Cluster, new_key: Optional[bytes]):
    """(old keys, new key, resumed) from the admin files."""
    keys = c.gossip_keys()
    state_file = c.path("rotation.json")
    if state_file.exists():
        try:
            state = json.loads(state_file.read_text())
            by_fp = {fingerprint(k): k for k in keys}
            new = by_fp[state["new"]]
            old = [by_fp[f] for f in state["old"] if f in by_fp]
            return old, new, True
        except (ValueError, KeyError, TypeError):
            raise ConfigError(f"{state_file}: an interrupted rotation that does not match "
                              f"gossip.keys; remove it to start a new rotation")
    new = new_key or os.urandom(KEY_BYTES)
    if len(new) != KEY_BYTES or new in keys:
        raise ConfigError("the new gossip key must be 32 fresh bytes")
    homedir.write_atomic(state_file, json.dumps(
        {"new": fingerprint(new), "old": [fingerprint(k) for k in keys]}).encode(), 0o600)
    return keys, new, False


async def _put(node: Node, keys: Sequence[bytes], client: Client) -> None:
    ans = await client.call(node.peer, "PUT", "/v1/gossip/keys", {"keys": _encode(keys)},
                            timeout=CALL_TIMEOUT)
    want = [fingerprint(k) for k in keys]
    if not isinstance(ans, dict) or ans.get("keys") != want:
        raise SwarmletError(f"the agent holds {ans.get('keys') if isinstance(ans, dict) else ans}"
                            f" after the update, not {want}")


async def _step(step: str, nodes: Sequence[Node], keys: Sequence[bytes], client: Client,
                results: Dict[str, NodeResult], progress: Optional[Progress]) -> None:
    sem = asyncio.Semaphore(PARALLEL)

    async def one(node: Node) -> None:
        async with sem:
            try:
                await _put(node, keys, client)
            except SwarmletError as exc:
                r = results[node.name]
                r.error = str(exc)
                r.failed_step = r.failed_step or step   # the first step it missed
                if progress:
                    progress(StepEvent(step, node.name, False, str(exc)))
                return
        results[node.name].done.append(step)
        if progress:
            progress(StepEvent(step, node.name, True))

    await asyncio.gather(*(one(n) for n in nodes))


async def rotate(nodes: Sequence[Node], cluster: Optional[clusterlib.Cluster] = None,
                 progress: Optional[Progress] = None, grace: float = 3.0,
                 new_key: Optional[bytes] = None) -> Report:
    """Rotate to a new gossip key on ``nodes`` (or resume an interrupted rotation)."""
    c = cluster or clusterlib.load()
    with _Lock(c):
        old, new, resumed = _plan(c, new_key)
        results = {n.name: NodeResult(n.name) for n in nodes}
        rings = {"add": old + [new], "use": [new] + old, "drop": [new]}
        async with Client.for_cluster(c, timeout=CALL_TIMEOUT, limit=PARALLEL) as client:
            for step in STEPS:
                if step == "drop" and grace > 0:
                    await asyncio.sleep(grace)
                _save_admin_keys(c, rings[step])
                await _step(step, nodes, rings[step], client, results, progress)
        c.path("rotation.json").unlink()
        return Report(fingerprint(new), [fingerprint(k) for k in old if k != new],
                      [results[n.name] for n in nodes], resumed)


async def sync(nodes: Sequence[Node], cluster: Optional[clusterlib.Cluster] = None,
               progress: Optional[Progress] = None) -> Report:
    """Give every node the admin host's current keyring (a node that missed a rotation)."""
    c = cluster or clusterlib.load()
    with _Lock(c):
        if c.path("rotation.json").exists():
            raise ConfigError("a rotation was interrupted: run `swarmlet key rotate` to finish it")
        keys = c.gossip_keys()
        results = {n.name: NodeResult(n.name) for n in nodes}
        async with Client.for_cluster(c, timeout=CALL_TIMEOUT, limit=PARALLEL) as client:
            await _step("sync", nodes, keys, client, results, progress)
        return Report(fingerprint(keys[0]), [], [results[n.name] for n in nodes])
