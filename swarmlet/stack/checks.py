"""Checks of a loaded stack against the cluster's nodes (pure).

Owns the warnings a file cannot give alone: a ``logging.driver`` that a node's
Docker does not have (its replicas there would fail to start), said at the
``file:line:col`` where the driver is written, with the nodes that lack it.
Nodes that did not say which drivers they have are left out.
"""

from __future__ import annotations

from typing import List, Mapping, Optional, Sequence

from ..shipped.models import STACK_SERVICE_LABEL
from .compose import Stack
from .values import StackWarning


def log_driver_warnings(stack: Stack,
                        drivers: Mapping[str, Optional[Sequence[str]]]) -> List[StackWarning]:
    """``drivers``: node name -> the logging drivers its Docker has (None: unknown)."""
    out: List[StackWarning] = []
    for spec in stack.services:
        log = spec.container.logging
        if log is None:
            continue
        lacking = sorted(n for n, have in drivers.items() if have is not None and log.driver not in have)
        if not lacking:
            continue
        short = spec.labels.get(STACK_SERVICE_LABEL, spec.name)
        out.append(StackWarning(
            stack.where(short, "logging.driver"),
            f"logging driver {log.driver!r} cannot be honoured on {', '.join(lacking)} (its Docker "
            f"lacks it): {spec.name}'s replicas placed there will fail to start", "driver"))
    return out
