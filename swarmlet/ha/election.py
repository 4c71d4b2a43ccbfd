"""One leader among the masters, through an etcd lease: etcd's election pattern.

A candidate grants a lease of ``ttl`` seconds and creates the leader key bound
to it, in one transaction that succeeds only if the key does not exist
(``create_revision == 0``). The winner's **term** is the key's create
revision: etcd revisions only grow, so every later leader has a higher term.
Every store write of the leader compares the key's create revision with its
term in the same transaction (``fence``), so once the lease lapsed (the key is
gone, or a newer leader made it again) a deposed leader's write fails instead
of landing. Agents remember the highest term they have seen and refuse
assignments of an older one: the fencing token the store alone cannot give.

The leader keeps its lease alive every ``ttl / 4``. It holds leadership only
until ``t_sent + ttl`` of its last successful keepalive (``t_sent``: when that
request left, by the local monotonic clock), because etcd may expire the
lease any time after that; when a keepalive fails past that deadline it steps
down by itself, before anyone else can be elected. So a paused or partitioned
leader stops acting within its TTL, without hearing from anyone.

Followers poll the leader key every ``poll`` seconds (linearizable reads, so a
member cut off from the majority cannot tell a follower a stale leader) and
campaign as soon as it is gone. A failover after a leader's death takes
etcd's lease expiry (``ttl``, plus etcd's extension of every lease when its
own raft leader changed) plus at most ``poll``.

Runs in a thread (the client is synchronous); ``on_change`` is called from
that thread on every change of ``Leadership``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

from ..shipped.exceptions import StoreError
from . import etcd as E

log = logging.getLogger("swarmlet.election")
DEFAULT_TTL = 2
LEADER_KEY = "leader"


@dataclass(frozen=True)
class Leadership:
    """What one candidate knows: is it the leader, the current term and the leader's data."""

    leader: bool
    term: int = 0
    holder: Optional[Dict[str, Any]] = None   # the leader's value: name, url
    reason: str = ""


def leader_key(prefix: str) -> str:
    return prefix.rstrip("/") + "/" + LEADER_KEY


def current(etcd: E.Etcd, prefix: str) -> Leadership:
    """Who leads now, as seen by a linearizable read (``NoQuorum`` without a majority)."""
    out = etcd.range(leader_key(prefix))
    kvs = out.get("kvs") or []
    if not kvs:
        return Leadership(False, 0, None, "no leader")
    kv = kvs[0]
    return Leadership(False, int(kv["create_revision"]), _value(kv))


def _value(kv: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    try:
        v = json.loads(E.unb64(kv.get("value")))
        return v if isinstance(v, dict) else None
    except ValueError:
        return None


class Elector:
    def __init__(self, etcd: E.Etcd, prefix: str, me: Dict[str, Any], ttl: int = DEFAULT_TTL,
                 poll: float = 0.2, clock: Callable[[], float] = time.monotonic) -> None:
        if ttl < 2:
            raise ValueError("etcd's minimum lease TTL is about 1.5 s: use ttl >= 2")
        self.etcd = etcd
        self.key = leader_key(prefix)
        self.me = dict(me)
        self.ttl = ttl
        self.poll = poll
        self.clock = clock
        self.state = Leadership(False, 0, None, "starting")
        self.lease = 0
        self.deadline = 0.0          # leadership holds until then (local monotonic clock)
        self._stop = threading.Event()
        self._resign = threading.Event()
        self._hold_until = 0.0
        self._callbacks: list = []
        self.counters = {"campaigns": 0, "won": 0, "lost_lease": 0, "keepalive_failures": 0}

    # --- observers -------------------------------------------------------------------

    def subscribe(self, cb: Callable[[Leadership], None]) -> None:
        self._callbacks.append(cb)

    def _set(self, st: Leadership) -> None:
        if st == self.state:
            return
        old, self.state = self.state, st
        if st.leader != old.leader or st.term != old.term:
            log.info("leadership: %s term %d (%s)", "leader" if st.leader else "follower",
                     st.term, st.reason or (st.holder or {}).get("name", "?"))
        for cb in list(self._callbacks):
            try:
                cb(st)
            except Exception:   # an observer's bug must not stop the election
                log.exception("leadership callback failed")

    def is_leader(self) -> bool:
        """True only while the lease certainly holds (checked against the local deadline)."""
        return self.state.leader and self.clock() < self.deadline

    # --- the loop --------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def resign(self, hold: float = 5.0) -> None:
        """Give leadership up now (the next candidate takes over at once) and stay out of
        the next ``hold`` seconds of campaigns."""
        self._hold_until = self.clock() + hold
        self._resign.set()

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.clock() < self._hold_until:
                    self._follow(until=self._hold_until)
                elif self._campaign():
                    self._lead()
                else:
                    self._follow()
            except StoreError as exc:
                if self.state.leader:
                    self._step_down(f"etcd: {exc}")
                else:      # we cannot tell who leads: say so rather than name a stale holder
                    self._set(Leadership(False, self.state.term, None, str(exc)))
                self._stop.wait(self.poll)
        if self.state.leader:
            self._step_down("stopped")
            self._release()

    def _campaign(self) -> bool:
        self.counters["campaigns"] += 1
        t_sent = self.clock()
        lease = self.etcd.grant(self.ttl)
        value = json.dumps(self.me, sort_keys=True)
        out = self.etcd.txn([E.create_revision_is(self.key, 0)], [E.put(self.key, value, lease)],
                            [E.get(self.key)])
        if out.get("succeeded"):
            self.lease = lease
            self.deadline = t_sent + self.ttl
            self.counters["won"] += 1
            term = int(out["header"]["revision"])
            self._set(Leadership(True, term, dict(self.me), "elected"))
            return True
        self.etcd.revoke(lease)
        kvs = ((out.get("responses") or [{}])[0].get("response_range") or {}).get("kvs") or []
        if kvs:
            self._set(Leadership(False, int(kvs[0]["create_revision"]), _value(kvs[0])))
        return False

    def _lead(self) -> None:
        term = self.state.term
        while not self._stop.is_set() and not self._resign.is_set():
            self._stop.wait(self.ttl / 4)
            if self._stop.is_set():
                break
            t_sent = self.clock()
            try:
                left = self.etcd.keepalive(self.lease, timeout=max(0.2, self.deadline - t_sent))
                still = current(self.etcd, self.key.rsplit("/", 1)[0])
            except StoreError as exc:
                self.counters["keepalive_failures"] += 1
                if self.clock() >= self.deadline - 0.1:
                    self._step_down(f"lease not renewed within its {self.ttl}s TTL: {exc}")
                    return
                continue
            if left <= 0 or still.term != term:
                self.counters["lost_lease"] += 1
                self._step_down("lease lapsed" if left <= 0 else "leader key taken over")
                return
            self.deadline = t_sent + min(self.ttl, left)
        self._resign.clear()
        self._step_down("resigned" if not self._stop.is_set() else "stopped")
        self._release()

    def _step_down(self, reason: str) -> None:
        self.deadline = 0.0
        self._set(Leadership(False, self.state.term, None, reason))

    def _release(self) -> None:
        """Delete our key (only if it is still ours) and revoke the lease: a fast handover."""
        if not self.lease:
            return
        try:
            self.etcd.txn([E.create_revision_is(self.key, self.state.term)], [E.delete(self.key)],
                          timeout=1.0)
        except StoreError:
            pass
        self.etcd.revoke(self.lease)
        self.lease = 0

    def _follow(self, until: float = 0.0) -> None:
        prefix = self.key.rsplit("/", 1)[0]
        while not self._stop.is_set():
            st = current(self.etcd, prefix)
            if st.holder is None and st.term == 0 and self.clock() >= until:
                return          # gone: campaign now
            if until and self.clock() >= until:
                return
            self._set(st)
            self._stop.wait(self.poll)
