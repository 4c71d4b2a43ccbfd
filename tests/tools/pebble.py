"""Let's Encrypt's test CA on loopback: Debian's ``pebble`` and ``pebble-challtestsrv``, real.

``Pebble.start(http_port=…, validity=…)`` runs both on free ports in a temp dir:

- ``pebble-challtestsrv`` answers pebble's DNS: every name resolves to
  ``default_ip`` (127.0.0.1, or a lab node), or to what ``set_a`` says per host;
  its own challenge servers are off (our edge answers the challenges);
- ``pebble`` with its ACME directory over HTTPS (a certificate of a throwaway
  CA whose PEM is ``ca_bundle``), validating http-01 on ``http_port`` of
  whatever address the name resolves to, issuing certificates valid for
  ``validity`` seconds (its ``certificateValidityPeriod``), no random nonce
  rejections or sleeps (``PEBBLE_WFE_NONCEREJECT=0``, ``PEBBLE_VA_NOSLEEP=1``).

``root_pem()`` is the root pebble signs with (a new one per run), to check a
served chain. A missing binary fails (``bootstrap.sh`` installs ``pebble``), never
skips. Only 127.0.0.1 and lab addresses are ever contacted.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from swarmlet import pki
from tests.conftest import free_port


def _need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise AssertionError(f"{binary} is missing: run scripts/bootstrap.sh (apt-get install pebble)")
    return path


@dataclass
class Pebble:
    dir: str
    acme_port: int
    mgmt_port: int
    dns_port: int
    challtest_port: int
    http_port: int
    ca_bundle: str
    procs: List[subprocess.Popen] = field(default_factory=list)

    @property
    def directory(self) -> str:
        return f"https://127.0.0.1:{self.acme_port}/dir"

    @classmethod
    def start(cls, http_port: int, validity: int = 3600, default_ip: str = "127.0.0.1",
              env: Optional[Dict[str, str]] = None) -> "Pebble":
        pebble, challtest = _need("pebble"), _need("pebble-challtestsrv")
        d = tempfile.mkdtemp(prefix="swt-pebble-")
        ca = pki.create_ca("pebble-test", "pebble listener")
        leaf = pki.issue(ca, "127.0.0.1", "master", ["127.0.0.1", "localhost"], days=30)
        with open(os.path.join(d, "cert.pem"), "wb") as fh:
            fh.write(leaf.cert_pem)
        with open(os.path.join(d, "key.pem"), "wb") as fh:
            fh.write(leaf.key_pem)
        self = cls(d, free_port(), free_port(), free_port(), free_port(), http_port,
                   ca.cert_pem.decode())
        config = {"pebble": {
            "listenAddress": f"127.0.0.1:{self.acme_port}",
            "managementListenAddress": f"127.0.0.1:{self.mgmt_port}",
            "certificate": os.path.join(d, "cert.pem"), "privateKey": os.path.join(d, "key.pem"),
            "httpPort": http_port, "tlsPort": free_port(), "ocspResponderURL": "",
            "externalAccountBindingRequired": False, "certificateValidityPeriod": int(validity)}}
        with open(os.path.join(d, "pebble.json"), "w") as fh:
            json.dump(config, fh)
        log = open(os.path.join(d, "challtestsrv.log"), "wb")
        self.procs.append(subprocess.Popen(
            [challtest, "-defaultIPv4", default_ip, "-defaultIPv6", "",
             "-dns01", f"127.0.0.1:{self.dns_port}", "-http01", "", "-https01", "",
             "-tlsalpn01", "", "-management", f"127.0.0.1:{self.challtest_port}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        log = open(os.path.join(d, "pebble.log"), "wb")
        penv = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0",
                "PEBBLE_AUTHZREUSE": "0", **(env or {})}
        self.procs.append(subprocess.Popen(
            [pebble, "-config", os.path.join(d, "pebble.json"), "-dnsserver",
             f"127.0.0.1:{self.dns_port}"], stdout=log, stderr=subprocess.STDOUT, env=penv,
            start_new_session=True))
        try:
            self._wait_up()
        except BaseException:
            self.stop()
            raise
        return self

    def _ctx(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.ca_bundle)

    def _wait_up(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise AssertionError(f"pebble exited ({p.returncode}): {self.logs()}")
            try:
                urllib.request.urlopen(self.directory, context=self._ctx(), timeout=2).read()
                urllib.request.urlopen(f"http://127.0.0.1:{self.challtest_port}/", timeout=2)
                return
            except urllib.error.HTTPError:
                return              # challtestsrv answers 404 at /: it is up
            except OSError as exc:
                last = exc
            time.sleep(0.1)
        raise AssertionError(f"pebble did not come up: {last}; {self.logs()}")

    def logs(self) -> str:
        out = []
        for name in ("pebble.log", "challtestsrv.log"):
            try:
                with open(os.path.join(self.dir, name), errors="replace") as fh:
                    out.append(f"--- {name}\n" + fh.read()[-4000:])
            except OSError:
                pass
        return "\n".join(out)

    def root_pem(self) -> str:
        with urllib.request.urlopen(f"https://127.0.0.1:{self.mgmt_port}/roots/0",
                                    context=self._ctx(), timeout=5) as r:
            return r.read().decode()

    def intermediate_pem(self) -> str:
        with urllib.request.urlopen(f"https://127.0.0.1:{self.mgmt_port}/intermediates/0",
                                    context=self._ctx(), timeout=5) as r:
            return r.read().decode()

    def set_a(self, host: str, addresses: List[str]) -> None:
        """``host`` resolves to ``addresses`` in pebble's DNS (challtestsrv's ``add-a``)."""
        body = json.dumps({"host": host.rstrip(".") + ".", "addresses": addresses}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.challtest_port}/add-a", data=body,
                                     method="POST")
        urllib.request.urlopen(req, timeout=5).read()

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
