"""A service's ``deploy:`` section -> the ServiceSpec fields it sets.

Owns: replicas and mode, resources (limits, reservations), placement
(constraints, spread preferences, max replicas per node), update_config,
rollback_config, restart_policy, endpoint_mode and labels (the service's own
labels, not its containers'). Swarm's defaults are not copied where ours differ on purpose
(start-first order, automatic rollback: see ``swarmlet.shipped.models.UpdateConfig``).
Docker's ``max_attempts: 0`` means "no limit", which is ``None`` here.
"""

from __future__ import annotations

import re
from typing import Dict

from ..shipped import validate
from ..shipped.constraints import parse as parse_constraint
from ..shipped.models import Resources, RestartPolicy, UpdateConfig
from .loader import Node
from .values import (Context, as_bytes, as_choice, as_duration, as_float, as_int, as_map,
                     as_scalar_str, as_seq, as_str, check_keys, fail)

CONSTRAINT_WHAT = 'a constraint like "node.labels.zone==a" or "node.hostname!=node-1"'


def parse_deploy(node: Node, ctx: Context) -> Dict[str, object]:
    keys = check_keys(node, ("replicas", "mode", "resources", "placement", "update_config",
                             "rollback_config", "restart_policy", "labels", "endpoint_mode"), ctx)
    out: Dict[str, object] = {}
    mode = "replicated"
    if "mode" in keys:
        with ctx.guard():
            mode = as_choice(keys["mode"], ("replicated", "global"))
    out["mode"] = mode
    if "replicas" in keys:
        with ctx.guard():
            if mode == "global":
                fail(keys["replicas"], "no 'replicas' with mode global (one replica per node)")
            out["replicas"] = as_int(keys["replicas"], 0)
    if "resources" in keys:
        with ctx.guard():
            out.update(_resources(keys["resources"], ctx))
    if "placement" in keys:
        with ctx.guard():
            out.update(_placement(keys["placement"], ctx))
    if "update_config" in keys:
        with ctx.guard():
            out["update"] = _update(keys["update_config"], ctx, UpdateConfig(),
                                    ("rollback", "pause", "continue"))
    if "rollback_config" in keys:
        with ctx.guard():
            out["rollback"] = _update(keys["rollback_config"], ctx,
                                      UpdateConfig(failure_action="pause"), ("pause", "continue"))
    if "restart_policy" in keys:
        with ctx.guard():
            out["restart"] = _restart(keys["restart_policy"], ctx)
    if "labels" in keys:
        with ctx.guard():
            out["deploy_labels"] = parse_labels(keys["labels"])
    if "endpoint_mode" in keys:
        with ctx.guard():
            em = keys["endpoint_mode"]
            out["endpoint_mode"] = as_choice(em, ("vip", "dnsrr"))
            ctx.remember(em)
            if out["endpoint_mode"] == "dnsrr":
                ctx.warn(em.mark, "endpoint_mode dnsrr is served as vip: replicas on other nodes "
                                  "are reached through the service's VIP, not one DNS entry each",
                         "endpoint_mode")
    return out


def parse_labels(node: Node) -> Dict[str, str]:
    """``labels:`` as a map or a list of "key=value"."""
    if node.is_seq:
        out: Dict[str, str] = {}
        for item in node.value:
            key, _, value = as_str(item, 'a label like "key=value"').partition("=")
            if not key:
                fail(item, 'a label like "key=value"')
            out[key] = value
        return out
    return {k: ("" if v.value is None else as_scalar_str(v)) for k, v in as_map(node).items()}


def _resources(node: Node, ctx: Context) -> Dict[str, object]:
    keys = check_keys(node, ("limits", "reservations"), ctx)
    out: Dict[str, object] = {}
    if "limits" in keys:
        out["limits"] = _resource(keys["limits"], ctx, {"pids": "process limits are not supported"})
    if "reservations" in keys:
        out["reservations"] = _resource(keys["reservations"], ctx, {
            "devices": "device reservations are not supported",
            "generic_resources": "generic resources are not supported"})
    return out


def _resource(node: Node, ctx: Context, ignored: Dict[str, str]) -> Resources:
    keys = check_keys(node, ("cpus", "memory"), ctx, ignored=ignored)
    cpus = None
    if "cpus" in keys:
        cpus = as_float(keys["cpus"], what='a CPU count above zero, like "0.5"')
        if cpus <= 0:
            fail(keys["cpus"], 'a CPU count above zero, like "0.5"')
    memory = as_bytes(keys["memory"]) if "memory" in keys else None
    return Resources(cpus=cpus, memory=memory)


_SPREAD = re.compile(r"\s*(node\.labels\.[\w.\-]+|engine\.labels\.[\w.\-]+|node\.(id|hostname))\s*")
SPREAD_WHAT = 'a preference like {spread: node.labels.zone}'


def _placement(node: Node, ctx: Context) -> Dict[str, object]:
    keys = check_keys(node, ("constraints", "max_replicas_per_node", "preferences"), ctx)
    out: Dict[str, object] = {}
    if "constraints" in keys:
        constraints = []
        for item in as_seq(keys["constraints"]):
            with ctx.guard():
                text = as_str(item, CONSTRAINT_WHAT)
                if validate.constraint_problem(text):      # the master's own grammar
                    fail(item, CONSTRAINT_WHAT)
                constraints.append(text.strip())
                if not parse_constraint(text).matches("", {}) and \
                        parse_constraint(text).field == "role":
                    ctx.warn(item.mark, f"constraint {text.strip()!r} matches no node: every "
                                        "swarmlet node is a worker (the master runs no replicas), "
                                        "so these replicas stay pending; use a node label instead")
        out["constraints"] = tuple(constraints)
    if "max_replicas_per_node" in keys:
        with ctx.guard():
            out["max_per_node"] = as_int(keys["max_replicas_per_node"], 1)
    if "preferences" in keys:
        prefs = []
        for item in as_seq(keys["preferences"]):
            with ctx.guard():
                if not item.is_map:
                    fail(item, SPREAD_WHAT)
                pk = check_keys(item, ("spread",), ctx)
                if "spread" not in pk:
                    fail(item, SPREAD_WHAT)
                text = as_str(pk["spread"], "a node label like node.labels.zone")
                if not _SPREAD.fullmatch(text):
                    fail(pk["spread"], "a node label like node.labels.zone")
                prefs.append(text.strip())
        out["preferences"] = tuple(prefs)
    return out


def _update(node: Node, ctx: Context, base: UpdateConfig, actions: tuple) -> UpdateConfig:
    keys = check_keys(node, ("parallelism", "delay", "failure_action", "monitor",
                             "max_failure_ratio", "order"), ctx)
    fields: Dict[str, object] = {}
    if "parallelism" in keys:
        fields["parallelism"] = as_int(keys["parallelism"], 0)   # 0: all at once, as in Swarm
    if "delay" in keys:
        fields["delay"] = as_duration(keys["delay"])
    if "failure_action" in keys:
        fields["failure_action"] = as_choice(keys["failure_action"], actions)
    if "monitor" in keys:
        fields["monitor"] = as_duration(keys["monitor"])
    if "max_failure_ratio" in keys:
        fields["max_failure_ratio"] = as_float(keys["max_failure_ratio"], 0, 1)
    if "order" in keys:
        fields["order"] = as_choice(keys["order"], ("start-first", "stop-first"))
    return UpdateConfig(**{**_fields(base), **fields})


def _fields(cfg: UpdateConfig) -> Dict[str, object]:
    return {name: getattr(cfg, name) for name in cfg.__dataclass_fields__}


def _restart(node: Node, ctx: Context) -> RestartPolicy:
    keys = check_keys(node, ("condition", "delay", "max_attempts"), ctx, ignored={
        "window": "a restart counts as failed when the task exits, whatever the window"})
    fields: Dict[str, object] = {}
    if "condition" in keys:
        fields["condition"] = as_choice(keys["condition"], ("none", "on-failure", "any"))
    if "delay" in keys:
        fields["delay"] = as_duration(keys["delay"])
    if "max_attempts" in keys:
        attempts = as_int(keys["max_attempts"], 0)
        fields["max_attempts"] = attempts or None
    return RestartPolicy(**fields)
