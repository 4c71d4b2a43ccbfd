"""The master store on etcd (``base.Store``): the HA masters' shared state.

Every record is one key under ``<prefix>/data/`` holding the JSON of its wire
form (the same encoding as SQLite's columns):

    meta/<key>                      JSON value
    svc/<name>                      {revision, template_revision, created_at, updated_at}
    rev/<name>/<revision:010d>      {spec, created_at}       every revision of the spec
    task/<task_id>, node/<name>     to_wire(Task), to_wire(NodeRecord)
    sec/<kind>/<name>/<version:010d>  to_wire(SecretVersion): the value sealed (``vault``)
    event/<id:016d>                 {ts, kind, subject, message, key}   (the newest ``max_events``)
    ekey/<sha1(key)>                {"id": id}: the stored event of a keyed ``Event``
    seq                             {"events": next event id}: touched by every commit

A keyed event replaces the one its ``ekey`` names, in the same transaction (the
``ekey`` entries are read first; ``seq``'s compare makes that read current).
``ekey`` entries whose event has been trimmed are swept every ``SWEEP`` events.

One ``commit`` is one etcd transaction: all of it or nothing. Its compares are
the fence and ``seq``'s mod revision (so two writers can never hand out the
same event ids; the loser re-reads ``seq`` and retries). The store's revision
is ``seq``'s mod revision: etcd's revision of the last commit, so it only
grows, and writes outside ``data/`` (the leader key) do not move it.

Fencing. ``Fence(key, value)`` holds while ``meta[key] == value`` (the
contract, as SQLite does it). ``Fence(LEADER_FENCE, term)`` is the HA leader's
fence: it holds while the election key's create revision equals ``term``
(``swarmlet.ha.election``): once the leader's lease lapsed, or a newer leader
made the key again, the transaction fails and nothing lands.

Watches and the hot copy. ``watch`` starts one thread that streams etcd's
watch of ``data/`` from the revision it loaded, folds each transaction back
into a ``Batch`` (the watch delivers a transaction's events together, all
with its revision) and keeps a copy of the whole state current. A follower's
``load()`` is served from that copy once it has caught up with etcd's current
revision, so a takeover needs no full read. A commit with watchers returns
only after its own watcher has delivered it, so callbacks see every commit in
revision order whichever master wrote it. A broken stream resumes from the
last delivered revision (on another member if need be); a compacted one
reloads the copy.

Large states: reads page through ``data/`` (``PAGE`` keys per request, all at
the first page's revision: one consistent snapshot). etcd is told to accept
transactions of up to 16384 operations and 16 MiB (``ha.etcdconf``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import replace
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from ...shipped.exceptions import FencedOut, StoreError
from ...shipped.models import ServiceSpec, from_wire, to_wire
from ...ha import etcd as E
from ...ha.election import leader_key
from ..reconcile import Event
from ..state import NodeRecord, SecretVersion, Service, Task
from .base import Batch, Fence, Snapshot, Watcher

log = logging.getLogger("swarmlet.master.store")
SCHEMA_VERSION = 1
MAX_EVENTS = 10_000
PAGE = 2000
LEADER_FENCE = "@leader"          # Fence(LEADER_FENCE, term): the election key's create revision
_RESERVED = {"schema_version", "store_revision"}
_RETRIES = 20
SWEEP = 1000                      # events between two sweeps of stale ``ekey`` entries


def _dumps(v: Any) -> str:
    return json.dumps(v, sort_keys=True, separators=(",", ":"))


class EtcdStore:
    def __init__(self, etcd: E.Etcd, prefix: str, max_events: int = MAX_EVENTS) -> None:
        self.etcd = etcd
        self.prefix = prefix.rstrip("/")
        self.data = self.prefix + "/data/"
        self.seq_key = self.data + "seq"
        self.max_events = max_events
        self._lock = threading.Lock()
        self._seq_rev = -1                 # seq's mod revision as last seen (-1: unknown)
        self._next_event = 1
        self._watchers: List[Watcher] = []
        self._cache: Optional[Snapshot] = None
        self._delivered = 0                # the last revision the watch thread delivered
        self._cv = threading.Condition()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._init()

    def _k(self, *parts: str) -> str:
        return self.data + "/".join(parts)

    def _init(self) -> None:
        """Make ``seq`` and ``schema_version`` if this prefix is new (one transaction)."""
        out = self.etcd.txn([E.create_revision_is(self.seq_key, 0)],
                            [E.put(self.seq_key, _dumps({"events": 1})),
                             E.put(self._k("meta", "schema_version"), _dumps(SCHEMA_VERSION))],
                            [E.get(self._k("meta", "schema_version"))])
        if not out.get("succeeded"):
            kvs = (out["responses"][0].get("response_range") or {}).get("kvs") or []
            have = json.loads(E.unb64(kvs[0]["value"])) if kvs else SCHEMA_VERSION
            if int(have) > SCHEMA_VERSION:
                raise StoreError(f"etcd prefix {self.prefix} has schema version {have}, this "
                                 f"master knows up to {SCHEMA_VERSION}",
                                 hint="upgrade swarmlet on every master")

    # --- reads -----------------------------------------------------------------------

    def _read_seq(self) -> Tuple[int, int]:
        kvs = self.etcd.range(self.seq_key).get("kvs") or []
        if not kvs:
            raise StoreError(f"etcd prefix {self.prefix} has no store (its seq key is gone)")
        return int(kvs[0]["mod_revision"]), int(json.loads(E.unb64(kvs[0]["value"]))["events"])

    def revision(self) -> int:
        return self._read_seq()[0]

    def _range_all(self, start: str, end: bytes) -> Tuple[List[Dict[str, Any]], int]:
        """Every key in [start, end) at one revision, a page at a time; (kvs, header revision)."""
        out: List[Dict[str, Any]] = []
        key: "str | bytes" = start
        at = 0
        while True:
            r = self.etcd.range(key, end, revision=at, limit=PAGE)
            at = at or int(r["header"]["revision"])
            kvs = r.get("kvs") or []
            out += kvs
            if not r.get("more") or not kvs:
                return out, at
            key = E.unb64(kvs[-1]["key"]) + b"\0"

    def load(self) -> Snapshot:
        if self._thread is not None:
            snap = self._cached()
            if snap is not None:
                return snap
        return self._full_load()[0]

    def _full_load(self) -> Tuple[Snapshot, int]:
        kvs, at = self._range_all(self.data, E.prefix_end(self.data))
        snap = Snapshot()
        svc_rows: Dict[str, Dict[str, Any]] = {}
        for kv in kvs:
            self._apply_put(snap, svc_rows, E.unb64(kv["key"]).decode(), E.unb64(kv.get("value")),
                            int(kv["mod_revision"]))
        self._finish(snap, svc_rows)
        return snap, at

    def _apply_put(self, snap: Snapshot, svc_rows: Dict[str, Dict[str, Any]], key: str,
                   value: bytes, mod_rev: int) -> None:
        rel = key[len(self.data):]
        kind, _, rest = rel.partition("/")
        if kind == "seq":
            snap.revision = max(snap.revision, mod_rev)
            return
        if kind in ("event",) or not rest:
            return
        data = json.loads(value)
        if kind == "meta":
            snap.meta[rest] = data
        elif kind == "rev":
            name, _, rev = rest.rpartition("/")
            snap.specs[(name, int(rev))] = from_wire(ServiceSpec, data["spec"])
        elif kind == "svc":
            svc_rows[rest] = data
        elif kind == "task":
            snap.tasks[rest] = from_wire(Task, data)
        elif kind == "node":
            snap.nodes[rest] = from_wire(NodeRecord, data)
        elif kind == "sec":
            sv = from_wire(SecretVersion, data)
            snap.secrets[sv.key] = sv

    @staticmethod
    def _sec_key(rest: str) -> Tuple[str, str, int]:
        skind, _, tail = rest.partition("/")
        name, _, version = tail.rpartition("/")
        return (skind, name, int(version))

    @staticmethod
    def _finish(snap: Snapshot, svc_rows: Dict[str, Dict[str, Any]]) -> None:
        for name, row in svc_rows.items():
            spec = snap.specs.get((name, int(row["revision"])))
            if spec is None:
                raise StoreError(f"service {name} has no stored spec of revision {row['revision']}")
            snap.services[name] = Service(spec, int(row["revision"]), float(row["created_at"]),
                                          float(row["updated_at"]), int(row["template_revision"]))

    def revisions(self, name: str) -> List[Tuple[int, ServiceSpec, float]]:
        start = self._k("rev", name) + "/"
        kvs, _ = self._range_all(start, E.prefix_end(start))
        out = []
        for kv in kvs:
            rev = int(E.unb64(kv["key"]).decode().rsplit("/", 1)[1])
            data = json.loads(E.unb64(kv["value"]))
            out.append((rev, from_wire(ServiceSpec, data["spec"]), float(data["created_at"])))
        return sorted(out, key=lambda r: r[0])

    def events(self, limit: int = 100, since_id: int = 0) -> List[Dict[str, Any]]:
        start = self._k("event", f"{since_id + 1:016d}")
        end = E.prefix_end(self._k("event") + "/")
        r = self.etcd.range(start, end, limit=0) if limit <= 0 else self.etcd.call(
            "kv/range", {"key": E.b64(start), "range_end": E.b64(end), "limit": str(limit),
                         "sort_order": "DESCEND", "sort_target": "KEY"})
        rows = []
        for kv in r.get("kvs") or []:
            d = json.loads(E.unb64(kv["value"]))
            rows.append(dict(id=int(E.unb64(kv["key"]).decode().rsplit("/", 1)[1]), ts=d["ts"],
                             kind=d["kind"], subject=d["subject"], message=d["message"]))
        return sorted(rows, key=lambda e: e["id"])

    # --- the one write path ------------------------------------------------------------

    def _ekey(self, key: str) -> str:
        return self._k("ekey", hashlib.sha1(key.encode("utf-8", "replace")).hexdigest())

    def _keyed_ids(self, batch: Batch) -> Dict[str, int]:
        """The stored event id of every key ``batch``'s events carry (one read)."""
        keys = sorted({e.key for e in batch.events if e.key})
        if not keys:
            return {}
        out = self.etcd.txn([], [E.get(self._ekey(k)) for k in keys], [])
        ids: Dict[str, int] = {}
        for k, resp in zip(keys, out.get("responses") or []):
            kvs = (resp.get("response_range") or {}).get("kvs") or []
            if kvs:
                ids[k] = int(json.loads(E.unb64(kvs[0]["value"]))["id"])
        return ids

    def _sweep_keys(self, below: int) -> None:
        """Forget ``ekey`` entries of trimmed events (best effort: one compare per entry)."""
        start = self._k("ekey") + "/"
        kvs, _ = self._range_all(start, E.prefix_end(start))
        stale = [kv for kv in kvs if int(json.loads(E.unb64(kv["value"]))["id"]) < below]
        for i in range(0, len(stale), 500):
            part = stale[i:i + 500]
            self.etcd.txn([E.mod_revision_is(E.unb64(kv["key"]), int(kv["mod_revision"])) for kv in part],
                          [E.delete(E.unb64(kv["key"])) for kv in part], [])

    def _ops(self, batch: Batch, ts: float, first_event: int,
             keyed: Optional[Dict[str, int]] = None) -> Tuple[List[Dict[str, Any]], int]:
        """Every operation of ``batch`` (encoded first: a record that cannot be encoded fails
        the commit before anything is sent); also the next event id. ``keyed``: the stored
        event id of each event key (``_keyed_ids``)."""
        keyed = dict(keyed or {})
        puts: Dict[str, str] = {}
        revs: Dict[str, str] = {}          # written only if absent: a revision never changes
        deletes: Dict[str, Optional[bytes]] = {}
        gone_services = set(batch.delete_services)
        for s in batch.services:
            if s.name in gone_services:
                continue
            revs[self._k("rev", s.name, f"{s.revision:010d}")] = _dumps(
                {"spec": to_wire(s.spec), "created_at": s.updated_at})
            puts[self._k("svc", s.name)] = _dumps(
                {"revision": s.revision, "template_revision": s.current_from,
                 "created_at": s.created_at, "updated_at": s.updated_at})
        for name in gone_services:
            deletes[self._k("svc", name)] = None
            start = self._k("rev", name) + "/"
            deletes[start] = E.prefix_end(start)
        for t in batch.tasks:
            puts[self._k("task", t.task_id)] = _dumps(to_wire(t))
        for tid in batch.delete_tasks:
            puts.pop(self._k("task", tid), None)
            deletes[self._k("task", tid)] = None
        for n in batch.nodes:
            puts[self._k("node", n.name)] = _dumps(to_wire(n))
        for name in batch.delete_nodes:
            puts.pop(self._k("node", name), None)
            deletes[self._k("node", name)] = None
        for sv in batch.secrets:
            puts[self._k("sec", sv.kind, sv.name, f"{sv.version:010d}")] = _dumps(to_wire(sv))
        for skind, name, version in batch.delete_secrets:
            k = self._k("sec", skind, name, f"{version:010d}")
            puts.pop(k, None)
            deletes[k] = None
        for key, value in batch.meta.items():
            if key in _RESERVED:
                raise StoreError(f"meta key {key!r} is the store's own")
            puts[self._k("meta", key)] = _dumps(value)
        nxt = first_event
        for e in batch.events:
            if e.key:
                old = keyed.get(e.key)
                if old is not None:
                    puts.pop(self._k("event", f"{old:016d}"), None)
                    deletes[self._k("event", f"{old:016d}")] = None
                keyed[e.key] = nxt
                puts[self._ekey(e.key)] = _dumps({"id": nxt})
            puts[self._k("event", f"{nxt:016d}")] = _dumps(
                {"ts": ts, "kind": e.kind, "subject": e.subject, "message": e.message, "key": e.key})
            nxt += 1
        ops = [E.put(k, v) for k, v in puts.items()]
        ops += [{"request_txn": {"compare": [E.create_revision_is(k, 0)],
                                 "success": [E.put(k, v)], "failure": []}}
                for k, v in revs.items()]
        ops += [E.delete(k, end) for k, end in deletes.items()]
        if batch.events and nxt - 1 > self.max_events:
            ops.append(E.delete(self._k("event", f"{0:016d}"),
                                self._k("event", f"{nxt - self.max_events:016d}")))
        ops.append(E.put(self.seq_key, _dumps({"events": nxt})))
        return ops, nxt

    def _fence_compare(self, fence: Fence) -> Dict[str, Any]:
        if fence.key == LEADER_FENCE:
            return E.create_revision_is(leader_key(self.prefix), int(fence.value))
        return {"key": E.b64(self._k("meta", fence.key)), "target": "VALUE", "result": "EQUAL",
                "value": E.b64(_dumps(fence.value))}

    def commit(self, batch: Batch, fence: Optional[Fence] = None) -> int:
        ts = time.time() if batch.now is None else batch.now
        with self._lock:
            for _ in range(_RETRIES):
                if self._seq_rev < 0:
                    self._seq_rev, self._next_event = self._read_seq()
                ops, nxt = self._ops(batch, ts, self._next_event, self._keyed_ids(batch))
                compare = [E.mod_revision_is(self.seq_key, self._seq_rev)]
                if fence is not None:
                    compare.append(self._fence_compare(fence))
                out = self.etcd.txn(compare, ops, [E.get(self.seq_key)])
                if out.get("succeeded"):
                    rev = int(out["header"]["revision"])
                    self._seq_rev, self._next_event = rev, nxt
                    break
                kvs = (out["responses"][0].get("response_range") or {}).get("kvs") or []
                seen = int(kvs[0]["mod_revision"]) if kvs else -2
                if seen == self._seq_rev:
                    raise FencedOut(f"store write refused: the fence {fence.key if fence else '?'}"
                                    f" no longer holds {fence.value if fence else ''!r}")
                self._seq_rev = -1     # another writer committed: re-read seq and retry
            else:
                raise StoreError("store write kept conflicting with another writer")
            if batch.events and nxt // SWEEP != (nxt - len(batch.events)) // SWEEP:
                self._sweep_keys(nxt - self.max_events)
        if self._watchers:     # callbacks see every commit in order before commit returns
            self._wait_delivered(rev)
        return rev

    def restore_events(self, rows: List[Dict[str, Any]], chunk: int = 1000) -> None:
        """Bulk-load an event log with its own ids and timestamps (migration into an empty
        store: ``migrate.copy``), then move ``seq`` past the highest id."""
        rows = sorted(rows, key=lambda r: int(r["id"]))
        for i in range(0, len(rows), chunk):
            part = rows[i:i + chunk]
            with self._lock:
                self._seq_rev = -1
                seq_rev, nxt = self._read_seq()
                nxt = max(nxt, int(part[-1]["id"]) + 1)
                ops = [E.put(self._k("event", f"{int(r['id']):016d}"), _dumps(
                    {"ts": r["ts"], "kind": r["kind"], "subject": r["subject"],
                     "message": r["message"]})) for r in part]
                ops.append(E.put(self.seq_key, _dumps({"events": nxt})))
                out = self.etcd.txn([E.mod_revision_is(self.seq_key, seq_rev)], ops)
                if not out.get("succeeded"):
                    raise StoreError("restoring events conflicted with another writer")

    # --- watch and the hot copy ----------------------------------------------------------

    def watch(self, callback: Watcher) -> Callable[[], None]:
        """``callback(revision, batch)`` for every commit by any master, in revision order, from
        the watch thread (keep it short; never call the store from it)."""
        with self._cv:
            self._watchers.append(callback)
        self._ensure_thread()

        def unsubscribe() -> None:
            with self._cv:
                if callback in self._watchers:
                    self._watchers.remove(callback)
        return unsubscribe

    def follow(self) -> None:
        """Keep the hot copy current (a follower), even with no watcher."""
        self._ensure_thread()

    def _ensure_thread(self) -> None:
        with self._cv:
            if self._thread is not None:
                return
            snap, _ = self._full_load()
            self._cache = snap
            self._delivered = snap.revision
            self._thread = threading.Thread(target=self._watch_loop, name="etcd-store-watch",
                                            daemon=True)
            self._thread.start()

    def _wait_delivered(self, rev: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._delivered < rev and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning("watch lags: revision %d not delivered within %.0fs", rev, timeout)
                    return
                self._cv.wait(left)

    def hot_copy(self) -> Optional[Snapshot]:
        """The watched copy as it stands, however stale (a follower's reads without quorum)."""
        with self._cv:
            c = self._cache
            return None if c is None else Snapshot(dict(c.services), dict(c.specs), dict(c.tasks),
                                                   dict(c.nodes), dict(c.meta), c.revision,
                                                   dict(c.secrets))

    def _cached(self, timeout: float = 2.0) -> Optional[Snapshot]:
        """The hot copy once it has caught up with etcd's current store revision."""
        want = self.revision()
        self._wait_delivered(want, timeout)
        with self._cv:
            c = self._cache
            if c is None or self._delivered < want:
                return None
            return Snapshot(dict(c.services), dict(c.specs), dict(c.tasks), dict(c.nodes),
                            dict(c.meta), c.revision, dict(c.secrets))

    def _watch_loop(self) -> None:
        pending: List[Dict[str, Any]] = []
        while not self._stop.is_set():
            try:
                self.etcd.watch(self.data, self._delivered + 1,
                                lambda res: self._on_response(res, pending), self._stop)
            except StoreError as exc:
                if self._stop.is_set():
                    return
                if "compacted" in str(exc):
                    log.warning("watch compacted: reloading the hot copy")
                    try:
                        snap, _ = self._full_load()
                    except StoreError:
                        self._stop.wait(0.5)
                        continue
                    with self._cv:
                        self._cache, self._delivered = snap, snap.revision
                        self._cv.notify_all()
                else:
                    log.info("store watch resumes: %s", exc)
                pending.clear()
                self._stop.wait(0.2)

    def _on_response(self, result: Dict[str, Any], pending: List[Dict[str, Any]]) -> None:
        events = result.get("events") or []
        # A response holds whole transactions (no fragmenting asked): group by revision.
        by_rev: Dict[int, List[Dict[str, Any]]] = {}
        for ev in events:
            by_rev.setdefault(int(ev["kv"]["mod_revision"]), []).append(ev)
        for rev in sorted(by_rev):
            if rev <= self._delivered:
                continue
            self._deliver(rev, by_rev[rev])

    def _deliver(self, rev: int, events: List[Dict[str, Any]]) -> None:
        with self._cv:
            cache = self._cache if self._cache is not None else Snapshot()
            batch = self._fold(cache, events, rev)
            cache.revision = rev
            self._cache = cache
            self._delivered = rev
            watchers = list(self._watchers)
            self._cv.notify_all()
        for w in watchers:
            try:
                w(rev, batch)
            except Exception:
                log.exception("store watcher failed")

    def _fold(self, snap: Snapshot, events: List[Dict[str, Any]], rev: int) -> Batch:
        """Apply one transaction's events to ``snap``; the ``Batch`` they amount to."""
        services: Dict[str, Dict[str, Any]] = {}
        tasks, nodes, meta, evs, secs = [], [], {}, [], []
        d_services, d_tasks, d_nodes, d_secs = [], [], [], []
        now: Optional[float] = None
        for ev in events:
            key = E.unb64(ev["kv"]["key"]).decode()
            rel = key[len(self.data):]
            kind, _, rest = rel.partition("/")
            deleted = ev.get("type") == "DELETE"
            if kind == "seq" or not rest:
                continue
            if deleted:
                if kind == "svc":
                    snap.services.pop(rest, None)
                    d_services.append(rest)
                elif kind == "rev":
                    name, _, r = rest.rpartition("/")
                    snap.specs.pop((name, int(r)), None)
                elif kind == "task":
                    snap.tasks.pop(rest, None)
                    d_tasks.append(rest)
                elif kind == "node":
                    snap.nodes.pop(rest, None)
                    d_nodes.append(rest)
                elif kind == "meta":
                    snap.meta.pop(rest, None)
                elif kind == "sec":
                    key = self._sec_key(rest)
                    snap.secrets.pop(key, None)
                    d_secs.append(key)
                continue
            value = E.unb64(ev["kv"].get("value"))
            if kind == "event":
                d = json.loads(value)
                now = d["ts"]
                evs.append(Event(d["kind"], d["subject"], d["message"], d.get("key", "")))
                continue
            if kind == "svc":
                services[rest] = json.loads(value)
                continue
            svc_rows: Dict[str, Dict[str, Any]] = {}
            self._apply_put(snap, svc_rows, key, value, rev)
            if kind == "task":
                tasks.append(snap.tasks[rest])
            elif kind == "node":
                nodes.append(snap.nodes[rest])
            elif kind == "meta":
                meta[rest] = snap.meta[rest]
            elif kind == "sec":
                secs.append(snap.secrets[self._sec_key(rest)])
        out_services = []
        for name, row in services.items():
            tmp = Snapshot(specs=snap.specs)
            self._finish(tmp, {name: row})
            snap.services[name] = tmp.services[name]
            out_services.append(tmp.services[name])
        return Batch.of(services=out_services, delete_services=d_services, tasks=tasks,
                        delete_tasks=d_tasks, nodes=nodes, delete_nodes=d_nodes, meta=meta,
                        events=evs, now=now, secrets=secs, delete_secrets=d_secs)

    def close(self) -> None:
        self._stop.set()
        self.etcd.cancel_watches()
        with self._cv:
            self._cv.notify_all()
        t = self._thread
        if t is not None:
            t.join(20)
        self.etcd.close()
