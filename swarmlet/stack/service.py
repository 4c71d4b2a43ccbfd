"""One entry of ``services:`` -> one ``ServiceSpec``.

Owns the service-level keys: image, command, entrypoint, environment,
env_file, ports, volumes, healthcheck, labels, restart, deploy, secrets and
configs (``secrets.py``) and x-swarmlet.
The Compose keys swarmlet cannot honour are listed in ``IGNORED`` with the
reason the warning gives; any other key is unknown and gets a "did you mean".
"""

from __future__ import annotations

import posixpath
import re
import shlex
from typing import Dict, Optional, Tuple

from ..shipped import validate
from ..shipped.models import HealthCheck, RestartPolicy, ServiceSpec
from .deploy import parse_deploy, parse_labels
from .edge import parse_edge
from .envfile import parse_env_file
from .health import apply_extras, parse_healthcheck
from .loader import Node
from .ports import parse_ports
from .secrets import SecretDef, parse_refs
from .values import (Context, as_bool, as_map, as_scalar_str, as_str, check_keys, fail,
                     fail_at)
from .volumes import VolumeDef, parse_mounts

SUPPORTED = ("image", "command", "entrypoint", "environment", "env_file", "ports", "volumes",
             "healthcheck", "labels", "restart", "deploy", "secrets", "configs")
_NO = "not supported by swarmlet"
IGNORED = {
    "build": "there are no builds on deploy; build locally and `swarmlet image push`",
    "container_name": "replicas are named by swarmlet",
    "depends_on": "services start in any order; health checks gate traffic",
    "networks": "services reach each other by name on swarmlet's own network",
    "links": "services reach each other by name", "external_links": "services reach each other by name",
    "expose": "services reach each other's ports by name without it",
    "network_mode": _NO, "hostname": _NO, "domainname": _NO, "dns": _NO, "dns_search": _NO,
    "dns_opt": _NO, "extra_hosts": _NO, "mac_address": _NO,
    "cap_add": _NO, "cap_drop": _NO, "privileged": _NO, "security_opt": _NO, "devices": _NO,
    "user": _NO, "working_dir": _NO, "stop_grace_period": _NO, "stop_signal": _NO,
    "ulimits": _NO, "logging": "logs stay in Docker's json-file and `swarmlet logs`",
    "tty": _NO, "stdin_open": _NO, "init": _NO, "sysctls": _NO,
    "tmpfs": _NO, "pid": _NO, "ipc": _NO, "userns_mode": _NO, "shm_size": _NO, "read_only": _NO,
    "profiles": "every service in the file is deployed", "platform": _NO,
    "pull_policy": "images are used as present on the nodes, or pushed with `swarmlet image push`",
    "cgroup_parent": _NO, "isolation": _NO, "runtime": _NO, "scale": "use deploy.replicas",
    "mem_limit": "use deploy.resources.limits.memory", "cpus": "use deploy.resources.limits.cpus",
    "mem_reservation": "use deploy.resources.reservations.memory", "labels_file": _NO,
    "group_add": _NO, "oom_score_adj": _NO, "storage_opt": _NO, "develop": _NO, "attach": _NO,
}

_IMAGE = re.compile(
    r"[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?")
_RESTART = {"no": "none", "always": "any", "unless-stopped": "any", "on-failure": "on-failure"}
STACK_LABEL = "io.swarmlet.stack"


def check_name(name: str, node: Node) -> None:
    why = validate.name_problem(name)     # the one rule the master and the CLI apply too
    if why:
        fail_at(node.mark, why)


def parse_service(name: str, node: Node, stack: str, volumes: Dict[str, VolumeDef],
                  ctx: Context, refs: Optional[Dict[str, Dict[str, SecretDef]]] = None) -> ServiceSpec:
    keys = check_keys(node, SUPPORTED + ("x-swarmlet",), ctx, ignored=IGNORED)
    if "image" not in keys:
        fail_at(node.mark, f"expected an 'image' for service {name!r} (swarmlet does not build; "
                           "build locally and `swarmlet image push`)")
    image = as_str(keys["image"], 'an image like "swarmlet-hello:1"')
    if not _IMAGE.fullmatch(image):
        fail(keys["image"], 'an image reference like "swarmlet-hello:1" or "repo/app:tag"')
    fields: Dict[str, object] = {"name": name, "image": image}
    if "command" in keys:
        fields["command"] = _argv(keys["command"])
    if "entrypoint" in keys:
        fields["entrypoint"] = _argv(keys["entrypoint"])
    env: Dict[str, str] = {}
    if "env_file" in keys:
        env.update(_env_files(keys["env_file"], ctx))
    if "environment" in keys:
        env.update(_environment(keys["environment"], ctx))
    fields["env"] = env
    ports = parse_ports(keys["ports"], ctx) if "ports" in keys else ()
    fields["ports"] = ports
    if "volumes" in keys:
        fields["volumes"] = parse_mounts(keys["volumes"], volumes, ctx)
    for kind in ("secret", "config"):        # stack/secrets.py
        if kind + "s" in keys:
            fields[kind + "s"] = parse_refs(keys[kind + "s"], kind, (refs or {}).get(kind, {}), ctx)
    health, test = HealthCheck(), None
    if "healthcheck" in keys:
        health, test = parse_healthcheck(keys["healthcheck"], ctx)
    fields["health"] = health
    labels = parse_labels(keys["labels"]) if "labels" in keys else {}
    if "restart" in keys:
        fields["restart"] = _restart(keys["restart"])
    if "deploy" in keys:
        deploy = parse_deploy(keys["deploy"], ctx)
        if "restart" in deploy and "restart" in keys:
            ctx.warn(keys["restart"].mark, "restart ignored: deploy.restart_policy is set", "restart")
        labels.update(deploy.pop("deploy_labels", {}))
        fields.update(deploy)
    if "x-swarmlet" in keys:
        fields.update(apply_extras(keys["x-swarmlet"], health, test, ports, ctx))
        fields.update(parse_edge(name, keys["x-swarmlet"], ports, ctx, ctx.certificates))
    labels[STACK_LABEL] = stack
    fields["labels"] = labels
    spec = ServiceSpec(**fields)
    for problem in validate.problems(spec):   # whatever the master would refuse, refused here
        fail_at(node.mark, f"service {name!r}: {problem}")
    return spec


def _argv(node: Node) -> Optional[Tuple[str, ...]]:
    """A command or entrypoint: a list of words, or a string split as a shell would."""
    if node.value is None:
        return None
    if isinstance(node.value, str):
        try:
            return tuple(shlex.split(node.value))
        except ValueError as exc:
            fail_at(node.mark, f"expected a command with balanced quotes for {node.path}: {exc}")
    if not node.is_seq:
        fail(node, "a command as a string or a list of strings")
    return tuple(as_scalar_str(item, "a string") for item in node.value)


def _environment(node: Node, ctx: Context) -> Dict[str, str]:
    out: Dict[str, str] = {}
    if node.is_seq:
        for item in node.value:
            text = as_str(item, 'an environment entry like "KEY=value"')
            key, eq, value = text.partition("=")
            if not key:
                fail(item, 'an environment entry like "KEY=value"')
            if eq:
                out[key] = value
            elif key in ctx.env:
                out[key] = ctx.env[key]   # bare KEY: passed through from the environment
        return out
    for key, vnode in as_map(node).items():
        if not key or "=" in key:
            fail_at(node.key_marks.get(key, node.mark),
                    f"expected an environment variable name without '=', got {key!r}")
        if vnode.value is None:
            if key in ctx.env:
                out[key] = ctx.env[key]
            continue
        out[key] = as_scalar_str(vnode)
    return out


def _env_files(node: Node, ctx: Context) -> Dict[str, str]:
    items = node.value if node.is_seq else [node]
    out: Dict[str, str] = {}
    for item in items:
        required = True
        path_node = item
        if item.is_map:
            keys = check_keys(item, ("path", "required"), ctx, ignored={"format": _NO})
            if "path" not in keys:
                fail(item, "an env_file entry with 'path'")
            path_node = keys["path"]
            required = as_bool(keys["required"]) if "required" in keys else True
        rel = as_str(path_node, "an env file path")
        path = posixpath.normpath(posixpath.join(ctx.base_dir, rel))
        try:
            text = ctx.read_text(path)
        except (OSError, UnicodeDecodeError) as exc:
            if not required:
                continue
            fail_at(path_node.mark, f"expected a readable env file at {path} "
                                    f"({getattr(exc, 'strerror', None) or exc})")
        out.update(parse_env_file(text, rel, ctx.env,
                                  lambda mark, msg: ctx.warn(mark, msg)))
    return out


def _restart(node: Node) -> RestartPolicy:
    what = "one of no, always, on-failure[:N], unless-stopped"
    text = as_str(node, what)
    head, _, count = text.partition(":")
    if head not in _RESTART or (count and (head != "on-failure" or not count.isdigit())):
        fail(node, what)
    return RestartPolicy(condition=_RESTART[head], max_attempts=(int(count) or None) if count else None)
