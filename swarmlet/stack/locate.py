"""Where a service's port (or edge host) was written in a stack file: ``file:line:col``. Pure.

A ``Stack`` keeps values, not places, and some checks can only run once the
cluster is known (a published port held by a service of *another* stack, seen
by ``deploy`` from the master's list). ``port_location`` reads the file's text
again and returns the place of the ``ports:`` entry that made a given
``PortSpec`` (entries are counted as the loader counts them: a range such as
``"8000-8001:80-81"`` makes two). It never raises: an entry it cannot find
falls back to the service's key, then to the file name.
"""

from __future__ import annotations

import posixpath
from typing import Mapping, Optional

from ..shipped.exceptions import StackFileError
from .loader import Node, parse_yaml
from .ports import parse_ports
from .values import Context


def _none(path: str) -> str:
    raise FileNotFoundError(2, "No such file or directory", path)


def _key(services: Optional[Node], service: str) -> Optional[str]:
    """The file's key for ``service``: itself, or for a full name (``<stack>_<service>``) the
    longest key it ends with."""
    if services is None or not services.is_map:
        return None
    if service in services.value:
        return service
    keys = [k for k in services.value if service.endswith(f"_{k}")]
    return max(keys, key=len) if keys else None


def port_location(text: str, filename: str, env: Mapping[str, str], service: str, index: int) -> str:
    """``file:line:col`` of the entry behind ``ports[index]`` of ``service`` (its name in the
    file, or its full name ``<stack>_<name>``)."""
    ctx = Context(filename=filename, base_dir=posixpath.dirname(filename) or ".", env=dict(env),
                  read_text=_none)
    try:
        root = parse_yaml(text, filename, dict(env), ctx.warn)
    except StackFileError:
        return filename
    services = root.value.get("services") if root is not None and root.is_map else None
    service = _key(services, service)
    if service is None:
        return filename
    snode = services.value[service]
    here = str(services.key_marks.get(service, snode.mark))
    ports = snode.value.get("ports") if snode.is_map else None
    if ports is None or not ports.is_seq:
        return here
    seen = 0
    for item in ports.value:
        try:
            made = len(parse_ports(Node([item], item.mark, ports.path), ctx))
        except StackFileError:
            made = 1
        if index < seen + made:
            return str(item.mark)
        seen += made
    return str(ports.mark)


def edge_location(text: str, filename: str, env: Mapping[str, str], service: str, host: str) -> str:
    """``file:line:col`` of ``host`` in ``x-swarmlet.hosts`` of ``service`` (else of the
    ``hosts`` key, the service's key, the file)."""
    ctx = Context(filename=filename, base_dir=posixpath.dirname(filename) or ".", env=dict(env),
                  read_text=_none)
    try:
        root = parse_yaml(text, filename, dict(env), ctx.warn)
    except StackFileError:
        return filename
    services = root.value.get("services") if root is not None and root.is_map else None
    service = _key(services, service)
    if service is None:
        return filename
    snode = services.value[service]
    here = str(services.key_marks.get(service, snode.mark))
    ext = snode.value.get("x-swarmlet") if snode.is_map else None
    hosts = ext.value.get("hosts") if ext is not None and ext.is_map else None
    if hosts is None:
        return here
    for item in hosts.value if hosts.is_seq else [hosts]:
        if isinstance(item.value, str) and item.value.strip().lower().rstrip(".") == host:
            return str(item.mark)
    return str(hosts.mark)
