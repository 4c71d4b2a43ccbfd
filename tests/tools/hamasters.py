"""HA masters on loopback for tests and benchmarks: a cluster home, a real etcd cluster, and
real master processes (``python -m swarmlet.master`` with an ``ha.json``), each killable.

Agents are simulated (``tests/tools/simagents.py``) or absent; the masters, etcd, the
election, fencing and the API front are the real ones.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from swarmlet import cluster as clusterlib
from swarmlet.ha.config import FILENAME, HAConfig
from tests.tools.etcd import EtcdCluster

REPO = Path(__file__).resolve().parents[2]
_COPY = ("cluster.json", "ca.crt", "master.crt", "master.key", "gossip.keys")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HAMasters:
    def __init__(self, root: Path, size: int = 3, ttl: int = 2) -> None:
        self.root = Path(root)
        self.admin = self.root / "admin"
        self.admin.mkdir(parents=True, mode=0o700)
        self.cluster = clusterlib.init(name="ha", home=self.admin)
        self.etcd = EtcdCluster(self.root / "etcd", size)
        self.names = [f"m{i}" for i in range(size)]
        self.ports = {n: _free_port() for n in self.names}
        self.urls = {n: f"https://127.0.0.1:{p}" for n, p in self.ports.items()}
        masters = [{"name": n, "url": self.urls[n]} for n in self.names]
        for n in self.names:
            h = self.home(n)
            h.mkdir(mode=0o700)
            for f in _COPY:
                shutil.copy2(self.admin / f, h / f)
            cfg = HAConfig(name=n, url=self.urls[n], endpoints=self.etcd.endpoints,
                           etcd_tls=self.etcd.client, prefix=f"/swarmlet/{self.cluster.id}",
                           bind="127.0.0.1", port=self.ports[n], ttl=ttl, masters=masters)
            (h / FILENAME).write_text(json.dumps(cfg.to_json(h), indent=2))
        meta = json.loads((self.admin / "cluster.json").read_text())
        meta["masters"] = masters
        (self.admin / "cluster.json").write_text(json.dumps(meta, indent=2))
        self.cluster = clusterlib.load(self.admin)
        self.procs: Dict[str, subprocess.Popen] = {}

    def home(self, name: str) -> Path:
        return self.root / name

    def start(self, names: Optional[List[str]] = None) -> None:
        if not self.etcd.procs:
            self.etcd.start()
        for n in names or self.names:
            if n in self.procs and self.procs[n].poll() is None:
                continue
            log = open(self.root / f"{n}.log", "ab")
            self.procs[n] = subprocess.Popen(
                [sys.executable, "-m", "swarmlet.master", "--home", str(self.home(n))],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=str(REPO),
                env={**os.environ, "PYTHONPATH": str(REPO)})
            log.close()

    def kill(self, name: str) -> None:
        p = self.procs.pop(name, None)
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGCONT)
            p.kill()
            p.wait(10)

    def pause(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGCONT)

    def leader(self, timeout: float = 2.0) -> Optional[str]:
        """The leader's name, asked of each running master in turn (synchronous)."""
        import http.client
        ctx = self.cluster.client_ssl("cli")
        for n in self.names:
            if n not in self.procs:
                continue
            conn = http.client.HTTPSConnection("127.0.0.1", self.ports[n], context=ctx, timeout=timeout)
            try:
                conn.request("GET", "/v1/status")
                r = conn.getresponse()
                r.read()
                if r.status == 200 and r.getheader("X-Swarmlet-Leader"):
                    return r.getheader("X-Swarmlet-Leader")
            except (OSError, http.client.HTTPException):
                continue
            finally:
                conn.close()
        return None

    def log_tail(self, name: str, lines: int = 20) -> str:
        try:
            return "\n".join((self.root / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        for n in list(self.procs):
            p = self.procs.pop(n)
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
        self.etcd.stop()
