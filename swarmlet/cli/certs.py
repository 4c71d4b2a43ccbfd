"""``swarmlet cert …`` and ``swarmlet edge …``: the edge's certificates and settings.

- ``cert ls``: every certificate the edge serves or waits for: its names, where it
  comes from (``acme`` or ``manual``), its expiry and days left, its status
  (``valid``, ``pending``, ``ordering``, ``failed`` with the CA's reason and the
  next attempt, ``expired``) and the services that use it. Never a key.
- ``cert add NAME --cert FILE --key FILE``: store a user's certificate (judged on
  this host first: a key that is not the certificate's is refused before
  anything is sent; the master seals the key); ``cert rm NAME``: refused while a
  service uses it.
- ``edge show`` / ``edge config``: the ports every node's edge listens on, the
  default service for unknown hosts, and the ACME directory (none by default:
  no CA is asked until one is set), its contact e-mail and a CA bundle for a
  private CA's directory.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Dict, Optional

import click

from ..shipped.exceptions import UsageError
from ..webcerts import check_pair
from .output import emit, emit_json, output_option
from .services import call


def _when(ts: Any) -> str:
    return datetime.fromtimestamp(float(ts)).strftime("%Y-%m-%d %H:%M") if ts else "-"


def _status(r: Dict[str, Any]) -> str:
    st = r.get("status") or "-"
    if st == "failed":
        nxt = r.get("next_attempt")
        wait = f", next attempt {_when(nxt)}" if nxt else ""
        return f"failed ({r.get('failures', 1)}x{wait}): {r.get('last_error', '')}"
    return st


_COLUMNS = [("NAME", "name"), ("SOURCE", "source"), ("HOSTS", lambda r: ",".join(r.get("hosts") or [])),
            ("EXPIRES", lambda r: _when(r.get("not_after"))),
            ("DAYS", lambda r: "-" if r.get("days_left") is None else f"{r['days_left']:.1f}"),
            ("SERVICES", lambda r: ",".join(r.get("services") or []) or "-"),
            ("STATUS", _status)]


@click.group("cert", help="Certificates of the edge: issued by ACME, or your own.")
def cert_group() -> None:
    pass


@cert_group.command("ls", epilog="Example: swarmlet cert ls -o json")
@output_option
def cert_ls(output: str) -> None:
    """List the edge's certificates: names, expiry, days left, status (never a key)."""
    rows = call("GET", "/v1/certs")
    if output == "json":
        emit_json(rows)
        return
    emit(output, rows, _COLUMNS)


@cert_group.command("add", epilog="Example: swarmlet cert add shop --cert shop.crt --key shop.key")
@click.argument("name")
@click.option("--cert", "cert_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The certificate chain (PEM), leaf first.")
@click.option("--key", "key_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Its private key (PEM); the master keeps it sealed.")
def cert_add(name: str, cert_path: str, key_path: str) -> None:
    """Store (or replace) your certificate NAME for services with tls: manual."""
    with open(cert_path) as fh_c, open(key_path) as fh_k:
        cert, key = fh_c.read(), fh_k.read()
    info = check_pair(cert.encode(), key.encode(), what=f"{cert_path}", now=time.time())
    out = call("PUT", f"/v1/certs/{name}", {"cert": cert, "key": key})
    click.echo(f"certificate {name} stored: {', '.join(info.names)}, expires "
               f"{_when(out.get('not_after', info.not_after))}")


@cert_group.command("rm", epilog="Example: swarmlet cert rm shop")
@click.argument("name")
def cert_rm(name: str) -> None:
    """Remove your certificate NAME (refused while a service uses it)."""
    call("DELETE", f"/v1/certs/{name}")
    click.echo(f"certificate {name} removed")


@cert_group.command("renew", epilog="Example: swarmlet cert renew shop.example.com")
@click.argument("host")
def cert_renew(host: str) -> None:
    """Order a new ACME certificate for HOST now (e.g. after a node was stolen)."""
    call("POST", f"/v1/certs/{host}/renew")
    click.echo(f"{host}: renewal ordered; see: swarmlet cert ls")


@click.group("edge", help="The edge: ports 80/443 on every node, routing by host name.")
def edge_group() -> None:
    pass


_SHOW = [("SETTING", "key"), ("VALUE", "value")]


def _show(out: Dict[str, Any], output: str) -> None:
    if output == "json":
        emit_json(out)
        return
    emit(output, [{"key": k, "value": "-" if v in ("", None) else v} for k, v in out.items()
                  if k != "certs"], _SHOW)


@edge_group.command("show", epilog="Example: swarmlet edge show -o json")
@output_option
def edge_show(output: str) -> None:
    """The edge's settings: ports, default service, ACME directory."""
    _show(call("GET", "/v1/edge"), output)


@edge_group.command("config", epilog="Example: swarmlet edge config --acme-directory letsencrypt "
                                      "--acme-email ops@example.com")
@click.option("--http-port", type=click.IntRange(1, 65535), help="Plain HTTP port of every node (80).")
@click.option("--https-port", type=click.IntRange(1, 65535), help="HTTPS port of every node (443).")
@click.option("--default-service", help="The service that answers unknown hosts ('' for a 404).")
@click.option("--acme-directory",
              help="ACME directory URL, or letsencrypt / letsencrypt-staging ('' turns ACME off).")
@click.option("--acme-email", help="Contact e-mail of the cluster's ACME account.")
@click.option("--acme-ca", "acme_ca", type=click.Path(exists=True, dir_okay=False),
              help="PEM of the CA that signs a private ACME directory's HTTPS (pebble, step-ca).")
@click.option("--renew-before", type=float, help="Days before expiry to renew (30).")
@output_option
def edge_config(http_port: Optional[int], https_port: Optional[int], default_service: Optional[str],
                acme_directory: Optional[str], acme_email: Optional[str], acme_ca: Optional[str],
                renew_before: Optional[float], output: str) -> None:
    """Change the edge's settings (every node follows at once)."""
    changes: Dict[str, Any] = {}
    for k, v in (("http_port", http_port), ("https_port", https_port),
                 ("default_service", default_service), ("acme_directory", acme_directory),
                 ("acme_email", acme_email), ("renew_before_days", renew_before)):
        if v is not None:
            changes[k] = v
    if acme_ca is not None:
        with open(acme_ca) as fh:
            changes["acme_ca_bundle"] = fh.read()
    if not changes:
        raise UsageError("nothing to change: give --acme-directory, --http-port, …")
    _show(call("PATCH", "/v1/edge", changes), output)


COMMANDS = [cert_group, edge_group]
