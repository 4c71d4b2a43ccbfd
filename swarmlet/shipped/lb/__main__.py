"""``python -m swarmlet.shipped.lb``: run one load balancer in the foreground.

For the benchmark and for debugging; the master and agents embed
``LoadBalancer`` instead. Uses uvloop when it is importable (``--no-uvloop``
to compare): uvloop is MagicStack's libuv loop, the same people as httptools
and asyncpg, maintained for years and uvicorn's default; on this proxy it
roughly halves the per-request loop overhead (figures in bench/lb).

``--tls-cert FILE --tls-key FILE`` runs the edge instead (``shipped/edge.py``: the
TLS listener on ``--listen``, SNI, host routing to one service that is also the
default), as every node's ingress serves HTTPS, for the TLS rows of bench/lb.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import List

from . import Backend, HealthConfig, LBConfig, LoadBalancer
from ..exceptions import SwarmletError


def _backend(text: str) -> Backend:
    host, _, port = text.rpartition(":")
    return Backend(host.strip("[]") or "127.0.0.1", int(port), health_path="/")


async def _serve_tls(args: argparse.Namespace) -> None:
    from ..edge import Edge
    from ..models import EdgeCert, EdgeUpdate, Route, RouteBackend
    host, _, port = args.listen.rpartition(":")
    with open(args.tls_cert) as fh_c, open(args.tls_key) as fh_k:
        cert = EdgeCert("bench", ("bench.test",), fh_c.read(), fh_k.read())
    http_port = int(args.http_port or 0)
    edge = Edge(host or "0.0.0.0", http_port=http_port, https_port=int(port))
    await edge.configure(EdgeUpdate(1, http_port=http_port, https_port=int(port),
                                    default_service="bench", certs=(cert,)))
    backends = tuple(RouteBackend(f"b{i}", "n", *_split(b)) for i, b in enumerate(args.backend))
    await edge.apply([Route("bench", None, 80, None, backends=backends, hosts=("bench.test",),
                            tls="manual", redirect=False)])
    print(f"swarmlet-lb (TLS edge) listening on {edge.bound()}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await edge.close()


def _split(text: str):
    host, _, port = text.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


async def _serve(args: argparse.Namespace) -> None:
    if args.tls_cert:
        await _serve_tls(args)
        return
    host, _, port = args.listen.rpartition(":")
    config = LBConfig(policy=args.policy,
                      health=HealthConfig(enabled=not args.no_health_checks))
    lb = LoadBalancer(host or "0.0.0.0", int(port), config, admin_port=args.admin_port)
    lb.set_backends(_backend(b) for b in args.backend)
    await lb.start()
    print(f"swarmlet-lb listening on {lb.name}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await lb.stop()


def main(argv: List[str] = sys.argv[1:]) -> int:
    ap = argparse.ArgumentParser(prog="python -m swarmlet.shipped.lb")
    ap.add_argument("--listen", default="0.0.0.0:8080", help="host:port")
    ap.add_argument("--backend", action="append", default=[], help="host:port (repeat)")
    ap.add_argument("--policy", default="round_robin", choices=["round_robin", "least_conn"])
    ap.add_argument("--admin-port", type=int, default=None)
    ap.add_argument("--no-health-checks", action="store_true")
    ap.add_argument("--no-uvloop", action="store_true")
    ap.add_argument("--tls-cert", help="serve HTTPS as the edge does, with this PEM chain")
    ap.add_argument("--tls-key", help="its key (PEM)")
    ap.add_argument("--http-port", help="with --tls-cert: also plain HTTP on this port")
    args = ap.parse_args(argv)
    run = asyncio.run
    if not args.no_uvloop:
        try:
            import uvloop
            run = uvloop.run
        except ImportError:
            pass
    try:
        run(_serve(args))
    except SwarmletError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
