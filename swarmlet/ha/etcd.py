"""The master's etcd client: every endpoint, mutual TLS, errors mapped to ours.

Which library, and why. We need TLS with the etcd CA and a client certificate,
several endpoints, transactions with compares on a key's create revision,
leases and watches, against Debian's etcd 3.4.23. On PyPI here:

- ``aetcd`` 1.0 (asyncio, grpcio): opens only ``grpc.aio.insecure_channel``
  (no TLS at all) to one endpoint; using it would mean patching its private
  connect path;
- ``etcetra`` 0.1: pins grpcio 1.62 and protobuf 4.25, and its secure channel
  trusts only the system roots (no cluster CA, no client certificate);
- ``etcd3gw`` 2.x (OpenStack): etcd's own v3 JSON gateway (served by every
  etcd 3.4 member on its client port) over ``requests``, with a custom CA and
  a client certificate, pure-Python dependencies.

We take ``etcd3gw``: it speaks TLS the way we need, it is kept (OpenStack
releases it), it works against 3.4.23 (the contract tests run on it), and it
ships to servers as a few hundred kB of pure Python instead of grpcio's
native wheels per architecture. It is synchronous, which fits the store
contract (stores are synchronous; the master calls them in threads).

What this module adds on top: trying the other endpoints when one does not
answer, one-line errors (``no quorum: 1 of 3 masters reachable``, a member out
of space), and a watch that reads the gateway's newline-delimited stream line
by line (``etcd3gw``'s watcher decodes per HTTP chunk, which breaks on a large
transaction split over chunks).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import requests
from etcd3gw import exceptions as gwexc
from etcd3gw.client import Etcd3Client

from ..shipped.exceptions import NoQuorum, StoreError
from .etcdconf import TLSFiles

log = logging.getLogger("swarmlet.etcd")
API = "/v3/"
DEFAULT_TIMEOUT = 3.0
PROBE_TIMEOUT = 0.5
# A dead member's address answers nothing (no ARP reply, no RST): a request to it waits
# its whole timeout before the next member is tried. Connecting takes one round trip, so
# this bound costs a live member nothing and a failover 1 s instead of 3.
CONNECT_TIMEOUT = 1.0


def b64(data: "str | bytes") -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def unb64(data: Optional[str]) -> bytes:
    return base64.b64decode(data) if data else b""


def prefix_end(prefix: "str | bytes") -> bytes:
    """The range end that covers every key starting with ``prefix``."""
    b = bytearray(prefix.encode() if isinstance(prefix, str) else prefix)
    b[-1] += 1
    return bytes(b)


# --- transaction parts (the gateway's JSON shapes) -----------------------------------------

def put(key: "str | bytes", value: "str | bytes", lease: int = 0) -> Dict[str, Any]:
    req: Dict[str, Any] = {"key": b64(key), "value": b64(value)}
    if lease:
        req["lease"] = str(lease)
    return {"request_put": req}


def delete(key: "str | bytes", range_end: "Optional[str | bytes]" = None) -> Dict[str, Any]:
    req = {"key": b64(key)}
    if range_end is not None:
        req["range_end"] = b64(range_end)
    return {"request_delete_range": req}


def get(key: "str | bytes", range_end: "Optional[str | bytes]" = None) -> Dict[str, Any]:
    req = {"key": b64(key)}
    if range_end is not None:
        req["range_end"] = b64(range_end)
    return {"request_range": req}


def create_revision_is(key: "str | bytes", revision: int) -> Dict[str, Any]:
    return {"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": str(revision)}


def mod_revision_is(key: "str | bytes", revision: int) -> Dict[str, Any]:
    return {"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(revision)}


def _error_text(exc: gwexc.Etcd3Exception) -> str:
    text = exc.detail_text or ""
    try:
        body = json.loads(text)
        return str(body.get("error") or body.get("message") or text)
    except (ValueError, AttributeError):
        return text or type(exc).__name__


# Members this process saw not answering, by endpoint, with when: every client here (the
# elector's, the store's, the prober's) tries them last for a while, so a failover pays a
# dead member's connect timeout once per process, not once per client.
_DOWN: Dict[str, float] = {}
DOWN_FOR = 10.0


def _mark(endpoint: str, up: bool) -> None:
    if up:
        _DOWN.pop(endpoint, None)
    else:
        _DOWN[endpoint] = time.monotonic()


_QUORUM_WORDS = ("request timed out", "no leader", "leader changed", "too many requests",
                 "timed out", "unavailable")


class Etcd:
    """A client for one etcd cluster (several endpoints), thread-safe."""

    def __init__(self, endpoints: Sequence[str], tls: TLSFiles,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        if not endpoints:
            raise StoreError("no etcd endpoints given")
        self.endpoints = list(endpoints)
        self.tls = tls
        self.timeout = timeout
        self._lock = threading.Lock()
        self._local = threading.local()
        self._preferred = 0
        self._streams: set = set()       # open watch responses, closed by cancel_watches()

    # --- one call, any endpoint ------------------------------------------------------------

    def _client(self, i: int) -> Etcd3Client:
        # One requests.Session per thread and endpoint: sessions are not safe to share.
        clients = getattr(self._local, "clients", None)
        if clients is None:
            clients = self._local.clients = {}
        c = clients.get(i)
        if c is None:
            url = requests.utils.urlparse(self.endpoints[i])
            c = clients[i] = Etcd3Client(
                host=url.hostname or "", port=url.port or 2379, protocol="https",
                ca_cert=self.tls.ca, cert_key=self.tls.key, cert_cert=self.tls.cert,
                timeout=self.timeout, api_path=API)
            # Never the environment's CA bundle or proxies (requests lets REQUESTS_CA_BUNDLE
            # override a session's own CA): etcd is reached directly, with the etcd CA only.
            c.session.trust_env = False
        return c

    def call(self, path: str, body: Dict[str, Any], timeout: Optional[float] = None,
             endpoint: Optional[int] = None) -> Dict[str, Any]:
        """POST ``body`` to ``/v3/<path>`` on a member that answers; errors mapped to ours."""
        order = [endpoint] if endpoint is not None else self._order()
        last: Optional[BaseException] = None
        quorumish = False
        for i in order:
            c = self._client(i)
            try:
                t = timeout or self.timeout
                out = c.session.post(c.get_url(path), json=body,
                                     timeout=(min(CONNECT_TIMEOUT, t), t))
            except requests.exceptions.SSLError as exc:
                raise StoreError(f"TLS to etcd at {self.endpoints[i]} failed: {exc}",
                                 hint="the master's etcd certificate must be from the etcd CA") from exc
            except requests.exceptions.RequestException as exc:
                if isinstance(exc, requests.exceptions.ConnectionError):
                    _mark(self.endpoints[i], False)
                last = exc
                continue
            if out.status_code == 200:
                self._preferred = i
                _mark(self.endpoints[i], True)
                return out.json()
            text = _error_text(gwexc.Etcd3Exception(out.text))
            low = text.lower()
            if "database space exceeded" in low or "no space" in low:
                raise StoreError(f"etcd member {self.endpoints[i]} is out of space: {text}",
                                 hint="free disk space on that master, then run "
                                      "'etcdctl alarm disarm' (see docs/ha.md)")
            if out.status_code in (503, 504, 408, 429) or any(w in low for w in _QUORUM_WORDS):
                quorumish = True
                last = StoreError(text)
                continue
            raise StoreError(f"etcd refused {path}: {text}")
        reachable = self.reachable()
        if quorumish or reachable < len(self.endpoints):
            need = len(self.endpoints) // 2 + 1
            if reachable < need or quorumish:
                raise NoQuorum(f"no quorum: {reachable} of {len(self.endpoints)} masters reachable",
                               hint="writes fail until a majority of the masters is back; "
                                    "reads may be stale; the data plane keeps serving")
        raise StoreError(f"etcd unreachable: {last}")

    def _order(self) -> List[int]:
        """Endpoint indexes to try: the last one that answered first, members seen down
        lately last."""
        n = len(self.endpoints)
        ring = [(self._preferred + k) % n for k in range(n)]
        now = time.monotonic()
        def down(i: int) -> bool:
            seen = _DOWN.get(self.endpoints[i])
            return seen is not None and now - seen < DOWN_FOR
        return sorted(ring, key=down)

    def reachable(self) -> int:
        """How many members answer a status probe (works without quorum)."""
        n = 0
        for i in range(len(self.endpoints)):
            c = self._client(i)
            try:
                r = c.session.post(c.get_url("maintenance/status"), json={}, timeout=PROBE_TIMEOUT)
                n += r.status_code == 200
                _mark(self.endpoints[i], r.status_code == 200)
            except requests.exceptions.RequestException:
                _mark(self.endpoints[i], False)
        return n

    # --- key-value -------------------------------------------------------------------------

    def txn(self, compare: List[Dict[str, Any]], success: List[Dict[str, Any]],
            failure: Optional[List[Dict[str, Any]]] = None,
            timeout: Optional[float] = None) -> Dict[str, Any]:
        return self.call("kv/txn", {"compare": compare, "success": success,
                                    "failure": failure or []}, timeout)

    def range(self, key: "str | bytes", range_end: "Optional[str | bytes]" = None,
              revision: int = 0, serializable: bool = False,
              limit: int = 0) -> Dict[str, Any]:
        body: Dict[str, Any] = {"key": b64(key)}
        if range_end is not None:
            body["range_end"] = b64(range_end)
        if revision:
            body["revision"] = str(revision)
        if serializable:
            body["serializable"] = True
        if limit:
            body["limit"] = str(limit)
        return self.call("kv/range", body)

    def get_prefix(self, prefix: str, revision: int = 0) -> Dict[str, Any]:
        return self.range(prefix, prefix_end(prefix), revision=revision)

    def put(self, key: "str | bytes", value: "str | bytes", lease: int = 0) -> Dict[str, Any]:
        body = put(key, value, lease)["request_put"]
        return self.call("kv/put", body)

    def delete_prefix(self, prefix: str) -> Dict[str, Any]:
        return self.call("kv/deleterange", {"key": b64(prefix), "range_end": b64(prefix_end(prefix))})

    # --- leases ----------------------------------------------------------------------------

    def grant(self, ttl: int) -> int:
        return int(self.call("lease/grant", {"TTL": str(ttl), "ID": "0"})["ID"])

    def keepalive(self, lease: int, timeout: Optional[float] = None) -> int:
        """Refresh ``lease``; its TTL left (0 or less: it has expired)."""
        out = self.call("lease/keepalive", {"ID": str(lease)}, timeout)
        return int((out.get("result") or {}).get("TTL", 0))

    def revoke(self, lease: int) -> None:
        try:
            self.call("kv/lease/revoke", {"ID": str(lease)}, timeout=1.0)
        except StoreError:
            pass   # it lapses on its own within its TTL

    # --- cluster ---------------------------------------------------------------------------

    def members(self) -> List[Dict[str, Any]]:
        return list(self.call("cluster/member/list", {}).get("members") or [])

    def status(self, endpoint: int) -> Dict[str, Any]:
        return self.call("maintenance/status", {}, timeout=PROBE_TIMEOUT, endpoint=endpoint)

    # --- watch -----------------------------------------------------------------------------

    def watch(self, prefix: str, start_revision: int, on_response: Callable[[Dict[str, Any]], None],
              stop: threading.Event, read_timeout: float = 15.0) -> None:
        """Stream watch responses for ``prefix`` from ``start_revision`` into ``on_response``
        until ``stop`` is set or the stream breaks (then ``StoreError``; the caller resumes
        from the last revision it saw, possibly on another member)."""
        body = {"create_request": {"key": b64(prefix), "range_end": b64(prefix_end(prefix)),
                                   "start_revision": str(start_revision),
                                   "progress_notify": True}}
        last: Optional[BaseException] = None
        for i in self._order():
            c = self._client(i)
            try:
                resp = c.session.post(c.get_url("watch"), json=body, stream=True,
                                      timeout=(min(CONNECT_TIMEOUT, self.timeout), read_timeout))
            except requests.exceptions.RequestException as exc:
                last = exc
                continue
            with self._lock:
                self._streams.add(resp)
            if stop.is_set():
                resp.close()
            try:
                if resp.status_code != 200:
                    last = StoreError(f"watch refused: {resp.status_code}")
                    continue
                for line in _lines(resp, stop):
                    result = (json.loads(line) or {}).get("result") or {}
                    if result.get("canceled") or result.get("compact_revision"):
                        raise StoreError(f"watch canceled (compacted at "
                                         f"{result.get('compact_revision', '?')})")
                    on_response(result)
                return
            except (requests.exceptions.RequestException, AttributeError, ValueError) as exc:
                # AttributeError/ValueError: the stream was closed under the reader (cancel).
                if stop.is_set():
                    return
                raise StoreError(f"watch stream broke: {exc}") from exc
            finally:
                with self._lock:
                    self._streams.discard(resp)
                resp.close()
        raise StoreError(f"cannot watch: {last}")

    def cancel_watches(self) -> None:
        """Close every open watch stream (their readers return once ``stop`` is set)."""
        with self._lock:
            streams = list(self._streams)
        for resp in streams:
            _shutdown(resp)

    def close(self) -> None:
        self.cancel_watches()
        clients = getattr(self._local, "clients", None) or {}
        for c in clients.values():
            c.session.close()


def _shutdown(resp: requests.Response) -> None:
    """Wake a reader blocked on ``resp``'s socket: ``close()`` alone does not interrupt a
    ``recv`` in another thread, ``shutdown`` does."""
    import socket
    conn = getattr(resp.raw, "connection", None) or getattr(resp.raw, "_connection", None)
    sock = getattr(conn, "sock", None)
    try:
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        resp.close()
    except Exception:   # closing under another thread's read: best effort
        pass


def _lines(resp: requests.Response, stop: threading.Event) -> Iterator[bytes]:
    for line in resp.iter_lines(chunk_size=65536):
        if stop.is_set():
            return
        if line.strip():
            yield line
