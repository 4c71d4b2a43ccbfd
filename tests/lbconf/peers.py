"""The proxies under comparison, each started as its own process in front of a
given backend port on loopback: swarmlet (``python -m swarmlet.shipped.lb``),
nginx and HAProxy with the configurations their documentation gives for a
keep-alive reverse proxy with websockets (the same as bench/lb's).

A missing nginx or haproxy raises ``MissingPeer`` (the tests turn it into a
failure, never a skip); ``scripts/bootstrap.sh`` installs both.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[2]
# The swarmlet row runs this checkout, or another one (to compare with older code).
SWARMLET_REPO = Path(os.environ.get("SWARMLET_LBCONF_REPO") or REPO)
PROXIES = ("swarmlet", "nginx", "haproxy")

NGINX = """
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/nginx.err warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path {d}/p1; proxy_temp_path {d}/p2; fastcgi_temp_path {d}/p3;
  uwsgi_temp_path {d}/p4; scgi_temp_path {d}/p5;
  map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
  upstream backend {{ server 127.0.0.1:{backend}; keepalive 16; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Host $host;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_read_timeout 5s;
    }}
  }}
}}
"""

HAPROXY = """
global
  maxconn 1024
defaults
  mode http
  timeout connect 3s
  timeout client 5s
  timeout server 5s
  timeout http-request 5s
  timeout tunnel 10s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:{port}
  default_backend be
backend be
  server b1 127.0.0.1:{backend}
"""


class MissingPeer(Exception):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def check_peers(names=PROXIES) -> None:
    missing = [n for n in names if n != "swarmlet" and shutil.which(n) is None]
    if missing:
        raise MissingPeer(f"{', '.join(missing)} not installed (scripts/bootstrap.sh "
                          f"installs nginx-light and haproxy)")


class Proxy:
    """One running proxy process: ``.name``, ``.port``; ``stop()``."""

    def __init__(self, name: str, backend_port: int, extra: Optional[List[str]] = None) -> None:
        check_peers([name])
        self.name = name
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"swarmlet-lbconf-{name}-"))
        log = (self.dir / "log").open("w")
        if name == "nginx":
            (self.dir / "nginx.conf").write_text(NGINX.format(d=self.dir, port=self.port,
                                                              backend=backend_port))
            cmd = ["nginx", "-p", str(self.dir), "-c", str(self.dir / "nginx.conf")]
        elif name == "haproxy":
            (self.dir / "haproxy.cfg").write_text(HAPROXY.format(port=self.port,
                                                                 backend=backend_port))
            cmd = ["haproxy", "-f", str(self.dir / "haproxy.cfg")]
        else:
            cmd = [sys.executable, "-m", "swarmlet.shipped.lb", "--listen",
                   f"127.0.0.1:{self.port}", "--backend", f"127.0.0.1:{backend_port}",
                   "--no-health-checks", *(extra or [])]
        env = dict(os.environ, PYTHONPATH=str(SWARMLET_REPO) + os.pathsep
                   + os.environ.get("PYTHONPATH", ""))
        # cwd: ``python -m`` puts it first on sys.path
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                     cwd=str(SWARMLET_REPO if name == "swarmlet" else self.dir))
        try:
            wait_port(self.port)
        except RuntimeError:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and its children (nginx's worker), from /proc."""
    total = 0
    pids = [pid]
    try:
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == pid:
                    pids.append(int(entry.name))
        for p in pids:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    except OSError:
        pass
    return total


def start_all(backend_ports: Dict[str, int], extra: Optional[List[str]] = None) -> Dict[str, Proxy]:
    out: Dict[str, Proxy] = {}
    try:
        for name, port in backend_ports.items():
            out[name] = Proxy(name, port, extra if name == "swarmlet" else None)
    except BaseException:
        for p in out.values():
            p.stop()
        raise
    return out
