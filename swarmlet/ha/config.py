"""``ha.json``: what an HA master process needs beyond the cluster home (pure load/dump).

Written by ``swarmlet master ha`` into each master's home (``/etc/swarmlet/master`` on a
server) and, without the TLS paths, into the admin host's ``cluster.json`` (``masters``),
which is how clients find every master:

    {"name": "node-1", "url": "https://10.0.0.1:7440", "bind": "0.0.0.0", "port": 7440,
     "prefix": "/swarmlet/<cluster id>", "ttl": 2,
     "etcd": {"endpoints": ["https://10.0.0.1:2379", ...],
              "ca": "etcd/ca.crt", "cert": "etcd/client.crt", "key": "etcd/client.key"},
     "masters": [{"name": "node-1", "url": "https://10.0.0.1:7440"}, ...]}

Relative paths are relative to the home.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List

from ..shipped.exceptions import ConfigError
from .etcdconf import TLSFiles

FILENAME = "ha.json"


@dataclass(frozen=True)
class HAConfig:
    name: str
    url: str
    endpoints: List[str]
    etcd_tls: TLSFiles
    prefix: str
    bind: str = "0.0.0.0"
    port: int = 7440
    ttl: int = 2
    masters: List[Dict[str, str]] = field(default_factory=list)

    def to_json(self, home: Path) -> Dict[str, Any]:
        def rel(p: str) -> str:
            try:
                return str(Path(p).relative_to(home))
            except ValueError:
                return p
        return {"name": self.name, "url": self.url, "bind": self.bind, "port": self.port,
                "prefix": self.prefix, "ttl": self.ttl,
                "etcd": {"endpoints": list(self.endpoints), "ca": rel(self.etcd_tls.ca),
                         "cert": rel(self.etcd_tls.cert), "key": rel(self.etcd_tls.key)},
                "masters": list(self.masters)}


def exists(home: Path) -> bool:
    return (home / FILENAME).exists()


def load(home: Path) -> HAConfig:
    path = home / FILENAME
    try:
        d = json.loads(path.read_text())
        e = d["etcd"]
        tls = TLSFiles(*(str(home / e[k]) for k in ("ca", "cert", "key")))
        return HAConfig(name=str(d["name"]), url=str(d["url"]), endpoints=[str(u) for u in e["endpoints"]],
                        etcd_tls=tls, prefix=str(d["prefix"]), bind=str(d.get("bind", "0.0.0.0")),
                        port=int(d.get("port", 7440)), ttl=int(d.get("ttl", 2)),
                        masters=[dict(m) for m in d.get("masters") or []])
    except FileNotFoundError:
        raise ConfigError(f"no {FILENAME} in {home}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is invalid: {exc}") from exc
