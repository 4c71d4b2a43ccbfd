"""A cluster on a private lab for benchmarks: lab up, init, join, images pushed.

Benchmarks import this (``sys.path`` gets ``bench/``); each uses its own
``SWARMLET_HOME`` and lab name (``swt-bench-*``), and tears it down after.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BenchCluster:
    def __init__(self, name: str, nodes: int = 3) -> None:
        self.env = dict(os.environ, SWARMLET_HOME=tempfile.mkdtemp(prefix=f"bench-{name}-"),
                        SWARMLET_LAB=f"swt-bench-{name}")
        self.n = nodes
        self.nodes: List[dict] = []
        self.subnet = ""

    def sw(self, *args: str, check: bool = True, timeout: float = 600, env: Optional[dict] = None):
        p = subprocess.run([sys.executable, "-m", "swarmlet.cli.main", *args], env=env or self.env,
                           capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise SystemExit(f"swarmlet {' '.join(args)} failed:\n{p.stdout}\n{p.stderr}")
        return p

    def json(self, *args: str):
        return json.loads(self.sw(*args, "-o", "json").stdout)

    def up(self, images=("1", "2", "broken")) -> "BenchCluster":
        self.sw("lab", "up", "--nodes", str(self.n))
        self.nodes = self.json("lab", "ls")
        self.sw("init", "--name", "bench", "--master-port", str(free_port()))
        self.sw("join", "-i", self.nodes[0]["key"], "--accept-new-host-key", *[n["ssh"] for n in self.nodes])
        for t in images:
            self.sw("image", "push", f"swarmlet-hello:{t}")
        out = subprocess.run(["docker", "network", "inspect", self.env["SWARMLET_LAB"], "-f",
                              "{{(index .IPAM.Config 0).Subnet}}"], capture_output=True, text=True)
        self.subnet = out.stdout.strip()
        return self

    def down(self) -> None:
        self.sw("master", "stop", check=False)
        self.sw("lab", "down", check=False)

    def agent_ctx(self) -> ssl.SSLContext:
        from swarmlet import cluster as clusterlib
        c = clusterlib.load(__import__("pathlib").Path(self.env["SWARMLET_HOME"]))
        ctx = c.client_ssl("cli")
        ctx.check_hostname = False
        return ctx


def wait(pred: Callable[[], bool], timeout: float, every: float = 0.1) -> Optional[float]:
    """Seconds until ``pred()`` holds, or None on timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(every)
    return None
