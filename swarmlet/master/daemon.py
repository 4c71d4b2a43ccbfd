"""The master daemon: the wiring of the master's parts around its working state.

Owns the working state in memory (services, specs by revision, tasks in a
``TaskIndex``, node records, each node's ``NodeLive``, the gossip view,
rollouts) and the one way to persist it: ``write(batch)`` / ``commit_changes``
store a change (through ``asyncio.to_thread``, fenced when an HA leader) before
it is applied in memory or pushed. Each job is its own module:

- ``commands.Commands``: every change the API asks for (nodes, services, stacks);
- ``reconciler.Reconciler``: the reconcile loop and rollouts (pure decisions
  from ``reconcile``, ``scheduler``, ``rollout``);
- ``pusher.Pusher``: assignments and routes down to agents, and the master's LBs;
- ``secrets.SecretBook``: secrets and configs (sealed by ``vault``), rotation;
- ``poller.Poller``: polls, gossip view and node status (``nodestatus``, pure);
- ``views``: the read side; ``taskindex``: tasks by node.

Only nodes registered through an authenticated path are ever scheduled:
``POST /v1/nodes`` (join, with the cli certificate) or the admin host's
``nodes.json`` (``seed_nodes``, read at start and again when gossip shows a
name the master does not know). Gossip and ``/v1/members`` only change the
liveness of known nodes. Agents are reached through ``swarmlet.client``,
which accepts only each node's own certificate; the denylist and certificate
renewals are ``certs.CertKeeper``.

After a restart the master reloads the store and bumps and re-pushes every
node's assignment with the same tasks, so agents keep (adopt) the containers
they run: nothing is duplicated or lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Set, Tuple

from ..client import Client
from ..shipped.models import NodeInfo, ServiceSpec
from ..shipped.routes import Route
from ..shipped.tlsutil import Denylist
from ..signer import Signer
from . import views
from .acme import AcmeManager
from .acmeplan import Backoff as AcmeBackoff
from .autoscale import AutoscalePolicy, Autoscaler
from .certbook import CertBook
from .edgepush import EdgePusher
from .certs import CertKeeper
from .backoff import Backoff
from .commands import Commands
from .events import task_events
from .history import History
from .liveness import LivenessConfig
from .metrics import MasterObs, lb_watch
from .poller import NodeLive, Poller
from .pusher import Pusher
from .reconcile import Changes, in_chunks
from .reconciler import Reconciler
from .secrets import SecretBook
from .state import NodeRecord, Service, Task
from .store import Batch, Fence, Store
from .taskindex import TaskIndex
from .taskrows import TaskRows
from . import rollout as ro

log = logging.getLogger("swarmlet.master")
COMMIT_CHUNK = 2000   # tasks per store batch (etcd: 16,384 operations, 16 MiB per transaction)


@dataclass(frozen=True)
class MasterConfig:
    poll_interval: float = 0.5      # agents without long polls; retries of a failing node
    long_poll: float = 20.0         # seconds an agent may hold a watch (poller.py)
    long_poll_rate: float = 20.0    # idle watch answers per second at most, all nodes together
    retry_max: float = 5.0          # seconds between retries of a node down for a while
    stats_interval: float = 5.0
    stats_rate: float = 40.0        # GET /v1/stats per second at most, all nodes together
    routes_rate: float = 400.0      # PUT /v1/routes per second at most while routes churn (pusher.py)
    # Relayed routes (relaypush.py): nodes on one routes version from which a delta goes to
    # relay_seeds agents that relay it (0: never), each hop to relay_fanout; a wave's seconds;
    # the least time between two waves to one node; the largest delta relayed (bytes: bigger
    # ones, a deploy's, are pushed directly, see pusher.py). Below 32 nodes on one version
    # (the lab, small clusters) every push is direct. The budget is generous: each hop counts
    # it from when its handler runs, so time queued before that (a busy agent, a cold wave's
    # TLS handshakes) is slack the hops above must leave; with 2 s, a fifth to a half of the
    # acknowledgements arrived too late at 1,000 nodes (bench/scale/README.md). A wave that
    # meets no trouble answers in under a second whatever the budget.
    relay_threshold: int = 32
    relay_seeds: int = 8
    relay_fanout: int = 8
    relay_budget: float = 8.0
    relay_gap: float = 0.5
    relay_max_bytes: int = 4096
    observe_batch: float = 0.05     # seconds of node reports folded into one store commit
    tick_interval: float = 0.5
    reconcile_interval: float = 5.0
    gc_after: float = 60.0
    rebalance_window: float = 60.0
    request_timeout: float = 1.5
    liveness: LivenessConfig = LivenessConfig()
    ingress: bool = True            # run a load balancer for every published port
    ingress_bind: str = "0.0.0.0"
    autoscale: AutoscalePolicy = AutoscalePolicy()
    agent_cert_days: float = 30.0       # lifetime of renewed agent certificates (pki.LIFETIME_DAYS)
    cert_interval: float = 1.0          # how often renewals are considered
    revocation_interval: float = 5.0    # how often the signer's denylist is re-read
    backoff: Backoff = Backoff()    # how a failed task's successor waits (backoff.py)
    history_interval: float = 10.0  # seconds between samples of the dashboard's last hour
    # The edge (issue 18): where the master's own LBs serve hosts (None: the cluster's ports,
    # edge_config), and the ACME manager's timings (acme.py, acmeplan.py).
    edge_ports: Optional[Tuple[int, int]] = None
    ingress_workers: int = 1        # the master's LB worker processes (0: one per core)
    acme_backoff: AcmeBackoff = AcmeBackoff()
    acme_interval: float = 60.0     # the longest the ACME manager sleeps between looks
    acme_order_timeout: float = 90.0    # validation + issuance of one order
    challenge_timeout: float = 5.0  # a node's ingress must take an ACME token within this


class Master:
    def __init__(self, store: Store, client: Client, cluster: Optional[Mapping[str, Any]] = None,
                 config: MasterConfig = MasterConfig(), clock: Callable[[], float] = time.time,
                 seed_nodes: Any = None, ingress: Optional[Any] = None,
                 signer: Optional[Signer] = None, denylist: Optional[Denylist] = None,
                 vault_key: Optional[bytes] = None) -> None:
        self.store = store
        self.vault_key = vault_key              # the KEK that unwraps the data key (vault.py)
        self.fence: Optional[Fence] = None     # set by an HA leader: its writes are fenced by term
        self.term = 0                           # the HA leader's term, sent in every assignment
        # An HA leader's lease check (``Elector.is_leader``): no push once it may have lapsed.
        self.leading: Callable[[], bool] = lambda: True
        self.meta: Dict[str, Any] = {}          # the store's meta, as of the last load or write
        self.ingress = ingress                  # swarmlet.shipped.ingress.Ingress, fed from routes()
        self.client = client
        self.cluster = dict(cluster or {})
        self.cfg = config
        self.clock = clock
        # the working state
        self.services: Dict[str, Service] = {}
        self.specs: Dict[Tuple[str, int], ServiceSpec] = {}
        self.tasks = TaskIndex()
        self.task_rows = TaskRows()      # the ps body, encoded once per change
        self.nodes: Dict[str, NodeRecord] = {}
        self.live: Dict[str, NodeLive] = {}
        self.gossip: Dict[str, str] = {}
        self.rollouts: Dict[str, ro.Rollout] = {}
        self.auto_rebalance = True
        self.rebalance_until = 0.0
        self.rebalance_services: Dict[str, float] = {}   # service -> until (after a scale-down)
        self.started_at = clock()
        self.running = False
        self.lock = asyncio.Lock()              # one change of the working state at a time
        self.kick_event = asyncio.Event()
        self.counters = {"reconcile_passes": 0, "pushes": 0, "route_pushes": 0, "push_failures": 0, "polls": 0,
                         "poll_failures": 0}
        # the parts
        self.commands = Commands(self)
        self.reconciler = Reconciler(self)
        self.pusher = Pusher(self)
        self.poller = Poller(self)
        self.secretbook = SecretBook(self)      # secrets and configs (secrets.py)
        # the edge (issue 18): web certificates (sealed by the same vault), the edge channel
        # to the nodes, and the ACME manager that asks the CA (only a leader runs a Master)
        self.certbook = CertBook(self)
        self.edge = EdgePusher(self, config.challenge_timeout)
        self.acme = AcmeManager(self, config.acme_backoff, config.acme_interval,
                                config.acme_order_timeout)
        self.obs = MasterObs()                  # metrics, live-view wakeups (metrics.py)
        self.autoscaler = Autoscaler(self)      # autoscale.py
        # The admin host's joined nodes (nodes.json): a list, or a callable re-reading the file.
        self.seed_source: Callable[[], List[Mapping[str, Any]]] = (
            seed_nodes if callable(seed_nodes) else (lambda: list(seed_nodes or [])))
        self.tls_contexts: List[Any] = []     # server contexts holding the master certificate
        self.local_certs: Optional[Callable[[], List[str]]] = None   # renews master/cli (runner)
        self.certs = CertKeeper(self, signer, denylist if denylist is not None else Denylist(),
                                config.agent_cert_days, config.cert_interval,
                                config.revocation_interval)   # certs.py
        self.history = History(config.history_interval)   # history.py: the charts' last hour
        self._loops: List["asyncio.Task[Any]"] = []
        self._bg: Set["asyncio.Task[Any]"] = set()

    # --- life cycle ---------------------------------------------------------

    async def start(self) -> None:
        snap = await asyncio.to_thread(self.store.load)
        self.services, self.specs, self.nodes, self.meta = (snap.services, snap.specs, snap.nodes,
                                                            dict(snap.meta))
        for t in snap.tasks.values():
            self.tasks.put(t)
        self.auto_rebalance = bool(snap.meta.get("auto_rebalance", True))
        self.history.load_events(await asyncio.to_thread(self.store.events, 10_000), self.clock())
        # Unsubscribed at close: an HA store outlives each term's Master (ha_runner).
        self._unwatch = self.store.watch(self.history.on_commit)
        # Agents order assignments by term: a store moved between HA and a single master
        # carries a floor above every term its agents have seen (ha/provision.py).
        self.term += int(snap.meta.get("term_floor", 0))
        if self.cluster:
            await self.write(Batch.of(meta={"cluster": self.cluster}))
        cluster_id = str(self.cluster.get("id") or (self.meta.get("cluster") or {}).get("id") or "")
        await self.secretbook.start(snap.secrets, self.vault_key, cluster_id)
        self.certbook.load(self.meta)
        self.edge.load(self.meta)
        self.acme.load(self.meta)
        self.edge.changed()
        await self.edge.configure_own()   # the edge's ports before any route can bind one
        for name in self.nodes:
            self.live[name] = NodeLive()
        self.reconciler.recover_rollouts()
        await self.certs.start()
        await self.commands.register_seeds()   # nodes joined while the master was not running
        self.running = True
        for name in list(self.nodes):
            self.poller.start_node(name)
        self._loops = [asyncio.create_task(self.poller.tick_loop(), name="master-tick"),
                       asyncio.create_task(self.reconciler.loop(), name="master-reconcile")]
        if self.ingress is not None:
            self._loops.append(asyncio.create_task(self.pusher.ingress_loop(), name="master-ingress"))
        self._loops += [asyncio.create_task(lb_watch(self), name="master-lb-watch"),
                        asyncio.create_task(self.autoscaler.run(), name="master-autoscale"),
                        asyncio.create_task(self.certs.run(), name="master-certs"),
                        asyncio.create_task(self.acme.run(), name="master-acme"),
                        asyncio.create_task(self.history.run(self), name="master-history")]
        self.kick()

    async def close(self) -> None:
        unwatch = getattr(self, "_unwatch", None)
        if unwatch is not None:
            unwatch()
        pending = set(self._loops + self.poller.tasks() + list(self._bg))
        while pending:
            for t in pending:
                t.cancel()
            # Cancel again what is still running: on Python < 3.12 asyncio.wait_for can
            # swallow a cancellation that races its result (gh-86296), and a loop around
            # it (the ingress loop's apply) would then wait for ever.
            done, pending = await asyncio.wait(pending, timeout=1.0)
            for t in done:
                if not t.cancelled():
                    t.exception()   # retrieved: a loop that died of a bug was logged already
        if self.ingress is not None:
            await self.ingress.close()
        await self.certs.close()
        self.acme.close()
        await self.client.close()

    def kick(self) -> None:
        """Ask for a reconcile pass soon."""
        self.kick_event.set()

    def spawn(self, coro: Any) -> None:
        """Run ``coro`` in the background (kept until done; cancelled at close)."""
        t = asyncio.create_task(coro)
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    # --- the one write path ---------------------------------------------------

    async def write(self, batch: Batch) -> int:
        """Persist one batch atomically (in a thread; fenced when this master is an HA leader)."""
        rev = await asyncio.to_thread(self.store.commit, batch, self.fence)
        self.meta.update(batch.meta)
        return rev

    async def commit_changes(self, changes: Changes, **more: Any) -> None:
        """Store task changes (with the events they imply, and ``more`` of the batch), then
        apply them to the task index, in batches of at most ``COMMIT_CHUNK`` tasks
        (``reconcile.in_chunks``: etcd bounds a transaction, and a scale to 10,000
        replicas was refused whole at every pass, so none ever ran)."""
        for n, part in enumerate(in_chunks(changes, COMMIT_CHUNK)):
            events = part.events + task_events(self.tasks, part.create + part.update)
            await self.write(Batch.of(tasks=part.create + part.update, delete_tasks=part.delete,
                                      events=events, **(more if n == 0 else {})))
            for t in part.create + part.update:
                self.tasks.put(t)
            for tid in part.delete:
                self.tasks.drop(tid)
            for e in events:
                log.info("%s %s: %s", e.kind, e.subject, e.message)
        self.obs.touch()

    # --- the API's commands (commands.py) ----------------------------------------

    async def register_node(self, name: str, address: str, api_port: int = 7443,
                            labels: Optional[Dict[str, str]] = None,
                            change_address: bool = False) -> Dict[str, Any]:
        return await self.commands.register_node(name, address, api_port, labels, change_address)

    async def remove_node(self, name: str) -> None:
        await self.commands.remove_node(name)

    async def set_availability(self, name: str, availability: str) -> Dict[str, Any]:
        return await self.commands.set_availability(name, availability)

    async def put_service(self, spec: ServiceSpec, create_only: bool = False,
                          rollback_of: Optional[int] = None,
                          scale_reason: Optional[str] = None,
                          rollback_to: Optional[int] = None) -> Dict[str, Any]:
        return await self.commands.put_service(spec, create_only, rollback_of, scale_reason,
                                               rollback_to)

    async def apply_stack(self, stack: str, specs: List[ServiceSpec], prune: bool = False,
                          dry_run: bool = False, file: str = "",
                          warnings: Tuple[Any, ...] = (),
                          values: Tuple[Any, ...] = (),
                          certs: Tuple[Tuple[str, str, str], ...] = (),
                          skipped: Tuple[Tuple[str, Tuple[str, ...]], ...] = ()) -> Dict[str, Any]:
        return await self.commands.apply_stack(stack, specs, prune, dry_run, file, warnings,
                                               values, certs, skipped)

    async def patch_service(self, name: str, changes: Mapping[str, Any]) -> Dict[str, Any]:
        return await self.commands.patch_service(name, changes)

    async def delete_service(self, name: str) -> Dict[str, Any]:
        return await self.commands.delete_service(name)

    async def rollback(self, name: str, to: Optional[int] = None) -> Dict[str, Any]:
        return await self.commands.rollback(name, to)

    async def rebalance(self) -> Dict[str, Any]:
        return await self.commands.rebalance()

    async def set_config(self, auto_rebalance: Optional[bool] = None) -> Dict[str, Any]:
        return await self.commands.set_config(auto_rebalance)

    async def reconcile_once(self, rebalance: bool = False) -> int:
        return await self.reconciler.reconcile_once(rebalance)

    # --- the read side (views.py) --------------------------------------------------

    def tasks_on(self, node: str) -> List[Task]:
        return self.tasks.on(node)

    def routes(self) -> Tuple[Route, ...]:
        return self.pusher.routes()

    def node_infos(self) -> List[NodeInfo]:
        return views.node_infos(self)

    def nodes_view(self) -> List[Dict[str, Any]]:
        return views.nodes_view(self)

    def services_view(self) -> List[Dict[str, Any]]:
        return views.services_view(self)

    def service_view(self, name: str) -> Dict[str, Any]:
        return views.service_view(self, name)

    def tasks_view(self, service: Optional[str] = None, all_tasks: bool = False) -> List[Dict[str, Any]]:
        return views.tasks_view(self, service, all_tasks)

    def tasks_body(self, service: Optional[str] = None, all_tasks: bool = False) -> bytes:
        return self.task_rows.body(self, service, all_tasks)

    def status_view(self) -> Dict[str, Any]:
        return views.status_view(self)

    def rollout_view(self, name: str) -> Optional[Dict[str, Any]]:
        return views.rollout_view(self, name)

    async def events_view(self, limit: int = 100, since: int = 0) -> List[Dict[str, Any]]:
        return await asyncio.to_thread(self.store.events, limit, since)
