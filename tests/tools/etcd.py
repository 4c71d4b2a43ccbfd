"""Real etcd clusters on loopback for tests: 1 or 3 members, TLS from a test etcd CA.

Members are started with ``swarmlet.ha.etcdconf.member_args`` (the flags
production runs) from the ``etcd`` binary Debian's ``etcd-server`` installs
(``scripts/bootstrap.sh``). A missing binary fails the test, never skips it.
Each member's stderr goes to ``<root>/<name>.log``; ``kill``/``start`` model a
member dying and coming back with its data directory.
"""

from __future__ import annotations

import shutil
import signal
import random
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Dict, List, Optional

from swarmlet import pki
from swarmlet.ha import etcdconf, etcdpki


def _free_port() -> int:
    """A free port below the kernel's ephemeral range: a port the kernel hands out (bind to 0)
    can be taken, before etcd binds it, as the source port of an outgoing connection (the
    members dial each other meanwhile): CI once saw "bind: address already in use" so."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(200):
        port = random.randrange(10000, max(low, 10001))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:          # all taken: the kernel's choice, as before
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def etcd_binary() -> str:
    path = shutil.which("etcd")
    if path is None:
        raise AssertionError("no etcd binary on PATH: run scripts/bootstrap.sh "
                             "(it installs Debian's etcd-server)")
    return path


class EtcdCluster:
    def __init__(self, root: Path, size: int = 1, host: str = "127.0.0.1",
                 quota_bytes: int = etcdconf.QUOTA_BACKEND_BYTES) -> None:
        self.quota_bytes = quota_bytes
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.binary = etcd_binary()
        self.token = uuid.uuid4().hex[:12]
        self.ca = etcdpki.create_ca(self.token, "test")
        (self.root / "ca.crt").write_bytes(self.ca.cert_pem)
        self.members = [etcdconf.Member(f"m{i}", host, _free_port(), _free_port())
                        for i in range(size)]
        self.procs: Dict[str, subprocess.Popen] = {}
        for m in self.members:
            kp = etcdpki.member_cert(self.ca, m.name, [host])
            self._write(m.name, kp)
        self.client = self._write("client", etcdpki.client_cert(self.ca, "test"))

    def _write(self, name: str, kp: pki.KeyPair) -> etcdconf.TLSFiles:
        crt, key = self.root / f"{name}.crt", self.root / f"{name}.key"
        crt.write_bytes(kp.cert_pem)
        key.write_bytes(kp.key_pem)
        key.chmod(0o600)
        return etcdconf.TLSFiles(str(self.root / "ca.crt"), str(crt), str(key))

    def tls(self, name: str) -> etcdconf.TLSFiles:
        return etcdconf.TLSFiles(str(self.root / "ca.crt"), str(self.root / f"{name}.crt"),
                                 str(self.root / f"{name}.key"))

    @property
    def endpoints(self) -> List[str]:
        return [m.client_url for m in self.members]

    def member(self, name: str) -> etcdconf.Member:
        return next(m for m in self.members if m.name == name)

    def start(self, name: Optional[str] = None, state: str = "new", wait: bool = True) -> None:
        for m in self.members if name is None else [self.member(name)]:
            if m.name in self.procs and self.procs[m.name].poll() is None:
                continue
            argv = etcdconf.member_args(m, self.members, str(self.root / f"{m.name}.data"),
                                        self.tls(m.name), self.token, state=state,
                                        quota_bytes=self.quota_bytes, binary=self.binary)
            log = open(self.root / f"{m.name}.log", "ab")
            self.procs[m.name] = subprocess.Popen(argv, stdout=log, stderr=log,
                                                  stdin=subprocess.DEVNULL)
            log.close()
        if wait:
            self.wait_healthy(None if name is None else [name])

    def wait_healthy(self, names: Optional[List[str]] = None, timeout: float = 30.0) -> None:
        import requests
        names = names or [m.name for m in self.members]
        deadline = time.monotonic() + timeout
        pending = set(names)
        while pending and time.monotonic() < deadline:
            for n in list(pending):
                p = self.procs.get(n)
                if p is not None and p.poll() is not None:
                    raise AssertionError(f"etcd member {n} exited {p.returncode}: "
                                         f"{self.log_tail(n)}")
                try:
                    r = requests.get(self.member(n).client_url + "/health", timeout=1,
                                     verify=self.client.ca, cert=(self.client.cert, self.client.key))
                    if r.ok and r.json().get("health") == "true":
                        pending.discard(n)
                except (requests.RequestException, ValueError):
                    pass
            time.sleep(0.1)
        if pending:
            raise AssertionError(f"etcd members {sorted(pending)} not healthy within {timeout}s: "
                                 + " | ".join(self.log_tail(n) for n in sorted(pending)))

    def log_tail(self, name: str, lines: int = 3) -> str:
        try:
            text = (self.root / f"{name}.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return " / ".join(text.strip().splitlines()[-lines:])

    def kill(self, name: str) -> None:
        p = self.procs.pop(name, None)
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait(10)

    def pause(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGCONT)

    def stop(self) -> None:
        for name in list(self.procs):
            p = self.procs.pop(name)
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
