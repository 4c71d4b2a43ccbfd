"""One entry of ``services:`` -> one ``ServiceSpec`` (and its ``BuildDef``, if it builds).

Owns the service-level keys: image, build, command, entrypoint, environment,
env_file, ports, expose, volumes, tmpfs, healthcheck, labels, label_file,
restart, scale, mem_limit, mem_reservation, cpus, profiles (read by
``compose``), deploy, secrets and configs (``secrets.py``), x-swarmlet, and the
container keys of ``container``.
The Compose keys swarmlet cannot honour are listed in ``IGNORED`` with the
reason the warning gives; any other key is unknown and gets a "did you mean".

The service is named ``<stack>_<name>`` (``full_name``), as ``docker stack
deploy`` names it, and carries the labels ``io.swarmlet.stack=<stack>`` and
``io.swarmlet.stack.service=<name>``: its replicas are reached by the short
name inside the stack and by the full name from anywhere. A problem in one
key is recorded (``Context.guard``) and the other keys are still read, so a
file's errors are reported together.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
import shlex
from typing import Dict, Optional, Tuple

from ..shipped import validate
from ..shipped.models import (STACK_LABEL, STACK_SERVICE_LABEL, HealthCheck, Resources, RestartPolicy,
                              ServiceSpec)
from .build import BUILD_TAG, BuildDef, parse_build
from .container import KEYS as CONTAINER_KEYS, parse_container
from .deploy import parse_deploy, parse_labels
from .edge import parse_edge
from .envfile import parse_env_file
from .health import apply_extras, parse_healthcheck
from .loader import Node
from .ports import parse_expose, parse_ports
from .secrets import SecretDef, parse_refs
from .values import (Context, as_bool, as_bytes, as_float, as_int, as_map, as_scalar_str,
                     as_str, check_keys, fail, fail_at)
from .volumes import VolumeDef, add_mount, parse_mounts, parse_tmpfs

SUPPORTED = ("image", "build", "command", "entrypoint", "environment", "env_file", "ports",
             "expose", "volumes", "tmpfs", "healthcheck", "labels", "label_file", "restart",
             "deploy", "profiles", "scale", "mem_limit", "mem_reservation", "cpus", "secrets",
             "configs") + CONTAINER_KEYS
_NO = "not supported by swarmlet"
IGNORED = {
    "container_name": "replicas are named by swarmlet",
    "depends_on": "services start in any order; health checks gate traffic",
    "networks": "services reach each other by name on swarmlet's own network",
    "links": "services reach each other by name", "external_links": "services reach each other by name",
    "network_mode": _NO, "domainname": _NO, "mac_address": _NO,
    "privileged": _NO, "security_opt": _NO, "devices": _NO,
    "pid": _NO, "ipc": _NO, "userns_mode": _NO, "shm_size": _NO,
    "platform": _NO,
    "pull_policy": "images are used as present on the nodes, or pushed with `swarmlet image push`",
    "cgroup_parent": _NO, "isolation": _NO, "runtime": _NO,
    "group_add": _NO, "oom_score_adj": _NO, "storage_opt": _NO, "develop": _NO, "attach": _NO,
    "memswap_limit": _NO, "mem_swappiness": _NO, "cpu_shares": _NO, "cpu_quota": _NO,
    "cpu_period": _NO, "cpuset": _NO, "pids_limit": _NO, "blkio_config": _NO,
}

_IMAGE = re.compile(
    r"[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?")
_RESTART = {"no": "none", "always": "any", "unless-stopped": "any", "on-failure": "on-failure"}
MAX_NAME = 63   # a service name is a DNS label


def full_name(stack: str, name: str) -> str:
    return f"{stack}_{name}"


def check_name(name: str, node: Node, stack: str = "") -> None:
    why = validate.name_problem(name)     # the one rule the master and the CLI apply too
    if why:
        fail_at(node.mark, why)
    if stack and len(full_name(stack, name)) > MAX_NAME:
        fail_at(node.mark, f"expected a service name that fits {MAX_NAME} characters with its "
                           f"stack prefix, but {full_name(stack, name)!r} is "
                           f"{len(full_name(stack, name))}")


def profiles_of(node: Node, ctx: Context) -> Tuple[str, ...]:
    """The service's ``profiles:`` (empty: always deployed)."""
    if not node.is_map or "profiles" not in node.value:
        return ()
    out: Tuple[str, ...] = ()
    with ctx.guard():
        p = node.value["profiles"]
        if not p.is_seq:
            fail(p, "a list of profile names")
        out = tuple(as_str(i, "a profile name") for i in p.value)
    return out


def parse_service(name: str, node: Node, stack: str, volumes: Dict[str, VolumeDef],
                  ctx: Context, refs: Optional[Dict[str, Dict[str, SecretDef]]] = None
                  ) -> Tuple[Optional[ServiceSpec], Optional[BuildDef]]:
    """The spec (None when the service has errors, which are in ``ctx.errors``) and its build."""
    before = len(ctx.errors)
    keys = check_keys(node, SUPPORTED + ("x-swarmlet",), ctx, ignored=IGNORED)
    full = full_name(stack, name)
    image, build = _image_and_build(name, full, node, keys, ctx)
    fields: Dict[str, object] = {"name": full, "image": image}
    for key in ("command", "entrypoint"):
        if key in keys:
            with ctx.guard():
                fields[key] = _argv(keys[key])
    env: Dict[str, str] = {}
    if "env_file" in keys:
        with ctx.guard():
            env.update(_env_files(keys["env_file"], ctx))
    if "environment" in keys:
        with ctx.guard():
            env.update(_environment(keys["environment"], ctx))
    fields["env"] = env
    ports: Tuple = ()
    if "ports" in keys:
        with ctx.guard():
            ports = parse_ports(keys["ports"], ctx)
    if "expose" in keys:
        with ctx.guard():
            ports = parse_expose(keys["expose"], ports, ctx)
    fields["ports"] = ports
    fields["volumes"] = _mounts(keys, volumes, ctx)
    for kind in ("secret", "config"):        # stack/secrets.py
        if kind + "s" in keys:
            with ctx.guard():
                fields[kind + "s"] = parse_refs(keys[kind + "s"], kind, (refs or {}).get(kind, {}),
                                                ctx)
    health, test, timing = HealthCheck(), None, {}
    if "healthcheck" in keys:
        with ctx.guard():
            health, test, timing = parse_healthcheck(keys["healthcheck"], ctx)
    fields["health"] = health
    if "restart" in keys:
        with ctx.guard():
            fields["restart"] = _restart(keys["restart"])
    fields.update(_compose_resources(keys, ctx))
    service_labels: Dict[str, str] = {}
    if "deploy" in keys:
        with ctx.guard():
            deploy = parse_deploy(keys["deploy"], ctx)
            if "restart" in deploy and "restart" in keys:
                ctx.warn(keys["restart"].mark, "restart ignored: deploy.restart_policy is set", "restart")
            service_labels.update(deploy.pop("deploy_labels", {}))
            _merge_compose_keys(fields, deploy, keys)
            fields.update(deploy)
    if "x-swarmlet" in keys:
        with ctx.guard():
            fields.update(apply_extras(keys["x-swarmlet"], timing, test, ports, ctx))
        with ctx.guard():
            fields.update(parse_edge(name, keys["x-swarmlet"], ports, ctx, ctx.certificates))
    _check_endpoint(fields, keys)
    fields["container"] = parse_container(keys, _container_labels(keys, ctx), ctx)
    service_labels[STACK_LABEL] = stack
    service_labels[STACK_SERVICE_LABEL] = name
    fields["labels"] = service_labels
    if len(ctx.errors) > before:
        return None, None
    spec = ServiceSpec(**fields)  # type: ignore[arg-type]
    for problem in validate.problems(spec):   # whatever the master would refuse, refused here
        with ctx.guard():
            fail_at(node.mark, f"service {name!r}: {problem}")
    return (None, None) if len(ctx.errors) > before else (spec, build)


def _image_and_build(name: str, full: str, node: Node, keys: Dict[str, Node],
                     ctx: Context) -> Tuple[str, Optional[BuildDef]]:
    image: Optional[str] = None
    if "image" in keys:
        with ctx.guard():
            image = as_str(keys["image"], 'an image like "swarmlet-hello:1"')
            if not _IMAGE.fullmatch(image):
                image = None
                fail(keys["image"], 'an image reference like "swarmlet-hello:1" or "repo/app:tag"')
    build: Optional[BuildDef] = None
    if "build" in keys:
        repository = full.lower()
        with ctx.guard():
            build = parse_build(keys["build"], full, repository, image, ctx,
                                str(node.key_marks.get("build", keys["build"].mark)))
        return f"{repository}:{BUILD_TAG}", build
    if "image" not in keys:
        with ctx.guard():
            fail_at(node.mark, f"expected an 'image' or a 'build' section for service {name!r}")
    return image or "", None


def _mounts(keys: Dict[str, Node], volumes: Dict[str, VolumeDef], ctx: Context) -> Tuple:
    mounts: Tuple = ()
    if "volumes" in keys:
        with ctx.guard():
            mounts = parse_mounts(keys["volumes"], volumes, ctx)
    if "tmpfs" in keys:
        with ctx.guard():
            out = list(mounts)
            for m in parse_tmpfs(keys["tmpfs"], ctx):
                add_mount(out, m, keys["tmpfs"])
            mounts = tuple(out)
    return mounts


def _compose_resources(keys: Dict[str, Node], ctx: Context) -> Dict[str, object]:
    """``scale``, ``mem_limit``, ``cpus`` and ``mem_reservation``: Compose's short forms."""
    out: Dict[str, object] = {}
    limits: Dict[str, object] = {}
    if "scale" in keys:
        with ctx.guard():
            out["replicas"] = as_int(keys["scale"], 0)
    if "mem_limit" in keys:
        with ctx.guard():
            limits["memory"] = as_bytes(keys["mem_limit"])
    if "cpus" in keys:
        with ctx.guard():
            cpus = as_float(keys["cpus"], what='a CPU count above zero, like "0.5"')
            if cpus <= 0:
                fail(keys["cpus"], 'a CPU count above zero, like "0.5"')
            limits["cpus"] = cpus
    if limits:
        out["limits"] = Resources(**limits)  # type: ignore[arg-type]
    if "mem_reservation" in keys:
        with ctx.guard():
            out["reservations"] = Resources(memory=as_bytes(keys["mem_reservation"]))
    return out


def _merge_compose_keys(fields: Dict[str, object], deploy: Dict[str, object],
                        keys: Dict[str, Node]) -> None:
    """deploy: wins where both say the same; different values are an error, as in Compose."""
    if "replicas" in fields and "replicas" in deploy and fields["replicas"] != deploy["replicas"]:
        fail(keys["scale"], f"the same value as deploy.replicas ({deploy['replicas']}), "
                            "or only one of them")
    for key, sub, compose_key in (("limits", "memory", "mem_limit"), ("limits", "cpus", "cpus"),
                                  ("reservations", "memory", "mem_reservation")):
        short = fields.get(key)
        long = deploy.get(key)
        if short is None or long is None:
            continue
        a, b = getattr(short, sub), getattr(long, sub)
        if a is not None and b is not None and a != b:
            fail(keys[compose_key], f"the same value as deploy.resources.{key}.{sub}, "
                                    "or only one of them")
        merged = {f.name: getattr(long, f.name) if getattr(long, f.name) is not None
                  else getattr(short, f.name) for f in dataclasses.fields(Resources)}
        deploy[key] = Resources(**merged)


def _check_endpoint(fields: Dict[str, object], keys: Dict[str, Node]) -> None:
    if fields.get("endpoint_mode") != "dnsrr":
        return
    for p in fields.get("ports", ()):  # type: ignore[union-attr]
        if p.published is not None:
            fail(keys["ports"], "no ports published in ingress mode with endpoint_mode dnsrr "
                                "(Docker refuses them too; use mode: host)")


def _container_labels(keys: Dict[str, Node], ctx: Context) -> Dict[str, str]:
    labels: Dict[str, str] = {}
    if "label_file" in keys:
        with ctx.guard():
            labels.update(_label_files(keys["label_file"], ctx))
    if "labels" in keys:
        with ctx.guard():
            labels.update(parse_labels(keys["labels"]))
    return labels


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
            with ctx.guard():
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
        with ctx.guard():
            if not key or "=" in key:
                fail_at(node.key_marks.get(key, node.mark),
                        f"expected an environment variable name without '=', got {key!r}")
            if vnode.value is None:
                if key in ctx.env:
                    out[key] = ctx.env[key]
                continue
            out[key] = as_scalar_str(vnode)
    return out


def _read_files(node: Node, ctx: Context, what: str) -> Dict[str, str]:
    """``env_file`` / ``label_file``: one path, a list, or ``{path, required}`` entries."""
    items = node.value if node.is_seq else [node]
    out: Dict[str, str] = {}
    for item in items:
        required = True
        path_node = item
        if item.is_map:
            keys = check_keys(item, ("path", "required"), ctx, ignored={"format": _NO})
            if "path" not in keys:
                fail(item, f"an {what} entry with 'path'")
            path_node = keys["path"]
            required = as_bool(keys["required"]) if "required" in keys else True
        rel = as_str(path_node, f"an {what} path")
        path = posixpath.normpath(posixpath.join(ctx.base_dir, rel))
        try:
            text = ctx.read_text(path)
        except (OSError, UnicodeDecodeError) as exc:
            if not required:
                continue
            fail_at(path_node.mark, f"expected a readable {what} at {path} "
                                    f"({getattr(exc, 'strerror', None) or exc})")
        out.update(parse_env_file(text, rel, ctx.env,
                                  lambda mark, msg: ctx.warn(mark, msg)))
    return out


def _env_files(node: Node, ctx: Context) -> Dict[str, str]:
    return _read_files(node, ctx, "env file")


def _label_files(node: Node, ctx: Context) -> Dict[str, str]:
    return _read_files(node, ctx, "label file")


def _restart(node: Node) -> RestartPolicy:
    what = "one of no, always, on-failure[:N], unless-stopped"
    text = as_str(node, what)
    head, _, count = text.partition(":")
    if head not in _RESTART or (count and (head != "on-failure" or not count.isdigit())):
        fail(node, what)
    return RestartPolicy(condition=_RESTART[head], max_attempts=(int(count) or None) if count else None)
