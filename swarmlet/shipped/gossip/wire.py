"""The gossip wire format: framing, encoding and strict validation.

A packet (the plaintext inside the AES-GCM envelope) is::

    byte    (WIRE_VERSION << 4) | type
    msgpack [sender, epoch, seq, body]

``sender``/``epoch``/``seq`` feed the receiver's anti-replay window. For a single
message ``body`` is that message's field list; for ``COMPOUND`` it is a list of
``[type, fields]`` pairs, so several messages share one UDP payload. Fields are
positional lists (smaller than maps). Every field is type- and range-checked;
anything off raises ``ProtocolError`` (the caller drops and counts the packet).
Unknown message types are skipped, not errors, so newer peers can add messages.

Push-pull carries digests ``[name, host, port, inc, state]``; a receiver that is
behind answers with ``PULL [names]`` and gets full ``ALIVE`` messages back, so
anti-entropy does not resend every member's metadata each period.

Broadcasts are pre-encoded once as ``Item``s (type + packed fields) and spliced
into packets without re-encoding; ``pack_items`` knows the exact byte cost.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, NamedTuple, Optional

import msgpack

from ..exceptions import ProtocolError

WIRE_VERSION = 1

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

TYPE_NAMES = {PING: "ping", INDIRECT_PING: "indirect_ping", ACK: "ack", NACK: "nack",
              SUSPECT: "suspect", ALIVE: "alive", DEAD: "dead", PUSH_PULL: "push_pull",
              COMPOUND: "compound", PULL: "pull"}

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
MAX_INT = (1 << 63) - 1
HEADER_OVERHEAD = 1 + 1 + 9 + 3  # type byte, array header, seq (worst), compound array header
ITEM_OVERHEAD = 2                # [type, fields] pair header


class Ping(NamedTuple):
    seq: int
    target: str


class IndirectPing(NamedTuple):
    seq: int
    target: str
    host: str
    port: int
    nack: bool


class Ack(NamedTuple):
    seq: int


class Nack(NamedTuple):
    seq: int


class Alive(NamedTuple):
    inc: int
    name: str
    host: str
    port: int
    meta: Dict[str, Any]


class Suspect(NamedTuple):
    inc: int
    name: str
    frm: str


class Dead(NamedTuple):
    inc: int
    name: str
    frm: str   # == name: a graceful leave


class Entry(NamedTuple):
    """A push-pull entry. Push-pull sends digests (``meta`` None); the receiver
    pulls the full ``Alive`` of members it is behind on."""

    name: str
    host: str
    port: int
    inc: int
    state: int
    meta: Optional[Dict[str, Any]] = None


class PushPull(NamedTuple):
    join: bool
    reply: bool
    part: int
    entries: List[Entry]


class Pull(NamedTuple):
    """Ask for the full ``Alive`` (with metadata) of these members."""

    names: List[str]


class Item(NamedTuple):
    """A pre-encoded message: ``type`` and its packed field list."""

    type: int
    fields: bytes

    @property
    def cost(self) -> int:
        return len(self.fields) + ITEM_OVERHEAD


class Packet(NamedTuple):
    sender: str
    epoch: int
    seq: int
    messages: List[Any]   # decoded NamedTuples; unknown types already skipped
    unknown: int          # how many unknown-type messages were skipped


# --- encoding -------------------------------------------------------------------

_packb = msgpack.Packer(use_bin_type=True).pack


def item(msg: Any) -> Item:
    """Encode one message (a NamedTuple above) as an ``Item``."""
    t = _TYPE_OF[type(msg)]
    if t == PUSH_PULL:
        fields = [msg.join, msg.reply, msg.part, [_entry_fields(e) for e in msg.entries]]
    elif t == PULL:
        fields = [list(msg.names)]
    else:
        fields = list(msg)
    return Item(t, _packb(fields))


def _entry_fields(e: Entry) -> List[Any]:
    return list(e) if e.meta is not None else list(e[:5])


def entry_cost(e: Entry) -> int:
    return len(_packb(_entry_fields(e)))


class Header:
    """The constant part of a sender's packets, packed once."""

    def __init__(self, sender: str, epoch: int) -> None:
        self.sender = sender
        self.epoch = epoch
        self.prefix = _packb(sender) + _packb(epoch)


def pack_items(header: Header, seq: int, items: List[Item]) -> bytes:
    """One packet carrying ``items`` (at least one)."""
    if len(items) == 1:
        it = items[0]
        return b"".join((bytes(((WIRE_VERSION << 4) | it.type, 0x94)), header.prefix,
                         _packb(seq), it.fields))
    parts = [bytes(((WIRE_VERSION << 4) | COMPOUND, 0x94)), header.prefix, _packb(seq),
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
        raise ProtocolError(f"unsupported wire version {tb >> 4}")
    t = tb & 0x0F
    try:
        # unpackb bounds string/array/map lengths by the input size on its own.
        obj = msgpack.unpackb(data[1:], raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises many kinds (ExtraData, ValueError, UnicodeDecodeError…)
        raise ProtocolError(f"undecodable packet: {type(exc).__name__}") from exc
    if type(obj) is not list or len(obj) != 4:
        raise ProtocolError("bad packet header")
    sender, epoch, seq, body = obj
    _name(sender, "sender")
    _int(epoch, "epoch")
    _int(seq, "seq")
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
    return Packet(sender, epoch, seq, messages, unknown)


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


def _bool(v: Any, what: str) -> bool:
    if type(v) is not bool:
        raise ProtocolError(f"{what}: expected a boolean")
    return v


def _name(v: Any, what: str) -> str:
    if type(v) is not str or not 0 < len(v) <= MAX_NAME:
        raise ProtocolError(f"{what}: bad name")
    return v


def _host(v: Any, what: str) -> str:
    if type(v) is not str or not 0 < len(v) <= MAX_HOST:
        raise ProtocolError(f"{what}: bad host")
    return v


def _port(v: Any, what: str) -> int:
    return _int(v, what, 0, 65535)


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
    return tx in _SCALARS


def meta_size(meta: Dict[str, Any]) -> int:
    return len(_packb(meta))


def _ping(f: List[Any]) -> Ping:
    _arity(f, 2, "ping")
    return Ping(_int(f[0], "ping.seq"), _name(f[1], "ping.target"))


def _indirect(f: List[Any]) -> IndirectPing:
    _arity(f, 5, "indirect_ping")
    return IndirectPing(_int(f[0], "seq"), _name(f[1], "target"), _host(f[2], "host"),
                        _port(f[3], "port"), _bool(f[4], "nack"))


def _ack(f: List[Any]) -> Ack:
    _arity(f, 1, "ack")
    return Ack(_int(f[0], "ack.seq"))


def _nack(f: List[Any]) -> Nack:
    _arity(f, 1, "nack")
    return Nack(_int(f[0], "nack.seq"))


def _alive(f: List[Any]) -> Alive:
    _arity(f, 5, "alive")
    return Alive(_int(f[0], "alive.inc"), _name(f[1], "alive.name"), _host(f[2], "alive.host"),
                 _port(f[3], "alive.port"), check_meta(f[4], "alive.meta"))


def _suspect(f: List[Any]) -> Suspect:
    _arity(f, 3, "suspect")
    return Suspect(_int(f[0], "suspect.inc"), _name(f[1], "suspect.name"),
                   _name(f[2], "suspect.from"))


def _dead(f: List[Any]) -> Dead:
    _arity(f, 3, "dead")
    return Dead(_int(f[0], "dead.inc"), _name(f[1], "dead.name"), _name(f[2], "dead.from"))


def _push_pull(f: List[Any]) -> PushPull:
    _arity(f, 4, "push_pull")
    raw = f[3]
    if type(raw) is not list or len(raw) > MAX_ENTRIES:
        raise ProtocolError("push_pull.entries: bad list")
    entries = []
    for e in raw:
        if type(e) is not list or len(e) < 5:
            raise ProtocolError("push_pull entry: bad shape")
        meta = None if len(e) == 5 or e[5] is None else check_meta(e[5], "entry.meta")
        entries.append(Entry(_name(e[0], "entry.name"), _host(e[1], "entry.host"),
                             _port(e[2], "entry.port"), _int(e[3], "entry.inc"),
                             _int(e[4], "entry.state", 0, ST_LEFT), meta))
    return PushPull(_bool(f[0], "join"), _bool(f[1], "reply"), _int(f[2], "part", 0, 1 << 20),
                    entries)


def _pull(f: List[Any]) -> Pull:
    _arity(f, 1, "pull")
    raw = f[0]
    if type(raw) is not list or len(raw) > MAX_ENTRIES:
        raise ProtocolError("pull.names: bad list")
    return Pull([_name(n, "pull.name") for n in raw])


_DECODERS = {PING: _ping, INDIRECT_PING: _indirect, ACK: _ack, NACK: _nack, SUSPECT: _suspect,
             ALIVE: _alive, DEAD: _dead, PUSH_PULL: _push_pull, PULL: _pull}
_TYPE_OF = {Ping: PING, IndirectPing: INDIRECT_PING, Ack: ACK, Nack: NACK, Suspect: SUSPECT,
            Alive: ALIVE, Dead: DEAD, PushPull: PUSH_PULL, Pull: PULL}


def chunk_names(names: List[str], room: int) -> List[List[str]]:
    """Split pull names into groups whose encoding fits ``room`` bytes."""
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
        if cur and used + c > room:
            chunks.append(cur)
            cur, used = [], 16
        cur.append(e)
        used += c
    if cur:
        chunks.append(cur)
    return chunks
