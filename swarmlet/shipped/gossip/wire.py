"""The gossip wire format (version 2): framing, encoding and strict validation.

A packet (the plaintext inside the envelope of ``crypto``) is::

    byte    (WIRE_VERSION << 4) | type
    msgpack [sender, stamp, body]

``stamp`` is the sender's clock: ``(unix ms << 12) | n``, strictly increasing per
sender, across restarts too (``Stamper``). Receivers refuse a stamp more than the
allowed clock skew away from their own clock, and one they have seen (``replay``).
For a single message ``body`` is its field list; for ``COMPOUND`` it is a list of
``[type, fields]`` pairs, so several messages share one UDP payload. Fields are
positional lists. Every field is type- and range-checked; anything off raises
``ProtocolError`` (the caller drops and counts the packet). A packet of another wire
version raises ``VersionMismatch``. Unknown message types are skipped, not errors,
so newer peers can add messages.

What a member says about itself is signed by it (``statements``) and relayed as is:

- ``RECORD [name, inc, mver, host, port, meta, sig]``: who it is, where, and its
  metadata at metadata version ``mver``; also "alive at incarnation ``inc``".
- ``ALIVE [name, inc, sig]``: alive at ``inc``: a refutation carries this, not the
  record (metadata is versioned apart from liveness).
- ``LEAVE [name, inc, sig]``: a graceful leave.

What members say about others is not signed, and is bounded by what the subject
signed (the core refuses a higher incarnation): ``SUSPECT``/``DEAD [name, inc,
frm]``. Incarnations are at most ``INC_MAX``, accusations at most ``INC_MAX - 1``,
so a refutation (accused + 1) always fits.

Push-pull carries digests ``[name, inc, state, mver]``; a receiver that is behind
answers ``PULL [names]`` (and ``CERT_REQ [names]`` for certificates it lacks) and
gets the signed statements (and ``CERT [der]``) back.

Broadcasts are pre-encoded once as ``Item``s (type + packed fields) and spliced
into packets without re-encoding; ``pack_items`` knows the exact byte cost.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, NamedTuple, Optional

import msgpack

from ..exceptions import ProtocolError

WIRE_VERSION = 2

PING = 1
INDIRECT_PING = 2
ACK = 3
NACK = 4
SUSPECT = 5
ALIVE = 6
DEAD = 7
PUSH_PULL = 8
COMPOUND = 9
PULL = 10
RECORD = 11
LEAVE = 12
CERT_REQ = 13
CERT = 14

TYPE_NAMES = {PING: "ping", INDIRECT_PING: "indirect_ping", ACK: "ack", NACK: "nack",
              SUSPECT: "suspect", ALIVE: "alive", DEAD: "dead", PUSH_PULL: "push_pull",
              COMPOUND: "compound", PULL: "pull", RECORD: "record", LEAVE: "leave",
              CERT_REQ: "cert_req", CERT: "cert"}

# Member states as sent in push-pull entries.
ST_ALIVE, ST_SUSPECT, ST_DEAD, ST_LEFT = 0, 1, 2, 3

MAX_DATAGRAM = 16384        # larger plaintext is refused before msgpack sees it
MAX_NAME = 128
MAX_HOST = 255
MAX_META_KEYS = 32
MAX_META_STR = 256
MAX_META_BYTES = 512        # memberlist's MetaMaxSize
MAX_COMPOUND = 255
MAX_ENTRIES = 1024          # push-pull entries per packet
MAX_CERT = 2048             # DER bytes; ours are about 480
MAX_INT = (1 << 63) - 1
INC_MAX = (1 << 53) - 1     # incarnations and metadata versions (exact in JSON too)
SIG_SIZE = 64               # ECDSA P-256, raw r || s
STAMP_SHIFT = 12            # stamp = unix ms << 12 | counter
HEADER_OVERHEAD = 1 + 1 + 9 + 3  # type byte, array header, stamp, compound array header
ITEM_OVERHEAD = 2                # [type, fields] pair header


class VersionMismatch(ProtocolError):
    """A packet of another gossip wire version (a peer running another swarmlet)."""

    def __init__(self, version: int) -> None:
        super().__init__(f"gossip wire version {version}, this node speaks {WIRE_VERSION}")
        self.version = version


class Ping(NamedTuple):
    seq: int
    target: str


class IndirectPing(NamedTuple):
    """Ask the receiver to ping ``target`` (at the address it knows) for us."""

    seq: int
    target: str
    nack: bool


class Ack(NamedTuple):
    seq: int


class Nack(NamedTuple):
    seq: int


class Record(NamedTuple):
    name: str
    inc: int
    mver: int
    host: str
    port: int
    meta: Dict[str, Any]
    sig: bytes


class Alive(NamedTuple):
    name: str
    inc: int
    sig: bytes


class Leave(NamedTuple):
    name: str
    inc: int
    sig: bytes


class Suspect(NamedTuple):
    name: str
    inc: int
    frm: str


class Dead(NamedTuple):
    name: str
    inc: int
    frm: str


class Entry(NamedTuple):
    """A push-pull digest entry."""

    name: str
    inc: int
    state: int
    mver: int


class PushPull(NamedTuple):
    join: bool
    reply: bool
    part: int
    entries: List[Entry]


class Pull(NamedTuple):
    """Ask for the signed statements (record, liveness) of these members."""

    names: List[str]


class CertReq(NamedTuple):
    """Ask for the certificates of these members."""

    names: List[str]


class Cert(NamedTuple):
    der: bytes


class Item(NamedTuple):
    """A pre-encoded message: ``type`` and its packed field list."""

    type: int
    fields: bytes

    @property
    def cost(self) -> int:
        return len(self.fields) + ITEM_OVERHEAD


class Packet(NamedTuple):
    sender: str
    stamp: int
    messages: List[Any]   # decoded NamedTuples; unknown types already skipped
    unknown: int          # how many unknown-type messages were skipped


# --- encoding -------------------------------------------------------------------

_packb = msgpack.Packer(use_bin_type=True).pack


def packb(obj: Any) -> bytes:
    return _packb(obj)


def item(msg: Any) -> Item:
    """Encode one message (a NamedTuple above) as an ``Item``."""
    t = _TYPE_OF[type(msg)]
    if t == PUSH_PULL:
        fields = [msg.join, msg.reply, msg.part, [list(e) for e in msg.entries]]
    elif t in (PULL, CERT_REQ):
        fields = [list(msg.names)]
    else:
        fields = list(msg)
    return Item(t, _packb(fields))


def entry_cost(e: Entry) -> int:
    return len(_packb(list(e)))


class Header:
    """The constant part of a sender's packets, packed once."""

    def __init__(self, sender: str) -> None:
        self.sender = sender
        self.prefix = _packb(sender)


class Stamper:
    """Packet stamps: ``(unix ms << 12) | n``, strictly increasing.

    Time-based, so a restarted sender is ahead of its old packets without any state
    kept; ``max(last + 1, ...)`` keeps them unique within a millisecond and when the
    wall clock steps back.
    """

    def __init__(self) -> None:
        self.last = 0

    def next(self, wall: float) -> int:
        s = max(self.last + 1, int(wall * 1000) << STAMP_SHIFT)
        self.last = s
        return s


def stamp_time(stamp: int) -> float:
    """The sender's clock (unix seconds) when it stamped the packet."""
    return (stamp >> STAMP_SHIFT) / 1000.0


def pack_items(header: Header, stamp: int, items: List[Item]) -> bytes:
    """One packet carrying ``items`` (at least one)."""
    if len(items) == 1:
        it = items[0]
        return b"".join((bytes(((WIRE_VERSION << 4) | it.type, 0x93)), header.prefix,
                         _packb(stamp), it.fields))
    parts = [bytes(((WIRE_VERSION << 4) | COMPOUND, 0x93)), header.prefix, _packb(stamp),
             _array_header(len(items))]
    for it in items:
        parts.append(bytes((0x92, it.type)))
        parts.append(it.fields)
    return b"".join(parts)


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    return b"\xdc" + n.to_bytes(2, "big")


def budget(header: Header, udp_size: int, overhead: int) -> int:
    """Bytes left for items in one datagram of ``udp_size`` after framing."""
    return udp_size - overhead - HEADER_OVERHEAD - len(header.prefix)


# --- decoding -------------------------------------------------------------------

def decode_packet(data: bytes) -> Packet:
    """Parse and validate a plaintext packet, or raise ``ProtocolError``."""
    if len(data) < 2:
        raise ProtocolError("packet too short")
    if len(data) > MAX_DATAGRAM:
        raise ProtocolError("packet too large")
    tb = data[0]
    if tb >> 4 != WIRE_VERSION:
        raise VersionMismatch(tb >> 4)
    t = tb & 0x0F
    try:
        # unpackb bounds string/array/map lengths by the input size on its own.
        obj = msgpack.unpackb(data[1:], raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises many kinds (ExtraData, ValueError, UnicodeDecodeError…)
        raise ProtocolError(f"undecodable packet: {type(exc).__name__}") from exc
    if type(obj) is not list or len(obj) != 3:
        raise ProtocolError("bad packet header")
    sender, stamp, body = obj
    _name(sender, "sender")
    _int(stamp, "stamp")
    messages: List[Any] = []
    unknown = 0
    if t == COMPOUND:
        if type(body) is not list or not 1 <= len(body) <= MAX_COMPOUND:
            raise ProtocolError("bad compound body")
        for part in body:
            if type(part) is not list or len(part) != 2 or type(part[0]) is not int:
                raise ProtocolError("bad compound part")
            pt = part[0]
            if pt == COMPOUND:
                raise ProtocolError("nested compound")
            msg = _decode_one(pt, part[1])
            if msg is None:
                unknown += 1
            else:
                messages.append(msg)
    else:
        msg = _decode_one(t, body)
        if msg is None:
            unknown += 1
        else:
            messages.append(msg)
    return Packet(sender, stamp, messages, unknown)


def _decode_one(t: int, f: Any) -> Optional[Any]:
    dec = _DECODERS.get(t)
    if dec is None:
        return None
    if type(f) is not list:
        raise ProtocolError(f"{TYPE_NAMES.get(t, t)}: fields must be a list")
    return dec(f)


def _arity(f: List[Any], n: int, what: str) -> None:
    # Newer peers may append fields; fewer than we need is malformed.
    if len(f) < n:
        raise ProtocolError(f"{what}: expected {n} fields, got {len(f)}")


def _int(v: Any, what: str, lo: int = 0, hi: int = MAX_INT) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise ProtocolError(f"{what}: bad integer")
    return v


def _inc(v: Any, what: str) -> int:
    return _int(v, what, 0, INC_MAX)


def _accused_inc(v: Any, what: str) -> int:
    # One below the bound: the subject's refutation (accused + 1) must still fit.
    return _int(v, what, 0, INC_MAX - 1)


def _bool(v: Any, what: str) -> bool:
    if type(v) is not bool:
        raise ProtocolError(f"{what}: expected a boolean")
    return v


def _name(v: Any, what: str) -> str:
    # Printable only: names reach logs, events and the master's node table.
    if type(v) is not str or not 0 < len(v) <= MAX_NAME or not v.isprintable():
        raise ProtocolError(f"{what}: bad name")
    return v


def _host(v: Any, what: str) -> str:
    if type(v) is not str or not 0 < len(v) <= MAX_HOST or not v.isprintable():
        raise ProtocolError(f"{what}: bad host")
    return v


def _port(v: Any, what: str) -> int:
    return _int(v, what, 0, 65535)


def _sig(v: Any, what: str) -> bytes:
    # Empty only in plaintext (test) clusters; the core requires a signature otherwise.
    if type(v) is not bytes or len(v) not in (0, SIG_SIZE):
        raise ProtocolError(f"{what}: bad signature")
    return v


_SCALARS = (str, int, float, bool, type(None))


def check_meta(v: Any, what: str = "meta") -> Dict[str, Any]:
    """Node metadata: a flat map of short keys to scalars or to maps of scalars."""
    if type(v) is not dict or len(v) > MAX_META_KEYS:
        raise ProtocolError(f"{what}: expected a map of at most {MAX_META_KEYS} keys")
    for k, x in v.items():
        if type(k) is not str or len(k) > 64:
            raise ProtocolError(f"{what}: bad key")
        if type(x) is dict:
            if len(x) > MAX_META_KEYS:
                raise ProtocolError(f"{what}.{k}: too many keys")
            for k2, x2 in x.items():
                if type(k2) is not str or len(k2) > 64 or not _scalar(x2):
                    raise ProtocolError(f"{what}.{k}: bad entry")
        elif not _scalar(x):
            raise ProtocolError(f"{what}.{k}: bad value")
    return v


def _scalar(x: Any) -> bool:
    tx = type(x)
    if tx is str:
        return len(x) <= MAX_META_STR
    if tx is float:
        return math.isfinite(x)
    if tx is int:
        return -MAX_INT - 1 <= x <= MAX_INT
    return tx in _SCALARS


def meta_size(meta: Dict[str, Any]) -> int:
    return len(_packb(meta))


def _ping(f: List[Any]) -> Ping:
    _arity(f, 2, "ping")
    return Ping(_int(f[0], "ping.seq"), _name(f[1], "ping.target"))


def _indirect(f: List[Any]) -> IndirectPing:
    _arity(f, 3, "indirect_ping")
    return IndirectPing(_int(f[0], "seq"), _name(f[1], "target"), _bool(f[2], "nack"))


def _ack(f: List[Any]) -> Ack:
    _arity(f, 1, "ack")
    return Ack(_int(f[0], "ack.seq"))


def _nack(f: List[Any]) -> Nack:
    _arity(f, 1, "nack")
    return Nack(_int(f[0], "nack.seq"))


def _record(f: List[Any]) -> Record:
    _arity(f, 7, "record")
    meta = check_meta(f[5], "record.meta")
    if meta_size(meta) > MAX_META_BYTES:
        raise ProtocolError("record.meta: too large")
    return Record(_name(f[0], "record.name"), _inc(f[1], "record.inc"),
                  _inc(f[2], "record.mver"), _host(f[3], "record.host"),
                  _port(f[4], "record.port"), meta, _sig(f[6], "record.sig"))


def _alive(f: List[Any]) -> Alive:
    _arity(f, 3, "alive")
    return Alive(_name(f[0], "alive.name"), _inc(f[1], "alive.inc"), _sig(f[2], "alive.sig"))


def _leave(f: List[Any]) -> Leave:
    _arity(f, 3, "leave")
    return Leave(_name(f[0], "leave.name"), _inc(f[1], "leave.inc"), _sig(f[2], "leave.sig"))


def _suspect(f: List[Any]) -> Suspect:
    _arity(f, 3, "suspect")
    return Suspect(_name(f[0], "suspect.name"), _accused_inc(f[1], "suspect.inc"),
                   _name(f[2], "suspect.from"))


def _dead(f: List[Any]) -> Dead:
    _arity(f, 3, "dead")
    return Dead(_name(f[0], "dead.name"), _accused_inc(f[1], "dead.inc"),
                _name(f[2], "dead.from"))


def _push_pull(f: List[Any]) -> PushPull:
    _arity(f, 4, "push_pull")
    raw = f[3]
    if type(raw) is not list or len(raw) > MAX_ENTRIES:
        raise ProtocolError("push_pull.entries: bad list")
    entries = []
    for e in raw:
        if type(e) is not list or len(e) < 4:
            raise ProtocolError("push_pull entry: bad shape")
        state = _int(e[2], "entry.state", 0, ST_LEFT)
        inc = _accused_inc(e[1], "entry.inc") if state in (ST_SUSPECT, ST_DEAD) \
            else _inc(e[1], "entry.inc")
        entries.append(Entry(_name(e[0], "entry.name"), inc, state, _inc(e[3], "entry.mver")))
    return PushPull(_bool(f[0], "join"), _bool(f[1], "reply"), _int(f[2], "part", 0, 1 << 20),
                    entries)


def _names(f: List[Any], what: str) -> List[str]:
    _arity(f, 1, what)
    raw = f[0]
    if type(raw) is not list or len(raw) > MAX_ENTRIES:
        raise ProtocolError(f"{what}.names: bad list")
    return [_name(n, f"{what}.name") for n in raw]


def _pull(f: List[Any]) -> Pull:
    return Pull(_names(f, "pull"))


def _cert_req(f: List[Any]) -> CertReq:
    return CertReq(_names(f, "cert_req"))


def _cert(f: List[Any]) -> Cert:
    _arity(f, 1, "cert")
    if type(f[0]) is not bytes or not 0 < len(f[0]) <= MAX_CERT:
        raise ProtocolError("cert: bad certificate bytes")
    return Cert(f[0])


_DECODERS = {PING: _ping, INDIRECT_PING: _indirect, ACK: _ack, NACK: _nack, SUSPECT: _suspect,
             ALIVE: _alive, DEAD: _dead, PUSH_PULL: _push_pull, PULL: _pull, RECORD: _record,
             LEAVE: _leave, CERT_REQ: _cert_req, CERT: _cert}
_TYPE_OF = {Ping: PING, IndirectPing: INDIRECT_PING, Ack: ACK, Nack: NACK, Suspect: SUSPECT,
            Alive: ALIVE, Dead: DEAD, PushPull: PUSH_PULL, Pull: PULL, Record: RECORD,
            Leave: LEAVE, CertReq: CERT_REQ, Cert: CERT}


def chunk_names(names: List[str], room: int) -> List[List[str]]:
    """Split names into groups whose encoding fits ``room`` bytes."""
    chunks: List[List[str]] = []
    cur: List[str] = []
    used = 8
    for n in names:
        c = len(n.encode("utf-8")) + 3
        if cur and (used + c > room or len(cur) >= MAX_ENTRIES):
            chunks.append(cur)
            cur, used = [], 8
        cur.append(n)
        used += c
    if cur:
        chunks.append(cur)
    return chunks


def chunk_entries(entries: List[Entry], room: int) -> List[List[Entry]]:
    """Split push-pull entries into groups whose encoding fits ``room`` bytes."""
    chunks: List[List[Entry]] = []
    cur: List[Entry] = []
    used = 16  # push_pull field list header, flags, part, entries array header
    for e in entries:
        c = entry_cost(e)
        if cur and (used + c > room or len(cur) >= MAX_ENTRIES):
            chunks.append(cur)
            cur, used = [], 16
        cur.append(e)
        used += c
    if cur:
        chunks.append(cur)
    return chunks
