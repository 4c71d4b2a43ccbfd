"""Service names as users type them: the full name, or a stack member's short name.

A stack's services are named ``<stack>_<service>`` (``shop_db``); commands that
take a service also accept the short name (``db``) or ``stack/service`` when
that names exactly one service. An exact full name always wins (a ``swarmlet
run db`` service is ``db``); a short name that two stacks share is refused
with both full names. ``pick`` is pure; ``services.resolve`` asks the master.
"""

from __future__ import annotations

from typing import Any, Iterable, List, Mapping

from ..shipped.exceptions import UsageError
from ..shipped.models import STACK_LABEL, STACK_SERVICE_LABEL


def _labels(row: Mapping[str, Any]) -> Mapping[str, str]:
    return ((row.get("spec") or {}).get("labels") or {})


def pick(name: str, rows: Iterable[Mapping[str, Any]]) -> str:
    """The full name ``name`` means among the master's service rows (``GET /v1/services``).

    Returns ``name`` itself when nothing matches, so the master's 404 names it."""
    rows = list(rows)
    if any(r.get("name") == name for r in rows):
        return name
    stack, slash, short = name.partition("/")
    matches: List[str] = []
    for r in rows:
        labels = _labels(r)
        if slash:
            if labels.get(STACK_LABEL) == stack and labels.get(STACK_SERVICE_LABEL) == short:
                matches.append(str(r["name"]))
        elif labels.get(STACK_SERVICE_LABEL) == name and labels.get(STACK_LABEL):
            matches.append(str(r["name"]))
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise UsageError(f"{name!r} is ambiguous: it is {', '.join(sorted(matches))}; "
                         "give the full name")
    return name


def stack_of(row: Mapping[str, Any]) -> str:
    return str(_labels(row).get(STACK_LABEL) or "")
