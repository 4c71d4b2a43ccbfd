"""Placement constraints: parse ``node.labels.k==v`` style expressions, test nodes.

Supported: ``node.labels.KEY==V``, ``node.labels.KEY!=V``, ``node.name==N``,
``node.name!=N`` (``node.hostname`` is an alias of ``node.name``, as in Swarm),
and ``node.role==R`` / ``node.role!=R``: every swarmlet node is a ``worker``
(the master runs no replicas), so ``node.role==manager`` matches no node and
its replicas stay pending, explained (the stack loader warns where it is written).
A missing label never equals a value, so ``node.labels.zone!=a`` holds on a
node without a ``zone`` label. Parsing is strict: an expression we cannot read
is a ``UsageError`` at ``run`` time, never a silently unplaceable service.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Tuple

from ..shipped.exceptions import UsageError

_EXPR = re.compile(r"^\s*node\.(labels\.([A-Za-z0-9_.\-/]+)|name|hostname|role)\s*(==|!=)\s*(\S.*?)\s*$")
NODE_ROLE = "worker"   # the role of every node, in Swarm's terms


@dataclass(frozen=True)
class Constraint:
    field: str        # "name", "role" or "labels.<key>"
    equal: bool       # == (True) or != (False)
    value: str
    text: str         # the expression as written, for explanations

    def matches(self, name: str, labels: Mapping[str, str]) -> bool:
        if self.field == "name":
            actual = name
        elif self.field == "role":
            actual = NODE_ROLE
        else:
            actual = labels.get(self.field[len("labels."):])
        return (actual == self.value) if self.equal else (actual != self.value)


def parse(expr: str) -> Constraint:
    m = _EXPR.match(expr)
    if m is None:
        raise UsageError(
            f"cannot read constraint {expr!r}: expected node.labels.KEY==VALUE, "
            "node.labels.KEY!=VALUE, node.name==NAME or node.role==worker")
    field = "name" if m.group(1) in ("name", "hostname") else \
        ("role" if m.group(1) == "role" else f"labels.{m.group(2)}")
    return Constraint(field, m.group(3) == "==", m.group(4).strip("\"'"), expr.strip())


def parse_all(exprs: Iterable[str]) -> Tuple[Constraint, ...]:
    return tuple(parse(e) for e in exprs)


def first_failing(constraints: Iterable[Constraint], name: str,
                  labels: Mapping[str, str]) -> "Constraint | None":
    for c in constraints:
        if not c.matches(name, labels):
            return c
    return None
