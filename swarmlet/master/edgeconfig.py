"""The cluster's edge settings: ports, default service, the ACME directory. Pure.

Kept in the store's meta ``edge_config`` (so HA masters share it), read and
changed with ``GET/PATCH /v1/edge`` (``swarmlet edge config``):

- ``http_port`` / ``https_port`` (80, 443): where every node's edge listens;
- ``default_service``: answers hosts no service claims (empty: 404);
- ``acme_directory``: the ACME CA's directory URL. **Empty by default: no CA is
  ever asked until one is set** (``letsencrypt`` and ``letsencrypt-staging`` are
  shortcuts for Let's Encrypt's); services with ``tls: acme`` wait, with an event
  saying so;
- ``acme_email``: the account's contact; ``acme_ca_bundle``: PEM of the CAs that
  sign the directory's own HTTPS certificate, for a private CA (pebble, step-ca);
- ``renew_before_days`` (30): renew when this much is left, or a third of the
  certificate's lifetime if that is less (Let's Encrypt's 90 days: 30 days before;
  a 1-hour test certificate: 20 minutes before).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Dict, Mapping

from ..shipped.exceptions import UsageError
from ..shipped.validate import name_problem

META_KEY = "edge_config"
DIRECTORIES = {
    "letsencrypt": "https://acme-v02.api.letsencrypt.org/directory",
    "letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
}


@dataclass(frozen=True)
class EdgeSettings:
    http_port: int = 80
    https_port: int = 443
    default_service: str = ""
    acme_directory: str = ""
    acme_email: str = ""
    acme_ca_bundle: str = ""
    renew_before_days: float = 30.0

    def view(self) -> Dict[str, Any]:
        return {"http_port": self.http_port, "https_port": self.https_port,
                "default_service": self.default_service, "acme_directory": self.acme_directory,
                "acme_email": self.acme_email, "acme_ca_bundle": bool(self.acme_ca_bundle),
                "renew_before_days": self.renew_before_days}


def from_meta(value: Any) -> EdgeSettings:
    if not isinstance(value, dict):
        return EdgeSettings()
    try:
        return patched(EdgeSettings(), value)
    except UsageError:
        return EdgeSettings()


def patched(cur: EdgeSettings, changes: Mapping[str, Any]) -> EdgeSettings:
    """``cur`` with ``changes`` (a PATCH body); ``UsageError`` naming a bad field."""
    out: Dict[str, Any] = {}
    for k, v in changes.items():
        if k in ("http_port", "https_port"):
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 65535:
                raise UsageError(f"{k}: expected a port 1..65535, got {v!r}")
            out[k] = v
        elif k == "default_service":
            if not isinstance(v, str) or (v and name_problem(v)):
                raise UsageError(f"default_service: expected a service name or '', got {v!r}")
            out[k] = v
        elif k == "acme_directory":
            if not isinstance(v, str):
                raise UsageError("acme_directory: expected a URL")
            v = DIRECTORIES.get(v, v)
            if v and not v.startswith("https://"):
                raise UsageError(f"acme_directory: expected an https:// URL (or letsencrypt, "
                                 f"letsencrypt-staging), got {v!r}")
            out[k] = v
        elif k == "acme_email":
            if not isinstance(v, str) or (v and ("@" not in v or " " in v)):
                raise UsageError(f"acme_email: expected an e-mail address, got {v!r}")
            out[k] = v
        elif k == "acme_ca_bundle":
            if not isinstance(v, str) or (v and "BEGIN CERTIFICATE" not in v):
                raise UsageError("acme_ca_bundle: expected PEM certificates")
            out[k] = v
        elif k == "renew_before_days":
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v <= 365:
                raise UsageError(f"renew_before_days: expected 0 < days <= 365, got {v!r}")
            out[k] = float(v)
        else:
            raise UsageError(f"unknown edge setting {k!r}")
    new = replace(cur, **out)
    if new.http_port == new.https_port:
        raise UsageError("http_port and https_port must differ")
    return new


def to_meta(s: EdgeSettings) -> Dict[str, Any]:
    return {"http_port": s.http_port, "https_port": s.https_port,
            "default_service": s.default_service, "acme_directory": s.acme_directory,
            "acme_email": s.acme_email, "acme_ca_bundle": s.acme_ca_bundle,
            "renew_before_days": s.renew_before_days}
