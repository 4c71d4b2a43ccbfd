"""``python3 -m swarmlet.master --home DIR [--foreground]``: run the master.

Reads the cluster files in DIR (see ``swarmlet.cluster``); with an ``ha.json``
there it is one of the HA masters (``master/ha_runner.py``: etcd, election),
else it opens ``master/state.db``, serves the API on the cluster's master port and runs
the loops until SIGTERM or SIGINT. Logs go to stderr (``swarmlet master
start`` sends them to ``master/master.log``). ``--foreground`` is accepted for
symmetry with ``swarmlet init --foreground``; the process never daemonizes
itself (``swarmlet.master_process`` does that).

``SWARMLET_MASTER_CONFIG`` (JSON) may set some of ``MasterConfig``'s edge timings for
tests and labs: ``edge_ports`` ([http, https] of the master's own LBs), ``acme_interval``,
``acme_order_timeout``, ``challenge_timeout``, ``acme_backoff`` ({base, cap}), and the
relay of routes (``master/relaypush.py``): ``relay_threshold`` (0: never relay),
``relay_seeds``, ``relay_fanout``, ``relay_budget``, ``relay_gap``, ``relay_max_bytes``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import logging
import signal
import sys
from pathlib import Path
from typing import List, Optional

from .. import __version__
from ..shipped.exceptions import SwarmletError
from . import gctune
from .acmeplan import Backoff
from .daemon import MasterConfig
from ..ha import config as haconfig
from .runner import run_master


def config_from_env(text: Optional[str]) -> MasterConfig:
    """``MasterConfig`` with what ``SWARMLET_MASTER_CONFIG`` sets (see the docstring)."""
    cfg = MasterConfig()
    if not text:
        return cfg
    try:
        data = json.loads(text)
        over: dict = {}
        if "edge_ports" in data:
            http, https = (int(p) for p in data["edge_ports"])
            over["edge_ports"] = (http, https)
        for k in ("acme_interval", "acme_order_timeout", "challenge_timeout", "relay_budget",
                  "relay_gap"):
            if k in data:
                over[k] = float(data[k])
        for k in ("relay_threshold", "relay_seeds", "relay_fanout", "relay_max_bytes"):
            if k in data:
                over[k] = int(data[k])
        if "acme_backoff" in data:
            b = data["acme_backoff"]
            over["acme_backoff"] = Backoff(base=float(b.get("base", 60)), cap=float(b.get("cap", 86400)))
    except (ValueError, TypeError, AttributeError) as exc:
        raise SwarmletError(f"SWARMLET_MASTER_CONFIG: {exc}") from exc
    return dataclasses.replace(cfg, **over)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m swarmlet.master", description=__doc__)
    ap.add_argument("--home", required=True, help="the cluster home ($SWARMLET_HOME)")
    ap.add_argument("--foreground", action="store_true", help="(the default) stay attached")
    ap.add_argument("--bind", default=None, help="listen address (default 127.0.0.1, or 0.0.0.0 "
                    "when the cluster has an advertise address)")
    ap.add_argument("--port", type=int, default=None, help="API port (default from cluster.json)")
    ap.add_argument("--verbose", "-v", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    log = logging.getLogger("swarmlet.master")
    gctune.install()     # a long-lived process with a large heap (gctune.py says why)

    async def go() -> None:
        config = config_from_env(os.environ.get("SWARMLET_MASTER_CONFIG"))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if haconfig.exists(Path(args.home)):     # one of the HA masters (swarmlet master ha)
            # Imported here: etcd3gw is needed (and installed) only where masters are HA.
            from .ha_runner import run_ha_master
            running = await run_ha_master(Path(args.home), config=config)
        else:
            running = await run_master(Path(args.home), bind=args.bind, port=args.port,
                                       config=config)
        log.info("swarmlet master %s listening on %s", __version__, running.url)
        try:
            await stop.wait()
        finally:
            log.info("stopping")
            await running.close()

    try:
        asyncio.run(go())
    except SwarmletError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
