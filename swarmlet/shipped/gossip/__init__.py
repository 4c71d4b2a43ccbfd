"""Gossip membership: SWIM + Lifeguard over UDP, msgpack wire, AES-256-GCM.

- ``core``: the sans-I/O protocol (``GossipCore``); ``sim``: a simulated network for it.
- ``wire``: packet format and validation; ``crypto``: the keyring; ``replay``: anti-replay.
- ``transport``: ``start_gossip(...) -> GossipNode``, the asyncio UDP driver the agent runs.

This package is shipped to agents: Python 3.9, no click, no asyncssh.
"""

from .config import DEFAULT_PORT, GossipConfig
from .crypto import Keyring, generate_key
from .members import EventKind, Member, MemberEvent, MemberState

__all__ = ["DEFAULT_PORT", "GossipConfig", "Keyring", "generate_key", "EventKind", "Member",
           "MemberEvent", "MemberState", "GossipNode", "start_gossip"]


def __getattr__(name: str):  # transport pulls in asyncio; load it only when asked for
    if name in ("GossipNode", "start_gossip"):
        from . import transport
        return getattr(transport, name)
    raise AttributeError(name)
