"""Wire a running master from a cluster home: files -> store -> daemon -> API.

``run_master(home)`` loads ``cluster.json`` and the certificates through
``swarmlet.cluster`` (the module ``swarmlet init`` writes them with, so both
sides agree), opens ``master/state.db``, starts the daemon with the nodes of
``nodes.json`` as seeds (nodes joined while the master was down), and serves
the API with the ``master`` certificate. Tests call it on a temp home.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from .. import cluster as clusterlib
from ..client import Client
from ..shipped import tlsutil
from ..shipped.exceptions import ConfigError
from .api import serve
from .daemon import Master, MasterConfig
from .dashboard.server import start_dashboard
from .store import Store, open_store
from .vault import load_key as load_vault_key
from ..shipped.lb import sticky_key_from
from ..shipped.lb.workers import ingress_for


log = logging.getLogger("swarmlet.master")


def _renew_local(c: clusterlib.Cluster, master: Master) -> List[str]:
    """Renew this host's master/cli certificates if due, into the servers' contexts. Blocking."""
    renewed = c.renew_local_certs()
    if "master" in renewed:
        for ctx in master.tls_contexts:    # the API's and the dashboard's: new handshakes use it
            ctx.load_cert_chain(str(c.path("master.crt")), str(c.path("master.key")))
    return renewed


@dataclass
class RunningMaster:
    master: Master
    runner: Any
    url: str
    store: Store
    dashboard: Any = None   # the dashboard's runner (master/dashboard/server.py), if served

    async def close(self) -> None:
        if self.dashboard is not None:
            await self.dashboard.cleanup()
        await self.runner.cleanup()
        await self.master.close()
        self.store.close()


# The master's connections to agents. No cap on the pool below the node count (a watch is
# held open on every node; aiohttp's default of 256 would queue the rest behind them), and
# keepalives so a watch on a host that died silently is cut (poller.py). Idle connections
# are kept 60 s, not aiohttp's 15: at 1,000 nodes each node's stats are asked every 25 s,
# and a new TLS handshake for each (40 a second) was a quarter of the idle master's CPU
# (bench/scale, profiled); agents close theirs after 75 s. The HA masters use it too.
AGENT_POOL: Dict[str, Any] = {"limit": 0, "keepalive": True, "idle_close": 60.0}


def raise_fd_limit() -> int:
    """Lift the soft limit on open files to the hard one: the master holds a connection to
    every node (a watch, plus pushes), so 1,024 (a common default) is too few past ~500
    nodes. Returns the soft limit now."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY:
            hard = 1 << 20
        if soft != resource.RLIM_INFINITY and soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, ValueError, OSError):   # not POSIX, or not allowed: keep what we have
        return -1


async def run_master(home: Path, bind: Optional[str] = None, port: Optional[int] = None,
                     config: MasterConfig = MasterConfig()) -> RunningMaster:
    c = clusterlib.load(home)
    raise_fd_limit()
    signer = c.signer()
    try:
        renewed = await asyncio.to_thread(c.renew_local_certs)   # master/cli certs due: before loading
    except ConfigError as exc:   # no CA key on this host: run with the certificates there are
        log.warning("cannot renew this host's certificates: %s", exc)
        renewed = []
    denylist = await asyncio.to_thread(signer.denylist)      # one live list for every context
    try:
        server_ctx = tlsutil.server_context(str(c.path("master.crt")), str(c.path("master.key")),
                                            str(c.path("ca.crt")), denylist=denylist)
        client = Client.for_cluster(c, "master", denylist=denylist, timeout=config.request_timeout,
                                    **AGENT_POOL)
    except (OSError, ValueError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the master's certificates from {home}: {exc}") from exc
    if renewed:
        log.info("renewed this host's %s certificate(s)", " and ".join(renewed))
    store = open_store(c.master_dir / "state.db")
    # the master's LBs run in a worker process too, for the same reason as the agents':
    # a flood on a published port must not stall the master's API and reconcile
    edge = ({"http_port": config.edge_ports[0], "https_port": config.edge_ports[1]}
            if config.edge_ports else {})
    ingress = ingress_for(config.ingress_bind, sticky_key_from(c.gossip_keys()[0]),
                          workers=config.ingress_workers, edge=edge) if config.ingress else None
    # The key that unwraps the cluster's data key (vault.py): beside the CA key in this home,
    # never in the store; made on first start for a cluster from before secrets.
    vault_key = await asyncio.to_thread(load_vault_key, c.home, True)
    master = Master(store, client, cluster={"id": c.id, "name": c.name}, config=config,
                    seed_nodes=lambda: [asdict(r) for r in clusterlib.nodes(c)],   # re-read each time
                    ingress=ingress, signer=signer, denylist=denylist, vault_key=vault_key)
    master.tls_contexts.append(server_ctx)
    master.local_certs = lambda: _renew_local(c, master)
    await master.start()
    host = bind or ("0.0.0.0" if c.advertise_addr else "127.0.0.1")
    listen_port = c.master_port if port is None else port
    try:
        runner = await serve(master, host, listen_port, server_ctx)
    except BaseException:
        await master.close()
        store.close()
        raise
    dash = await start_dashboard(master, c, host, 0 if listen_port == 0 else listen_port + 1,
                                 c.advertise_addr)
    if listen_port == 0:   # tests: an ephemeral port
        listen_port = runner.addresses[0][1]
    shown = "127.0.0.1" if host == "0.0.0.0" else host
    return RunningMaster(master, runner, f"https://{shown}:{listen_port}", store, dash)
