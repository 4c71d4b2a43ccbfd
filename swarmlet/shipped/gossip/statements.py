"""What a member signs about itself, and checking it: ``RECORD``, ``ALIVE``, ``LEAVE``.

The signed bytes are a domain tag (so one kind of statement can never pass for
another) followed by the msgpack of the statement's fields without the signature.
Receivers re-encode the fields they decoded: our msgpack encoding is canonical for
the types the wire allows (minimal ints, float64, str, bin, maps in received order).
In a plaintext (test) cluster there is no identity and the signature is empty.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Optional, Union

from .identity import Identity, PeerCert
from .wire import Alive, Leave, Record, packb

_TAG = b"swarmlet gossip v2 "
Statement = Union[Record, Alive, Leave]


def signed_bytes(msg: Statement) -> bytes:
    if type(msg) is Record:
        return _TAG + b"record\0" + packb([msg.name, msg.inc, msg.mver, msg.host, msg.port,
                                           msg.meta])
    kind = b"alive\0" if type(msg) is Alive else b"leave\0"
    return _TAG + kind + packb([msg.name, msg.inc])


def record(identity: Optional[Identity], name: str, inc: int, mver: int, host: str, port: int,
           meta: Dict[str, Any]) -> Record:
    unsigned = Record(name, inc, mver, host, port, meta, b"")
    return unsigned if identity is None else unsigned._replace(sig=identity.sign(
        signed_bytes(unsigned)))


def alive(identity: Optional[Identity], name: str, inc: int) -> Alive:
    unsigned = Alive(name, inc, b"")
    return unsigned if identity is None else Alive(name, inc, identity.sign(
        signed_bytes(unsigned)))


def leave(identity: Optional[Identity], name: str, inc: int) -> Leave:
    unsigned = Leave(name, inc, b"")
    return unsigned if identity is None else Leave(name, inc, identity.sign(
        signed_bytes(unsigned)))


def verify(certs: Iterable[PeerCert], msg: Statement) -> Optional[PeerCert]:
    """The certificate (of the statement's subject) whose key signed ``msg``, or None."""
    data = signed_bytes(msg)
    for pc in certs:
        if pc.name == msg.name and pc.verify(data, msg.sig):
            return pc
    return None
