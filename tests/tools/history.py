"""A history checker for concurrent writes across leader failovers (Jepsen style, pure).

Two sequential clients write one service: ``scale`` sets ``replicas`` to ``values[i]`` (a cycle
long enough that a stale repeat is a backward step), ``update`` sets env ``MARK`` to a value
unique per request. Each request is recorded with its outcome:

- ``ok``: acknowledged (exit 0);
- ``fail``: refused for certain, nothing applied (e.g. ``no quorum``);
- ``unknown``: no answer, or the leader went away mid-request: it may or may not have landed.

The service's revisions (every one is kept) are the final history. Walking them in order,
each change of ``replicas`` (or of ``MARK``) must be the next request of that client, skipping
only requests that were not acknowledged. So the check finds:

- an acknowledged write that is neither in the history nor overwritten by a later one (lost);
- a write applied twice, or applied out of its client's order (a stale repeat);
- a definitely failed write that was applied;
- a change no request asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

OK, FAIL, UNKNOWN = "ok", "fail", "unknown"


@dataclass(frozen=True)
class Op:
    client: str          # "scale" | "update"
    seq: int
    value: Any           # replicas, or the MARK value
    outcome: str         # ok | fail | unknown
    start: float = 0.0
    end: float = 0.0
    detail: str = ""


@dataclass
class Result:
    ok: bool
    problems: List[str] = field(default_factory=list)
    counts: Dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        c = self.counts
        head = "valid" if self.ok else f"INVALID ({len(self.problems)} problems)"
        return (f"{head}: {c.get('ops', 0)} writes ({c.get('ok', 0)} acknowledged, "
                f"{c.get('unknown', 0)} unknown, {c.get('fail', 0)} refused), "
                f"{c.get('applied', 0)} applied, {c.get('acked_lost', 0)} acknowledged lost, "
                f"{c.get('duplicates', 0)} applied twice or out of order")


def _walk(client: str, ops: Sequence[Op], changes: Sequence[Any], res: Result) -> int:
    """Match each observed change of one client's field to that client's requests, in order."""
    p = 0
    applied = 0
    for v in changes:
        j = p
        while j < len(ops) and ops[j].value != v:
            j += 1
        if j == len(ops):
            res.problems.append(f"{client}: a change to {v!r} that no later request asked for "
                                f"(a write applied twice or out of order)")
            res.counts["duplicates"] = res.counts.get("duplicates", 0) + 1
            continue
        for skipped in ops[p:j]:
            if skipped.outcome == OK:
                res.problems.append(f"{client}: acknowledged write #{skipped.seq} "
                                    f"({skipped.value!r}) was lost")
                res.counts["acked_lost"] = res.counts.get("acked_lost", 0) + 1
        if ops[j].outcome == FAIL:
            res.problems.append(f"{client}: write #{ops[j].seq} ({ops[j].value!r}) was refused "
                                f"({ops[j].detail}) but applied")
        applied += 1
        p = j + 1
    for rest in ops[p:]:
        if rest.outcome == OK:
            res.problems.append(f"{client}: acknowledged write #{rest.seq} ({rest.value!r}) "
                                "is not in the final history")
            res.counts["acked_lost"] = res.counts.get("acked_lost", 0) + 1
    return applied


def check(ops: Sequence[Op], revisions: Sequence[Dict[str, Any]], initial_replicas: Any,
          initial_mark: Any) -> Result:
    """``revisions``: ``GET /v1/services/NAME/revisions`` (each with ``revision`` and ``spec``)."""
    res = Result(True, counts={"ops": len(ops)})
    for o in ops:
        res.counts[o.outcome] = res.counts.get(o.outcome, 0) + 1
    revs = sorted(revisions, key=lambda r: r["revision"])
    if [r["revision"] for r in revs] != list(range(revs[0]["revision"], revs[0]["revision"] + len(revs))):
        res.problems.append("revision numbers have gaps or repeats")
    replicas, mark = initial_replicas, initial_mark
    scale_changes: List[Any] = []
    mark_changes: List[Any] = []
    for r in revs:
        sp = r["spec"]
        if sp["replicas"] != replicas:
            scale_changes.append(sp["replicas"])
            replicas = sp["replicas"]
        m = _mark(r)
        if m != mark:
            mark_changes.append(m)
            mark = m
    by = {"scale": [o for o in ops if o.client == "scale"],
          "update": [o for o in ops if o.client == "update"]}
    res.counts["applied"] = (_walk("scale", sorted(by["scale"], key=lambda o: o.seq), scale_changes, res)
                             + _walk("update", sorted(by["update"], key=lambda o: o.seq), mark_changes, res))
    res.ok = not res.problems
    return res


def _mark(rev: Dict[str, Any]) -> Optional[str]:
    return (rev["spec"].get("env") or {}).get("MARK")
