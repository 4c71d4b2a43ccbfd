"""Flooders for the LB floods (bench/lb/flood, the ingress worker tests): run in a
process of their own (``python -m tests.lbconf.flood PORT SECONDS``) so their CPU is
not the measured side's (``python -m tests.lbconf.flood PORT SECONDS [HOST [--window]]``,
host 127.0.0.1 by default). Prints: header bytes, header connections, websocket
bytes, websocket connections.

- ``HEADER_FLOODERS`` connections each sending a 100 MiB header (``X-Flood:
  aaaa...`` with no end), reconnecting when the proxy refuses and cuts them, for
  the whole window;
- ``WS_FLOODERS`` websocket clients sending as fast as they can before their 101
  (each keeps its one connection: a send that blocks is retried).
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from typing import Dict

MIB = 1 << 20
HEADER_FLOODERS = 10
WS_FLOODERS = 10
FLOOD_BYTES = 100 * MIB


def push(host: str, port: int, head: bytes, limit: int, until: float, stats: Dict[str, int],
          patient: bool = False, window: bool = False) -> None:
    """Connect, send ``head`` then filler; when the proxy cuts the connection, connect
    again; stop once ``limit`` bytes went out in all (``window``: ``limit`` per
    connection, go on until ``until``). ``patient``: a send that blocks is retried on
    the same connection."""
    blob = b"a" * (256 * 1024)
    total = 0
    while time.monotonic() < until and (window or total < limit):
        try:
            s = socket.create_connection((host, port), 2)
        except OSError:
            time.sleep(0.01)
            continue
        stats["connections"] += 1
        s.settimeout(0.5)
        sent = 0
        try:
            s.sendall(head)
            while sent < limit and time.monotonic() < until:
                try:
                    n = s.send(blob)
                except socket.timeout:
                    if patient:
                        continue            # backpressure: the proxy is not reading
                    raise
                sent += n
                total += n
                stats["bytes"] += n
                if not window and total >= limit:
                    break
        except OSError:
            stats["cut"] += 1
        finally:
            s.close()


def flood(port: int, seconds: float, host: str = "127.0.0.1", window: bool = False) -> None:
    """``window``: flood for all of ``seconds``; else each flooder stops after 100 MiB
    (the issue's "10 connections each sending a 100 MiB header"), within ``seconds``."""
    until = time.monotonic() + seconds
    header = b"GET / HTTP/1.1\r\nHost: a\r\nX-Flood: "
    ws = (b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
          b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    stats = {"header": {"connections": 0, "bytes": 0, "cut": 0},
             "ws": {"connections": 0, "bytes": 0, "cut": 0}}
    threads = [threading.Thread(target=push, args=(host, port, header, FLOOD_BYTES, until,
                                                    stats["header"], False, window))
               for _ in range(HEADER_FLOODERS)]
    threads += [threading.Thread(target=push, args=(host, port, ws, FLOOD_BYTES, until, stats["ws"],
                                                     True, window))
                for _ in range(WS_FLOODERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(stats["header"]["bytes"], stats["header"]["connections"], stats["ws"]["bytes"],
          stats["ws"]["connections"], flush=True)



if __name__ == "__main__":
    flood(int(sys.argv[1]), float(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "127.0.0.1",
          "--window" in sys.argv[4:])
