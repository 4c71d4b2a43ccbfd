"""Route table deltas: what changed between two routing tables, and applying it. Pure.

The master sends each agent its routing table on its own versioned channel
(``models.RoutesUpdate``, ``PUT /v1/routes``). A replica turning unhealthy
changes one backend of one route; ``diff`` says exactly that (a
``RouteChange`` removing one task id), so every node receives a few hundred
bytes instead of the whole table inside a new assignment. ``apply`` rebuilds
the new table from the old one and a delta; ``apply(old, diff(old, new)) ==
new`` for any two tables (a property test holds it to that).

Route identity is ``key(route)``: service, published port and target port.
Tables are compared and stored in the canonical order (``ordered``: by key),
backends sorted by task id as ``routes.build_routes`` makes them. Shipped to agents: standard library only.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Iterable, List, Sequence, Tuple

from .models import Route, RouteBackend, RouteChange

Table = Tuple[Route, ...]


def key(route: Route) -> str:
    return f"{route.service}/{route.published or ''}/{route.target}"


Delta = Tuple[Tuple[Route, ...], Tuple[str, ...], Tuple[RouteChange, ...]]


def diff(old: Sequence[Route], new: Sequence[Route]) -> Delta:
    """(routes set whole, route keys removed, backend changes) from ``old`` to ``new``."""
    before: Dict[str, Route] = {key(r): r for r in old}
    after_keys = {key(r) for r in new}
    whole: List[Route] = []
    changes: List[RouteChange] = []
    for r in new:
        k = key(r)
        was = before.get(k)
        if was is r:          # tables share the routes that did not change (the master's pusher)
            continue
        if was is None or dataclasses.replace(was, backends=()) != dataclasses.replace(r, backends=()):
            whole.append(r)
            continue
        if was.backends == r.backends:
            continue
        old_b = {b.task_id: b for b in was.backends}
        new_b = {b.task_id: b for b in r.backends}
        add = tuple(b for b in r.backends if old_b.get(b.task_id) != b)
        remove = tuple(t for t in old_b if t not in new_b or new_b[t] != old_b[t])
        changes.append(RouteChange(k, add, remove))
    removed = tuple(k for k in before if k not in after_keys)
    return tuple(whole), removed, tuple(changes)


def apply(old: Sequence[Route], whole: Sequence[Route], removed: Sequence[str],
          changes: Sequence[RouteChange]) -> Table:
    """The table after a delta, in the canonical order (``ordered``); backends by task id."""
    table: Dict[str, Route] = {key(r): r for r in old}
    for k in removed:
        table.pop(k, None)
    for c in changes:
        r = table.get(c.key)
        if r is None:
            continue      # a change to a route the sender also removed or replaced: nothing
        gone = set(c.remove)
        keep: Dict[str, RouteBackend] = {b.task_id: b for b in r.backends if b.task_id not in gone}
        for b in c.add:
            keep[b.task_id] = b
        table[c.key] = dataclasses.replace(r, backends=tuple(sorted(keep.values(),
                                                                    key=lambda b: b.task_id)))
    for r in whole:
        table[key(r)] = r
    return ordered(table.values())


def ordered(table: Iterable[Route]) -> Table:
    """A table in the canonical order (by key), so two equal tables compare equal."""
    return tuple(sorted(table, key=key))
