"""The container-level keys of a service -> ``ContainerConfig``.

Owns: user, working_dir, hostname, cap_add/cap_drop, sysctls, ulimits,
extra_hosts, dns/dns_search/dns_opt, stop_grace_period, stop_signal, init,
read_only, tty, stdin_open and logging: the keys ``docker stack deploy``
passes into a service's ContainerSpec (and ``logging`` into its task's log
driver). Each value is checked here so a bad one is a ``file:line:col`` error
before anything is applied; Docker applies them on each node as given.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Dict, List, Tuple

from ..shipped.models import ContainerConfig, LogConfig, Ulimit
from .loader import Node
from .values import (Context, as_bool, as_duration, as_int, as_map, as_scalar_str, as_str,
                     check_keys, fail)

KEYS = ("user", "working_dir", "hostname", "cap_add", "cap_drop", "sysctls", "ulimits",
        "extra_hosts", "dns", "dns_search", "dns_opt", "stop_grace_period", "stop_signal", "init",
        "read_only", "tty", "stdin_open", "logging")
_CAP = re.compile(r"(CAP_)?[A-Z][A-Z_]*")
_SIGNAL = re.compile(r"(SIG)?[A-Z0-9+-]+|[0-9]+")
_HOST = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252})")
_SYSCTL = re.compile(r"[a-z0-9_]+(\.[a-zA-Z0-9_-]+)+")
_DRIVER = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_./:-]*")


def parse_container(keys: Dict[str, Node], labels: Dict[str, str], ctx: Context) -> ContainerConfig:
    """``keys``: the service's entries (only ``KEYS`` are read); ``labels``: container labels."""
    out: Dict[str, object] = {"labels": labels}
    for key in KEYS:
        if key in keys:
            with ctx.guard():
                out[_FIELD.get(key, key)] = _READERS[key](keys[key], ctx)
    log = keys.get("logging")
    if log is not None and log.is_map and "driver" in log.value:
        ctx.remember(log.value["driver"])
    return ContainerConfig(**out)


def _user(node: Node, ctx: Context) -> str:
    v = node.value
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return str(v)
    text = as_str(node, 'a user like "1000", "1000:1000" or "app"')
    if any(c.isspace() for c in text):
        fail(node, 'a user like "1000", "1000:1000" or "app"')
    return text


def _working_dir(node: Node, ctx: Context) -> str:
    text = as_str(node, "an absolute path in the container")
    if not text.startswith("/"):
        fail(node, "an absolute path in the container")
    return text


def _hostname(node: Node, ctx: Context) -> str:
    text = as_str(node, "a host name")
    if "{{" in text:
        return text   # a Swarm template, e.g. "{{.Service.Name}}-{{.Task.Slot}}": the agent fills it
    if not _HOST.fullmatch(text) or len(text) > 253:
        fail(node, "a host name of letters, digits, '.', '_' and '-'")
    return text


def _caps(node: Node, ctx: Context) -> Tuple[str, ...]:
    if not node.is_seq:
        fail(node, 'a list of capabilities like ["NET_ADMIN"]')
    out: List[str] = []
    for item in node.value:
        with ctx.guard():
            text = as_str(item, 'a capability like "NET_ADMIN" or "ALL"')
            if not _CAP.fullmatch(text.upper()):
                fail(item, 'a capability like "NET_ADMIN" or "ALL"')
            out.append(text.upper())
    return tuple(out)


def _kv(node: Node, what: str) -> List[Tuple[Node, str, str]]:
    """A map, or a list of "key=value" (Compose allows both for sysctls and such)."""
    if node.is_seq:
        out = []
        for item in node.value:
            key, eq, value = as_str(item, what).partition("=")
            if not key or not eq:
                fail(item, what)
            out.append((item, key.strip(), value.strip()))
        return out
    return [(v, k, "" if v.value is None else as_scalar_str(v)) for k, v in as_map(node).items()]


def _sysctls(node: Node, ctx: Context) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for item, key, value in _kv(node, 'a sysctl like "net.core.somaxconn=1024"'):
        with ctx.guard():
            if not _SYSCTL.fullmatch(key):
                fail(item, 'a sysctl name like "net.core.somaxconn"')
            out[key] = value
    return out


def _ulimits(node: Node, ctx: Context) -> Tuple[Ulimit, ...]:
    out: List[Ulimit] = []
    for name, vnode in as_map(node).items():
        with ctx.guard():
            if not re.fullmatch(r"[a-z]+", name):
                fail(vnode, f"a ulimit name like nofile or nproc (not {name!r})")
            if vnode.is_map:
                lim = check_keys(vnode, ("soft", "hard"), ctx)
                if "soft" not in lim or "hard" not in lim:
                    fail(vnode, "a ulimit with 'soft' and 'hard'")
                soft, hard = as_int(lim["soft"], -1), as_int(lim["hard"], -1)
                if hard != -1 and (soft == -1 or soft > hard):
                    fail(lim["soft"], f"a soft limit at most the hard one ({hard})")
            else:
                soft = hard = as_int(vnode, -1, what="a number, or {soft: N, hard: N}")
            out.append(Ulimit(name, soft, hard))
    return tuple(out)


def _ip_ok(text: str) -> bool:
    if text == "host-gateway":
        return True
    try:
        ipaddress.ip_address(text.strip("[]"))
        return True
    except ValueError:
        return False


def _extra_hosts(node: Node, ctx: Context) -> Tuple[str, ...]:
    what = 'a host entry like "somehost:162.242.195.82" or "somehost=162.242.195.82"'
    pairs: List[Tuple[Node, str, str]] = []
    if node.is_seq:
        for item in node.value:
            text = as_str(item, what)
            sep = "=" if "=" in text else ":"
            host, _, ip = text.partition(sep)
            pairs.append((item, host, ip))
    else:
        for host, vnode in as_map(node).items():
            ips = vnode.value if vnode.is_seq else [vnode]
            pairs.extend((vnode, host, as_str(ip, "an IP address")) for ip in ips)
    out = []
    for item, host, ip in pairs:
        with ctx.guard():
            if not host or not _HOST.fullmatch(host) or not _ip_ok(ip):
                fail(item, what)
            out.append(f"{host}:{ip.strip('[]')}")
    return tuple(out)


def _strings(node: Node, what: str) -> Tuple[str, ...]:
    items = node.value if node.is_seq else [node]
    return tuple(as_str(i, what) for i in items)


def _dns(node: Node, ctx: Context) -> Tuple[str, ...]:
    out = _strings(node, "a DNS server address")
    for item, text in zip(node.value if node.is_seq else [node], out):
        if not _ip_ok(text) or text == "host-gateway":
            fail(item, "a DNS server IP address like 8.8.8.8")
    return out


def _dns_search(node: Node, ctx: Context) -> Tuple[str, ...]:
    return _strings(node, "a DNS search domain")


def _dns_opt(node: Node, ctx: Context) -> Tuple[str, ...]:
    return _strings(node, 'a resolver option like "ndots:2"')


def _grace(node: Node, ctx: Context) -> float:
    return as_duration(node)


def _signal(node: Node, ctx: Context) -> str:
    v = node.value
    text = str(v) if isinstance(v, int) and not isinstance(v, bool) else as_str(node, "a signal like SIGTERM")
    if not _SIGNAL.fullmatch(text):
        fail(node, "a signal like SIGTERM, SIGQUIT or 15")
    return text


def _flag(node: Node, ctx: Context) -> bool:
    return as_bool(node)


def _logging(node: Node, ctx: Context) -> LogConfig:
    keys = check_keys(node, ("driver", "options"), ctx)
    driver = as_str(keys["driver"], "a logging driver like json-file, local or syslog") \
        if "driver" in keys else "json-file"
    if not _DRIVER.fullmatch(driver):
        fail(keys["driver"], "a logging driver like json-file, local or syslog")
    options: Dict[str, str] = {}
    if "options" in keys and keys["options"].value is not None:
        options = {k: ("" if v.value is None else as_scalar_str(v))
                   for k, v in as_map(keys["options"]).items()}
    if driver not in ("json-file", "local", "journald") and "driver" in keys:
        ctx.warn(keys["driver"].mark, f"logging driver {driver!r}: `swarmlet logs` shows such "
                 "replicas' output only where Docker keeps its dual-logging cache (Docker 20.10+, "
                 "on by default)", "driver")
    return LogConfig(driver, options)


_READERS = {"user": _user, "working_dir": _working_dir, "hostname": _hostname, "cap_add": _caps,
            "cap_drop": _caps, "sysctls": _sysctls, "ulimits": _ulimits,
            "extra_hosts": _extra_hosts, "dns": _dns, "dns_search": _dns_search,
            "dns_opt": _dns_opt, "stop_grace_period": _grace, "stop_signal": _signal,
            "init": _flag, "read_only": _flag, "tty": _flag, "stdin_open": _flag,
            "logging": _logging}
_FIELD = {"dns_opt": "dns_options"}
