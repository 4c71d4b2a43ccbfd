"""Writes held to the end of the loop turn (``lb/outbox.py``), on real sockets and real loops."""

from __future__ import annotations

import asyncio
import socket
from typing import Any, Callable, List, Tuple

import pytest

from swarmlet.shipped.lb.outbox import HeldTransport

pytestmark = pytest.mark.unit

LOOPS = ["asyncio", "uvloop"]


def run(kind: str, main: Callable[[], Any]) -> Any:
    if kind == "uvloop":
        import uvloop
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


async def held_pair() -> Tuple[HeldTransport, socket.socket, asyncio.Protocol]:
    """A held transport on one end of a socket pair; the other end, blocking-free."""
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_unix_connection(asyncio.Protocol, sock=ours)
    return HeldTransport(transport, loop), theirs, proto


async def two_pairs() -> Tuple[HeldTransport, socket.socket, HeldTransport, socket.socket,
                                List[Any]]:
    """Two held pairs on one loop, and the loop's reported errors as they come."""
    errors: List[Any] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    a, peer_a, _ = await held_pair()
    b, peer_b, _ = await held_pair()
    return a, peer_a, b, peer_b, errors


async def turns(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def received(sock: socket.socket) -> List[bytes]:
    """What one read each gives, until nothing more is there."""
    reads = []
    while True:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return reads
        reads.append(data)
        if not data:
            return reads


@pytest.mark.parametrize("kind", LOOPS)
def test_a_turns_writes_leave_together_after_the_turn_in_order(kind: str) -> None:
    async def main() -> None:
        t, peer, _ = await held_pair()
        t.write(b"one ")
        t.writelines([b"two ", b"", b"three"])
        await asyncio.sleep(0.01)           # the turn ended only at the await
        assert received(peer) == [b"one two three"]
        loop = asyncio.get_running_loop()
        loop.call_soon(t.write, b"four")    # a later turn's write goes out on its own
        await turns()
        assert received(peer) == [b"four"]
        t.close()
    run(kind, main)


@pytest.mark.parametrize("kind", LOOPS)
def test_nothing_leaves_before_the_turn_ends(kind: str) -> None:
    async def main() -> None:
        t, peer, _ = await held_pair()
        t.write(b"held")
        assert received(peer) == [] and t.get_write_buffer_size() == 4
        await turns()
        assert received(peer) == [b"held"] and t.get_write_buffer_size() == 0
        t.close()
    run(kind, main)


@pytest.mark.parametrize("kind", LOOPS)
def test_close_sends_what_is_held_first_and_abort_drops_it(kind: str) -> None:
    async def main() -> None:
        t, peer, _ = await held_pair()
        t.write(b"last words")
        t.close()
        await turns()
        assert received(peer) == [b"last words", b""]
        t2, peer2, _ = await held_pair()
        t2.write(b"never")
        t2.abort()
        await turns()
        assert received(peer2) == [b""]
    run(kind, main)


@pytest.mark.parametrize("kind", LOOPS)
def test_bytes_held_for_a_transport_lost_meanwhile_are_dropped_quietly(kind: str) -> None:
    async def main() -> None:
        a, peer_a, b, peer_b, errors = await two_pairs()
        a.write(b"to a")
        a.transport.abort()                 # lost under the holder (as a reset would)
        b.write(b"to b")                    # another connection's bytes in the same turn
        await turns()
        assert received(peer_a) == [b""]
        assert received(peer_b) == [b"to b"]
        a.write(b"late")                    # lost and gone (uvloop: its handle is closed)
        b.write(b"still")
        await turns()
        assert received(peer_b) == [b"still"]
        assert errors == []
        b.close()
    run(kind, main)


@pytest.mark.parametrize("kind", LOOPS)
def test_a_failed_write_cuts_its_own_connection_and_no_other(kind: str) -> None:
    async def main() -> None:
        a, peer_a, b, peer_b, errors = await two_pairs()
        a.transport.write_eof()             # its next write raises (RuntimeError)
        a.write(b"after eof")
        b.write(b"to b")
        await turns()
        assert received(peer_b) == [b"to b"]
        assert a.is_closing() and received(peer_a) == [b""]
        assert [type(e["exception"]) for e in errors] == [RuntimeError]
        b.close()
    run(kind, main)
