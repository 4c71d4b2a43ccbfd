"""The node's edge: settings and certificates from the master (persisted), ACME tokens (not).

Owns ``<state_dir>/edge.json`` (0600: it holds the certificates' private keys,
which this node's ingress must present; see docs/security.md, "Edge"):
``EdgeUpdate`` as last accepted. ``offer`` orders updates as routes are ordered:
a lower term is refused; within one master run (term and epoch) only a higher
version is taken; another epoch (a restarted master) of the same or a higher
term replaces it whole. The file survives an agent restart, so the node serves
HTTPS with its certificates while the master is away.

``Challenges`` are the http-01 tokens of orders in progress: short-lived,
held in memory only, ordered the same way.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Dict, Optional, Tuple

from swarmlet.shipped.exceptions import ConfigError, ProtocolError, StaleEdge
from swarmlet.shipped.models import ChallengesUpdate, EdgeUpdate, from_wire, to_wire

FILENAME = "edge.json"


def _order(held: Tuple[int, int, int], term: int, epoch: int, version: int) -> bool:
    """True: take the update; False: the same one again. Raises ``StaleEdge`` for an older one."""
    h_version, h_epoch, h_term = held
    if term < h_term:
        raise StaleEdge(h_version, h_epoch, term=h_term,
                        message=f"stale term {term}: this node follows term {h_term}")
    if term == h_term and epoch == h_epoch:
        if version == h_version:
            return False
        if version < h_version:
            raise StaleEdge(h_version, h_epoch, term=h_term,
                            message=f"stale edge update: this node holds version {h_version}")
    return True


class EdgeStore:
    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, FILENAME)
        self.current: Optional[EdgeUpdate] = None

    @property
    def key(self) -> Tuple[int, int, int]:
        c = self.current
        return (c.version, c.epoch, c.term) if c is not None else (0, 0, 0)

    def load(self) -> Optional[EdgeUpdate]:
        try:
            with open(self.path, encoding="utf-8") as fh:
                self.current = from_wire(EdgeUpdate, json.load(fh))
        except FileNotFoundError:
            self.current = None
        except (ValueError, ProtocolError):
            os.replace(self.path, self.path + ".corrupt")   # the master sends it again
            self.current = None
        except OSError as exc:
            raise ConfigError(f"cannot read {self.path}: {exc.strerror}") from exc
        return self.current

    def offer(self, u: EdgeUpdate) -> bool:
        """Take ``u`` if newer (persisted first); False if it is the one held."""
        if not _order(self.key, u.term, u.epoch, u.version):
            return False
        self._write(u)
        self.current = u
        return True

    def _write(self, u: EdgeUpdate) -> None:
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        body = json.dumps(to_wire(u), separators=(",", ":")).encode()
        fd, tmp = tempfile.mkstemp(prefix=".edge.", dir=self.state_dir)   # 0600 from the start
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


class Challenges:
    def __init__(self) -> None:
        self.current = ChallengesUpdate(0)

    def offer(self, u: ChallengesUpdate) -> bool:
        c = self.current
        if not _order((c.version, c.epoch, c.term), u.term, u.epoch, u.version):
            return False
        self.current = u
        return True

    @property
    def tokens(self) -> Dict[str, str]:
        return dict(self.current.tokens)
