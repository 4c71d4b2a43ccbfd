"""Placement constraints: parse ``node.labels.k==v`` style expressions, test nodes.

Supported: ``node.labels.KEY==V``, ``node.labels.KEY!=V``, ``node.name==N``,
``node.name!=N`` (``node.hostname`` is an alias of ``node.name``, as in Swarm).
A missing label never equals a value, so ``node.labels.zone!=a`` holds on a
node without a ``zone`` label. Parsing is strict: an expression we cannot read
is a ``UsageError`` at ``run`` time, never a silently unplaceable service.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Tuple

from ..shipped.exceptions import UsageError

_EXPR = re.compile(r"^\s*node\.(labels\.([A-Za-z0-9_.\-/]+)|name|hostname)\s*(==|!=)\s*(\S.*?)\s*$")


@dataclass(frozen=True)
class Constraint:
    field: str        # "name" or "labels.<key>"
    equal: bool       # == (True) or != (False)
    value: str
    text: str         # the expression as written, for explanations

    def matches(self, name: str, labels: Mapping[str, str]) -> bool:
        if self.field == "name":
            actual = name
        else:
            actual = labels.get(self.field[len("labels."):])
        return (actual == self.value) if self.equal else (actual != self.value)


def parse(expr: str) -> Constraint:
    m = _EXPR.match(expr)
    if m is None:
        raise UsageError(
            f"cannot read constraint {expr!r}: expected node.labels.KEY==VALUE, "
            "node.labels.KEY!=VALUE or node.name==NAME")
    field = "name" if m.group(1) in ("name", "hostname") else f"labels.{m.group(2)}"
    return Constraint(field, m.group(3) == "==", m.group(4).strip("\"'"), expr.strip())


def parse_all(exprs: Iterable[str]) -> Tuple[Constraint, ...]:
    return tuple(parse(e) for e in exprs)


def first_failing(constraints: Iterable[Constraint], name: str,
                  labels: Mapping[str, str]) -> "Constraint | None":
    for c in constraints:
        if not c.matches(name, labels):
            return c
    return None
