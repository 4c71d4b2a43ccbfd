"""The node's routing table, on its own channel: applied from the master's updates, persisted.

Owns ``<state_dir>/routes.json``: the whole table, its version, the master's
epoch (one master run) and term, and the draining task ids. ``offer`` takes a
``RoutesUpdate``: a whole table replaces the stored one if it is newer (a
higher term, another epoch, or a higher version); a delta applies only on top
of the exact table it was made against (same epoch, ``base`` == our version),
else ``StaleRoutes`` (409) asks the master for the whole table. The table
survives an agent restart, so the node's ingress and discovery serve with the
master gone (static stability). Written atomically (temp file, rename) but not
fsynced: it changes with every health flip, a table lost to a power cut is
only a little stale (the master resends it whole to a node that comes back),
and an fsync on every change would stall a busy node's disk.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from typing import Tuple

from swarmlet.shipped import routediff
from swarmlet.shipped.exceptions import ConfigError, ProtocolError, StaleRoutes
from swarmlet.shipped.models import Route, RoutesUpdate, from_wire, to_wire

FILENAME = "routes.json"


@dataclass(frozen=True)
class RouteTable:
    version: int = 0
    epoch: int = 0
    term: int = 0
    routes: Tuple[Route, ...] = ()
    draining: Tuple[str, ...] = ()


class RoutesStore:
    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, FILENAME)
        self.current = RouteTable()

    def load(self) -> RouteTable:
        try:
            os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create state dir {self.state_dir}: {exc.strerror}") from exc
        try:
            with open(self.path, encoding="utf-8") as fh:
                self.current = from_wire(RouteTable, json.load(fh))
        except FileNotFoundError:
            self.current = RouteTable()
        except (ValueError, ProtocolError):
            os.replace(self.path, self.path + ".corrupt")   # keep the evidence; the master resends
            self.current = RouteTable()
        return self.current

    def offer(self, u: RoutesUpdate) -> bool:
        """Apply ``u``; True if the table changed. Raises ``StaleRoutes`` when it cannot."""
        cur = self.current
        if u.term < cur.term:
            raise StaleRoutes(cur.version, cur.epoch, term=cur.term,
                              message=f"stale term {u.term}: this node follows term {cur.term}")
        same_run = u.term == cur.term and u.epoch == cur.epoch
        if same_run and u.version <= cur.version:
            if u.version == cur.version:
                return False
            raise StaleRoutes(cur.version, cur.epoch, term=cur.term)
        if u.base == 0:
            routes = routediff.ordered(u.routes)
        elif same_run and u.base == cur.version:
            routes = routediff.apply(cur.routes, u.routes, u.removed, u.changes)
        else:
            raise StaleRoutes(cur.version, cur.epoch, term=cur.term,
                              message=f"routes delta against version {u.base} of epoch {u.epoch}: "
                                      f"this node holds version {cur.version} of epoch {cur.epoch}")
        new = RouteTable(u.version, u.epoch, u.term, routes, tuple(u.draining))
        self._write(new)
        self.current = new
        return True

    def replace(self, routes: Tuple[Route, ...], draining: Tuple[str, ...], term: int) -> bool:
        """A whole table that came inside an assignment (a master of an earlier version)."""
        new = RouteTable(self.current.version, self.current.epoch, max(term, self.current.term),
                         routediff.ordered(routes), tuple(draining))
        if new == self.current:
            return False
        self._write(new)
        self.current = new
        return True

    def _write(self, table: RouteTable) -> None:
        body = json.dumps(to_wire(table), separators=(",", ":")).encode()
        fd, tmp = tempfile.mkstemp(prefix=".routes.", dir=self.state_dir)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(body)
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise


