"""Pure backend choice: health state, ejection, panic mode, draining.

No I/O and no clock of its own: every method takes ``now`` (seconds, any
monotonic origin), so the rules are tested with a fake clock. The proxy and the
active checker call in; this module never calls out.

The rules:

- **Eligible** = not draining, healthy by active checks, not ejected.
- **Active checks** (HAProxy): ``fall`` consecutive failures mark a backend
  down, ``rise`` consecutive successes mark it up again.
- **Passive checks**: a connect error, a reset or a timeout ejects at once
  (kind ``network``); ``consecutive_5xx`` answers in a row eject (kind
  ``5xx``). An ejection lasts ``base_ejection × n`` (n = recent ejections,
  Envoy-style), capped at ``max_ejection``; n decays back to zero once the
  backend has stayed in for ``max_ejection``. A network ejection also ends at
  the next successful active check, so a restarted replica is back within
  one interval instead of waiting out 30 s.
- **Panic**: when no backend is eligible (or at most ``panic_threshold`` of
  them), route to every non-draining backend rather than refuse everyone.
- **Draining**: a backend removed by ``set_backends`` takes no new request;
  it is collected once its in-flight count reaches zero or its drain deadline
  passes.
- **Policies**: round robin, least connections (ties rotate), and sticky
  sessions by cookie value on top of either. The value is
  HMAC-SHA256(``sticky_key``, backend address), truncated: it names a backend
  without telling anyone its address (an unkeyed hash of ip:port did).

Shipped to agents (ingress mode): Python 3.9, standard library only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import os
from typing import Dict, Iterable, List, Optional, Tuple

from .config import Backend, LBConfig
from .metrics import RateMeter

Key = Tuple[str, int]


class BackendState:
    """Everything the balancer knows about one backend (mutable, owned by Router)."""

    __slots__ = (
        "backend", "key", "sticky_id", "healthy", "ok_streak", "fail_streak",
        "ejected_until", "eject_kind", "ejections", "ejections_total",
        "consecutive_5xx", "draining", "drain_deadline", "active", "requests",
        "failures", "last_check_at", "last_error", "rate",
    )

    def __init__(self, backend: Backend, healthy: bool, sticky_id: str = "") -> None:
        self.backend = backend
        self.key: Key = backend.key
        self.sticky_id = sticky_id
        self.healthy = healthy
        self.ok_streak = 0
        self.fail_streak = 0
        self.ejected_until = 0.0
        self.eject_kind = ""
        self.ejections = 0          # recent, drives the ejection time
        self.ejections_total = 0
        self.consecutive_5xx = 0
        self.draining = False
        self.drain_deadline = math.inf
        self.active = 0             # in-flight requests and tunnels (the proxy counts)
        self.requests = 0
        self.failures = 0
        self.last_check_at = 0.0
        self.last_error = ""
        self.rate = RateMeter()     # answers per second, for status

    def ejected(self, now: float) -> bool:
        return self.ejected_until > now

    def describe(self, now: float) -> dict:
        return {
            "address": self.backend.address, "name": self.backend.name,
            "healthy": self.healthy, "ejected": self.ejected(now),
            "ejected_for": max(0.0, self.ejected_until - now), "eject_kind": self.eject_kind,
            "ejections": self.ejections_total, "draining": self.draining,
            "active": self.active, "requests": self.requests, "failures": self.failures,
            "requests_per_second": self.rate.rate(now),
            "last_error": self.last_error,
        }


class Router:
    def __init__(self, config: LBConfig) -> None:
        self.config = config
        self.states: Dict[Key, BackendState] = {}
        self.by_sticky: Dict[str, BackendState] = {}
        self.sticky_key = config.sticky_key or os.urandom(32)
        self.panic = False
        self.panics = 0             # picks made in panic mode
        self._rr = 0
        self._eligible: List[BackendState] = []
        self._live: List[BackendState] = []   # non-draining: the panic set
        self._valid_until = -math.inf       # the cache holds until an ejection ends

    # --- membership -----------------------------------------------------------

    def set_backends(self, backends: Iterable[Backend], now: float
                     ) -> Tuple[List[BackendState], List[BackendState]]:
        """Make ``backends`` the live set; return (added, newly draining)."""
        wanted = {b.key: b for b in backends}
        added: List[BackendState] = []
        drained: List[BackendState] = []
        for key, backend in wanted.items():
            st = self.states.get(key)
            if st is None:
                st = BackendState(backend, self.config.health.initial_healthy
                                  or not self.config.health.enabled, self.sticky_id(backend))
                self.states[key] = st
                self.by_sticky[st.sticky_id] = st
                added.append(st)
            else:
                st.backend = backend
                if st.draining:     # re-added before it finished draining
                    st.draining = False
                    st.drain_deadline = math.inf
        for key, st in self.states.items():
            if key not in wanted and not st.draining:
                st.draining = True
                st.drain_deadline = now + self.config.drain_timeout
                drained.append(st)
        self._invalidate()
        return added, drained

    def sticky_id(self, backend: Backend) -> str:
        """The cookie value naming ``backend``: keyed, so it reveals no address."""
        mac = hmac.new(self.sticky_key, backend.address.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac[:12]).decode()

    def collect_drained(self, now: float) -> List[BackendState]:
        """Forget draining backends that are idle or past their deadline."""
        done = [st for st in self.states.values()
                if st.draining and (st.active <= 0 or now >= st.drain_deadline)]
        for st in done:
            del self.states[st.key]
            self.by_sticky.pop(st.sticky_id, None)
        if done:
            self._invalidate()
        return done

    # --- choice -----------------------------------------------------------------

    def pick(self, now: float, exclude: Optional[List[Key]] = None,
             sticky: Optional[str] = None) -> Optional[BackendState]:
        """The backend for the next request, or None when there is none at all."""
        if now >= self._valid_until:
            self._recompute(now)
        if sticky is not None:
            st = self.by_sticky.get(sticky)
            if (st is not None and not st.draining and st.healthy and not st.ejected(now)
                    and not (exclude and st.key in exclude)):
                return st
        cands = self._eligible
        live = self._live
        self.panic = len(cands) <= self.config.panic_threshold * len(live)
        if self.panic:
            cands = live
            if cands:
                self.panics += 1
        if exclude:
            cands = [st for st in cands if st.key not in exclude]
        if not cands:
            return None
        n = len(cands)
        self._rr += 1
        if n == 1:
            return cands[0]
        if self.config.policy == "least_conn":
            start = self._rr % n
            best = cands[start]
            for i in range(1, n):
                st = cands[(start + i) % n]
                if st.active < best.active:
                    best = st
            return best
        return cands[self._rr % n]

    def eligible(self, now: float) -> List[BackendState]:
        if now >= self._valid_until:
            self._recompute(now)
        return list(self._eligible)

    # --- passive checks ---------------------------------------------------------

    def record_response(self, st: BackendState, status: int, now: float) -> bool:
        """Count one answer; True when it ejected the backend (5xx streak)."""
        st.requests += 1
        st.rate.add(now)
        if status < 500:
            st.consecutive_5xx = 0
            return False
        st.consecutive_5xx += 1
        limit = self.config.outlier.consecutive_5xx
        if limit and st.consecutive_5xx >= limit:
            st.consecutive_5xx = 0
            return self._eject(st, now, "5xx")
        return False

    def record_failure(self, st: BackendState, now: float, error: str,
                       eject: bool = True) -> bool:
        """A connect error, reset or timeout; True when it ejected the backend."""
        st.failures += 1
        st.last_error = error
        if eject and self.config.outlier.eject_on_connect_error:
            return self._eject(st, now, "network")
        return False

    def _eject(self, st: BackendState, now: float, kind: str) -> bool:
        if st.ejected(now):
            return False            # a burst of in-flight failures is one ejection
        cfg = self.config.outlier
        if st.ejections and now > st.ejected_until + cfg.max_ejection:
            st.ejections = 0        # it behaved for a long while: start over
        st.ejections += 1
        st.ejections_total += 1
        st.ejected_until = now + min(cfg.base_ejection * st.ejections, cfg.max_ejection)
        st.eject_kind = kind
        self._invalidate()
        return True

    # --- active checks ----------------------------------------------------------

    def record_check(self, st: BackendState, ok: bool, now: float,
                     error: str = "") -> Optional[str]:
        """Apply one active check; return "up" or "down" on a transition."""
        hc = self.config.health
        st.last_check_at = now
        if ok:
            st.ok_streak += 1
            st.fail_streak = 0
            if st.eject_kind == "network" and st.ejected(now):
                st.ejected_until = now      # reachable again: end the network ejection
                self._invalidate()
            if not st.healthy and st.ok_streak >= hc.rise:
                st.healthy = True
                self._invalidate()
                return "up"
            return None
        st.fail_streak += 1
        st.ok_streak = 0
        st.last_error = error
        if st.healthy and st.fail_streak >= hc.fall:
            st.healthy = False
            self._invalidate()
            return "down"
        return None

    # --- cache --------------------------------------------------------------------

    def _invalidate(self) -> None:
        self._valid_until = -math.inf

    def _recompute(self, now: float) -> None:
        live = [st for st in self.states.values() if not st.draining]
        eligible = []
        until = math.inf
        for st in live:
            if st.ejected(now):
                until = min(until, st.ejected_until)
            elif st.healthy:
                eligible.append(st)
        self._live = live
        self._eligible = eligible
        self._valid_until = until
