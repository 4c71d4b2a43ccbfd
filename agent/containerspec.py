"""TaskSpec -> the container Docker should create for it. Pure: no Docker, no I/O.

Owns the mapping from a replica's spec (``swarmlet.shipped.models.TaskSpec``) to the
arguments of the docker SDK's low-level ``create_container`` and
``create_host_config``. The shell (``runtime.DockerRuntime.create``) passes
them through unchanged, so every key a container gets is decided and tested
here. To support a new container option (``user``, ``working_dir``,
``cap_add`` …), add it in ``build`` and a unit test in
``tests/unit/agent/test_containerspec.py``.

What the agent adds and a spec cannot override: the ``io.swarmlet.*``
ownership labels, the ``SWARMLET_*`` environment, the deterministic name (a
second create for the same task hits a name conflict, never a duplicate) and
``restart_policy: no`` (the agent restarts, with its own backoff). Secrets and configs
are read-only binds of files on the agent's tmpfs (``secret_mounts``), never env or labels.

``extra_hosts`` are, first match wins as in ``/etc/hosts``: the spec's own
entries, then the short names of the services of the task's stack (``db`` ->
the VIP of ``shop_db``, known only inside stack ``shop``, as Docker's
per-stack network alias), then every service's full name -> its VIP.

``TaskSpec.container`` (user, working_dir, hostname, capabilities, sysctls,
ulimits, DNS, stop signal and grace period, init, read-only root, tty,
logging) is passed to Docker as given; tmpfs mounts become ``Mounts`` of type
tmpfs. A hostname may use Swarm's templates ``{{.Service.Name}}``,
``{{.Task.Slot}}``, ``{{.Task.ID}}``, ``{{.Task.Name}}``, ``{{.Node.Hostname}}``
and ``{{.Node.ID}}``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from swarmlet.shipped import secretrefs
from swarmlet.shipped.models import STACK_LABEL, TaskSpec

from . import reconcile as rc

NANO = 1_000_000_000


@dataclass(frozen=True)
class ContainerSpec:
    """What to create: ``create`` are ``create_container`` keyword arguments (without
    ``host_config``), ``host`` are ``create_host_config`` keyword arguments."""

    name: str
    create: Dict[str, Any] = field(default_factory=dict)
    host: Dict[str, Any] = field(default_factory=dict)


def container_name(node: str, task: TaskSpec) -> str:
    """Deterministic per task: a second create for the same task hits a name conflict."""
    raw = f"swarmlet.{node}.{task.service}.{task.slot}.{task.task_id}"
    return re.sub(r"[^a-zA-Z0-9_.-]", "-", raw)[:200]


def task_labels(node: str, task: TaskSpec) -> Dict[str, str]:
    labels = dict(task.labels)
    labels.update({rc.MANAGED: "1", rc.NODE: node, rc.SERVICE: task.service, rc.TASK: task.task_id,
                   rc.REVISION: str(task.revision), rc.SLOT: str(task.slot)})
    return labels


def task_env(node: str, task: TaskSpec) -> Dict[str, str]:
    env = dict(task.env)
    env.update({"SWARMLET_SERVICE": task.service, "SWARMLET_TASK": task.task_id,
                "SWARMLET_NODE": node})
    return env


def healthcheck(task: TaskSpec) -> Optional[Dict[str, Any]]:
    """A ``cmd`` check becomes Docker's HEALTHCHECK; http is probed by the agent and
    image/none keep the image's own."""
    h = task.health
    if h.kind != "cmd" or not h.command:
        return None
    return {"test": ["CMD", *h.command], "interval": int(h.interval * NANO),
            "timeout": int(h.timeout * NANO), "retries": h.retries,
            "start_period": int(h.start_period * NANO)}


def mounts(task: TaskSpec) -> list:
    """Docker API ``Mounts`` entries (the dict form ``docker.types.Mount`` produces)."""
    out = []
    for v in task.volumes:
        if v.kind in ("volume", "bind"):
            out.append({"Target": v.target, "Source": v.source, "Type": v.kind,
                        "ReadOnly": bool(v.read_only)})
        elif v.kind == "tmpfs":
            opts: Dict[str, int] = {}
            if v.size is not None:
                opts["SizeBytes"] = v.size
            if v.mode is not None:
                opts["Mode"] = v.mode
            m: Dict[str, Any] = {"Target": v.target, "Type": "tmpfs", "ReadOnly": bool(v.read_only)}
            if opts:
                m["TmpfsOptions"] = opts
            out.append(m)
    return out


def task_secret_file(root: str, task_id: str, kind: str, index: int) -> str:
    """Where ``secretfiles`` writes a task's ``index``-th secret/config file (on tmpfs)."""
    return f"{root.rstrip('/')}/tasks/{task_id}/{kind}-{index}"


def secret_mounts(task: TaskSpec, root: str) -> list:
    """Each secret and config of ``task`` bound read-only from its file under ``root`` (the
    agent's tmpfs ``secrets_dir``): Docker holds the path, never the value."""
    return [{"Target": secretrefs.container_path(kind, ref),
             "Source": task_secret_file(root, task.task_id, kind, i), "Type": "bind",
             "ReadOnly": True}
            for i, (kind, ref) in enumerate(secretrefs.refs(task))]


def hosts(task: TaskSpec, extra_hosts: Optional[Mapping[str, str]] = None,
          aliases: Optional[Mapping[str, Mapping[str, str]]] = None) -> List[str]:
    """``/etc/hosts`` entries as "name:ip", the first for a name winning (see the docstring)."""
    out = list(task.container.extra_hosts)
    named = {entry.split(":", 1)[0] for entry in out}
    stack = task.labels.get(STACK_LABEL)
    for table in ((aliases or {}).get(stack or "", {}) if stack else {}), (extra_hosts or {}):
        for name in sorted(table):
            if name not in named:
                named.add(name)
                out.append(f"{name}:{table[name]}")
    return out


_TEMPLATE = re.compile(r"\{\{\s*\.(Service\.Name|Service\.ID|Task\.Slot|Task\.ID|Task\.Name|"
                       r"Node\.Hostname|Node\.ID)\s*\}\}")


def hostname(node: str, task: TaskSpec) -> Optional[str]:
    """The container's hostname, Swarm's templates filled in."""
    text = task.container.hostname
    if not text:
        return None
    values = {"Service.Name": task.service, "Service.ID": task.service, "Task.Slot": str(task.slot),
              "Task.ID": task.task_id, "Task.Name": f"{task.service}.{task.slot}.{task.task_id}",
              "Node.Hostname": node, "Node.ID": node}
    return _TEMPLATE.sub(lambda m: values[m.group(1)], text)[:253]


def _container_options(node: str, task: TaskSpec, create: Dict[str, Any], host: Dict[str, Any]) -> None:
    c = task.container
    for key, value in (("user", c.user), ("working_dir", c.working_dir),
                       ("hostname", hostname(node, task)), ("stop_signal", c.stop_signal)):
        if value:
            create[key] = value
    if c.stop_grace_period is not None:
        create["stop_timeout"] = int(math.ceil(c.stop_grace_period))
    if c.tty:
        create["tty"] = True
    if c.stdin_open:
        create["stdin_open"] = True
    for key, value in (("cap_add", list(c.cap_add)), ("cap_drop", list(c.cap_drop)),
                       ("sysctls", dict(c.sysctls)), ("dns", list(c.dns)),
                       ("dns_search", list(c.dns_search)), ("dns_opt", list(c.dns_options))):
        if value:
            host[key] = value
    if c.ulimits:
        host["ulimits"] = [{"name": u.name, "soft": u.soft, "hard": u.hard} for u in c.ulimits]
    if c.init is not None:
        host["init"] = c.init
    if c.read_only:
        host["read_only"] = True
    if c.logging is not None:
        host["log_config"] = {"type": c.logging.driver, "config": dict(c.logging.options)}


def build(node: str, task: TaskSpec, extra_hosts: Optional[Mapping[str, str]] = None,
          aliases: Optional[Mapping[str, Mapping[str, str]]] = None,
          secrets_dir: str = "/run/swarmlet/secrets") -> ContainerSpec:
    """The container for ``task`` on ``node``; ``extra_hosts``: service name -> VIP;
    ``aliases``: stack -> {short name -> VIP} (see ``swarmlet.shipped.discovery.aliases_for``);
    ``secrets_dir``: the agent's tmpfs folder of secret and config files."""
    bindings = {f"{p.target}/{p.protocol}": p.host_port for p in task.ports}
    ms = mounts(task) + secret_mounts(task, secrets_dir)
    host: Dict[str, Any] = {
        "port_bindings": bindings or None,
        "mounts": ms or None,
        "restart_policy": {"Name": "no"},
        "extra_hosts": hosts(task, extra_hosts, aliases) or None,
    }
    if task.limits.cpus:
        host["nano_cpus"] = int(task.limits.cpus * NANO)
    if task.limits.memory:
        host["mem_limit"] = task.limits.memory
    create: Dict[str, Any] = {
        "image": task.image,
        "labels": task_labels(node, task),
        "environment": task_env(node, task),
        "ports": [(p.target, p.protocol) for p in task.ports] or None,
        "healthcheck": healthcheck(task),
    }
    if task.command is not None:
        create["command"] = list(task.command)
    if task.entrypoint is not None:
        create["entrypoint"] = list(task.entrypoint)
    _container_options(node, task, create, host)
    return ContainerSpec(container_name(node, task), create, host)
