"""The plan of a deploy: current services vs a stack -> create/update/remove (pure).

Owns ``plan_deploy`` and the per-field diff of two ``ServiceSpec``s. Which
services a stack owns is told by the ``io.swarmlet.stack`` label: a service
dropped from the file is removed with ``prune`` (else listed as kept), while
services of other stacks or made by ``swarmlet run`` are never touched, like
``docker stack deploy --prune`` which only prunes its own namespace. A service
in the file whose full name exists outside the stack is taken over, with a
warning. (A port this stack publishes that another service already publishes
is refused by ``deploy`` with ``shipped.validate.port_clashes``, as the master
refuses it.)

Services deployed by swarmlet before stacks were namespaced are named by
their short name (``web``, labelled ``io.swarmlet.stack=hello``). Such a
*legacy* service keeps its name: the stack's ``web`` updates it in place
instead of creating ``hello_web`` beside it (which would run the app twice and
fight over its published ports). The plan says so; ``swarmlet stack rm hello``
and a new deploy move it to the namespaced name.

An update whose changes are all in ``SETTINGS_ONLY`` (replicas, update and
rollback configs, lb, autoscale, max_per_node, edge) needs no new containers:
``ServiceChange.rollout`` is False, so the caller can scale instead of rolling.

Values of ``SECRET_FIELDS`` (env: passwords and tokens live there) never leave
a ``FieldChange`` as text: ``change_text``/``shown`` say that a value was
added, changed or removed, never what it was or is.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..shipped.models import STACK_LABEL, STACK_SERVICE_LABEL, PortSpec, ServiceSpec, VolumeMount
from .compose import Stack
from .values import StackWarning

SETTINGS_ONLY = ("replicas", "update", "rollback", "lb", "autoscale", "max_per_node", "edge")
SECRET_FIELDS = ("env",)
HIDDEN = "(hidden)"


class _Absent:
    """A key missing on one side of a diff (distinct from None and "")."""

    def __repr__(self) -> str:
        return "(absent)"


ABSENT: Any = _Absent()


@dataclass(frozen=True)
class FieldChange:
    path: str          # "image", "env.GREETING", "ports[0].published", "update.order"
    old: Any = dataclasses.field(repr=False)   # may be a secret: see ``shown``
    new: Any = dataclasses.field(repr=False)

    @property
    def secret(self) -> bool:
        return self.path.split(".")[0].split("[")[0] in SECRET_FIELDS

    def shown(self) -> Tuple[str, str]:
        """(old, new) as text; a secret's value is ``(hidden)`` (or ``(absent)``)."""
        if self.secret:
            return tuple("(absent)" if v is ABSENT else HIDDEN for v in (self.old, self.new))  # type: ignore[return-value]
        return format_value(self.old, self.path), format_value(self.new, self.path)


def change_text(c: FieldChange) -> str:
    """``path: old -> new``; for a secret only that it changed: ``env.DB_PASSWORD: (changed)``."""
    if c.secret:
        what = "added" if c.old is ABSENT else "removed" if c.new is ABSENT else "changed"
        return f"{c.path}: ({what})"
    old, new = c.shown()
    return f"{c.path}: {old} -> {new}"


@dataclass(frozen=True)
class ServiceChange:
    name: str
    action: str                          # create | update | remove | unchanged | keep
    old: Optional[ServiceSpec] = None
    new: Optional[ServiceSpec] = None
    changes: Tuple[FieldChange, ...] = ()

    @property
    def rollout(self) -> bool:
        """True when tasks must be replaced (a rolling update), not just rescaled."""
        return self.action == "update" and any(
            c.path.split(".")[0].split("[")[0] not in SETTINGS_ONLY for c in self.changes)


@dataclass(frozen=True)
class DeployPlan:
    stack: str
    file: str
    create: Tuple[ServiceChange, ...] = ()
    update: Tuple[ServiceChange, ...] = ()
    remove: Tuple[ServiceChange, ...] = ()
    unchanged: Tuple[ServiceChange, ...] = ()
    kept: Tuple[ServiceChange, ...] = ()     # dropped from the file, kept without --prune
    warnings: Tuple[StackWarning, ...] = ()
    skipped: Tuple[Tuple[str, Tuple[str, ...]], ...] = ()   # services whose profiles are off
    note: str = ""                           # e.g. why every service shows as "create"

    @property
    def has_changes(self) -> bool:
        return bool(self.create or self.update or self.remove)

    @property
    def changes(self) -> Tuple[ServiceChange, ...]:
        """Every service the deploy acts on, in the order to apply them."""
        return self.create + self.update + self.remove


def short_name(spec: ServiceSpec) -> str:
    """The service's name inside its stack (its full name outside any stack)."""
    return spec.labels.get(STACK_SERVICE_LABEL) or spec.name


def is_legacy(name: str, spec: ServiceSpec, stack: str) -> bool:
    """A service of ``stack`` deployed before namespaces: named by its short name alone."""
    return spec.labels.get(STACK_LABEL) == stack and spec.name == name \
        and spec.labels.get(STACK_SERVICE_LABEL, name) == name


def wanted_specs(current: Mapping[str, ServiceSpec], stack: Stack) -> Tuple[Dict[str, ServiceSpec],
                                                                           List[StackWarning]]:
    """The stack's specs by the name each is deployed under (legacy services keep theirs)."""
    wanted: Dict[str, ServiceSpec] = {}
    notes: List[StackWarning] = []
    for spec in stack.services:
        short = short_name(spec)
        old = current.get(short)
        if spec.name not in current and old is not None and is_legacy(short, old, stack.name):
            spec = dataclasses.replace(spec, name=short)
            notes.append(StackWarning(stack.where(short), f"service {short!r} was deployed before "
                                      f"stacks were namespaced and keeps its name (not "
                                      f"{stack.name}_{short}); `swarmlet stack rm {stack.name}` "
                                      "and a new deploy rename it", short))
        wanted[spec.name] = spec
    return wanted, notes


def plan_deploy(current: Mapping[str, ServiceSpec], stack: Stack, prune: bool = False) -> DeployPlan:
    """The plan (published-port clashes with other services are ``validate.port_clashes``)."""
    create: List[ServiceChange] = []
    update: List[ServiceChange] = []
    unchanged: List[ServiceChange] = []
    warnings: List[StackWarning] = list(stack.warnings)
    wanted, notes = wanted_specs(current, stack)
    warnings.extend(notes)
    for name in sorted(wanted):
        new = wanted[name]
        old = current.get(name)
        if old is None:
            create.append(ServiceChange(name, "create", None, new))
            continue
        owner = old.labels.get(STACK_LABEL)
        if owner != stack.name:
            where = f"to stack {owner!r}" if owner else "to no stack (made by swarmlet run)"
            warnings.append(StackWarning(stack.where(short_name(new)),
                                         f"service {name!r} belongs {where}; this deploy takes "
                                         f"it into stack {stack.name!r}", name))
        changes = diff_specs(old, new)
        if changes:
            update.append(ServiceChange(name, "update", old, new, changes))
        else:
            unchanged.append(ServiceChange(name, "unchanged", old, new))
    remove: List[ServiceChange] = []
    kept: List[ServiceChange] = []
    for name in sorted(current):
        old = current[name]
        if name in wanted or old.labels.get(STACK_LABEL) != stack.name:
            continue
        (remove if prune else kept).append(ServiceChange(name, "remove" if prune else "keep", old))
    return DeployPlan(stack=stack.name, file=stack.file, create=tuple(create), update=tuple(update),
                      remove=tuple(remove), unchanged=tuple(unchanged), kept=tuple(kept),
                      warnings=tuple(warnings), skipped=stack.skipped)


def diff_specs(old: ServiceSpec, new: ServiceSpec) -> Tuple[FieldChange, ...]:
    out: List[FieldChange] = []
    _diff(old, new, "", out)
    return tuple(out)


def _join(path: str, part: str) -> str:
    return f"{path}.{part}" if path else part


def _diff(old: Any, new: Any, path: str, out: List[FieldChange]) -> None:
    if old == new:
        return
    if (dataclasses.is_dataclass(old) and type(old) is type(new)):
        for f in dataclasses.fields(old):
            _diff(getattr(old, f.name), getattr(new, f.name), _join(path, f.name), out)
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            _diff(old.get(key, ABSENT), new.get(key, ABSENT), _join(path, str(key)), out)
        return
    if (isinstance(old, tuple) and isinstance(new, tuple) and len(old) == len(new)
            and all(dataclasses.is_dataclass(v) for v in old + new)):
        for i, (a, b) in enumerate(zip(old, new)):
            _diff(a, b, f"{path}[{i}]", out)
        return
    out.append(FieldChange(path, old, new))


def summary(spec: ServiceSpec) -> Dict[str, str]:
    """A few words per aspect of a service, for a plan's "create" lines."""
    out = {"image": spec.image}
    out["replicas"] = "global" if spec.mode == "global" else \
        f"{spec.replicas} replica" + ("" if spec.replicas == 1 else "s")
    if spec.ports:
        out["ports"] = ", ".join(format_value(p) for p in spec.ports)
    if spec.volumes:
        out["volumes"] = ", ".join(format_value(v) for v in spec.volumes)
    if spec.health.kind == "http":
        out["health"] = f"GET {spec.health.path}"
    elif spec.health.kind == "cmd":
        out["health"] = "cmd " + " ".join(spec.health.command)
    return out


def format_value(value: Any, path: str = "") -> str:
    """A compact, readable form of a spec value (ports as 8080:80/tcp…)."""
    if value is ABSENT:
        return "(absent)"
    if isinstance(value, PortSpec):
        if value.published is not None:
            return f"{value.published}:{value.target}/{value.protocol}"
        if value.host_port is not None:
            return f"host {value.host_port}:{value.target}/{value.protocol}"
        return f"{value.target}/{value.protocol}"
    if isinstance(value, VolumeMount):
        return f"{value.source}:{value.target}" + (":ro" if value.read_only else "") + \
            (" (bind)" if value.kind == "bind" else "")
    if isinstance(value, tuple):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={format_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, int) and not isinstance(value, bool) and path.endswith("memory"):
        return _bytes(value)
    if dataclasses.is_dataclass(value):
        return ", ".join(f"{f.name}={format_value(getattr(value, f.name))}"
                         for f in dataclasses.fields(value))
    if isinstance(value, str):
        return repr(value)
    return str(value)


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n}B"
