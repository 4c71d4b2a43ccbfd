"""The persisted desired state: the node's assignment, written atomically.

Owns ``<state_dir>/assignment.json``. A write goes to a temporary file in the
same directory, is fsynced, renamed over the old file, and the directory is
fsynced: after a crash or a power cut the file holds either the old or the
new assignment, never a torn one. Assignments are ordered by (term, version):
the term is the HA leader's (0 for a single master), so one from a newer
leader replaces the stored one whatever its version, and one from an older
term is refused (``StaleAssignment`` with ``term``) however new its version:
a deposed leader can never move a task. Within a term, versions only move
forward, and the same version again is a no-op. ``offers`` keeps, per term,
when an assignment of that term last arrived (accepted or not): the agents'
own view of which leader still talks to them (``GET /v1/terms``).

"No assignment known" (``None``) differs from "an empty assignment": with
``None`` the agent adopts and restarts what it finds but removes nothing.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Dict, Optional

from swarmlet.shipped.exceptions import ConfigError, ProtocolError, StaleAssignment
from swarmlet.shipped.models import Assignment, from_wire, to_wire

FILENAME = "assignment.json"
KEEP_TERMS = 8


class AssignmentStore:
    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, FILENAME)
        self.current: Optional[Assignment] = None
        self.offers: Dict[int, Dict[str, float]] = {}     # term -> {"last": unix time, "count"}

    def load(self) -> Optional[Assignment]:
        """Read the stored assignment; a corrupt file is set aside, not trusted."""
        try:
            os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create state dir {self.state_dir}: {exc.strerror}") from exc
        try:
            with open(self.path, encoding="utf-8") as fh:
                data = json.load(fh)
            self.current = from_wire(Assignment, data)
        except FileNotFoundError:
            self.current = None
        except (ValueError, ProtocolError):
            # Atomic writes make this unlikely; keep the evidence and wait for the master.
            os.replace(self.path, self.path + ".corrupt")
            self.current = None
        return self.current

    def offer(self, assignment: Assignment) -> bool:
        """Store ``assignment`` if newer. True if it replaced the stored one."""
        self._note(assignment.term)
        cur = self.current
        if cur is not None:
            if assignment.term < cur.term:
                raise StaleAssignment(
                    cur.version, offered=assignment.version, term=cur.term,
                    message=f"stale term {assignment.term}: this node follows term {cur.term}")
            if assignment.term == cur.term and assignment.version < cur.version:
                raise StaleAssignment(cur.version, offered=assignment.version, term=cur.term)
            if assignment.term == cur.term and assignment.version == cur.version:
                return False
        self._write(assignment)
        self.current = assignment
        return True

    def _note(self, term: int) -> None:
        o = self.offers.setdefault(term, {"last": 0.0, "count": 0})
        o["last"], o["count"] = time.time(), o["count"] + 1
        for old in sorted(self.offers)[:-KEEP_TERMS]:
            del self.offers[old]

    def _write(self, assignment: Assignment) -> None:
        body = json.dumps(to_wire(assignment), separators=(",", ":")).encode()
        fd, tmp = tempfile.mkstemp(prefix=".assignment.", dir=self.state_dir)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        dfd = os.open(self.state_dir, os.O_RDONLY)
        try:
            os.fsync(dfd)  # make the rename itself durable
        finally:
            os.close(dfd)
