"""One frame of ``swarmlet top`` from an overview document: aggregates, sorted and paged nodes. Pure.

At a handful of nodes every node fits; at 1,000 the frame starts with what the
cluster as a whole does (nodes by status, CPU and memory mean / p90 / max,
replicas serving and unhealthy, services by health, req/s and errors), then one
page of nodes in the chosen order (``name``, ``cpu``, ``mem``, ``tasks``, or
``status``: the troubled first), optionally only the nodes with a problem (not
ready, or running an unhealthy replica), then the services, troubled first, and
the last events. ``rows`` (the terminal's height) decides how many nodes make a
page and how many services fit; without it everything is printed (for pipes).
``View`` is what the keys of the live view change (``top.py``).
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

SORTS = ("name", "cpu", "mem", "tasks", "status")
_STATUS_RANK = {"down": 0, "left": 1, "suspect": 2, "draining": 3, "ready": 4}
_HEALTH_RANK = {"down": 0, "degraded": 1, "ok": 2, "idle": 3}
_STATUS_COLOR = {"ready": 32, "draining": 33, "suspect": 33, "down": 31, "left": 90,
                 "ok": 32, "degraded": 33, "idle": 90}
KEYS = "n/p page · s sort · f problems only · q quit"


@dataclass(frozen=True)
class View:
    sort: str = "name"
    page: int = 0                   # 0-based; clamped when drawn
    per_page: Optional[int] = None  # None: as many as the rows allow (all without rows)
    problems: bool = False          # only nodes not ready or with an unhealthy replica

    def next_sort(self) -> "View":
        return replace(self, sort=SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)], page=0)

    def turn(self, pages: int) -> "View":
        return replace(self, page=self.page + pages)


def event_line(e: Mapping[str, Any]) -> str:
    """One event as ``swarmlet events`` prints it."""
    when = _dt.datetime.fromtimestamp(float(e.get("ts", 0))).strftime("%Y-%m-%d %H:%M:%S")
    return f"{when}  {str(e.get('kind', '')):<9} {e.get('subject', '')}: {e.get('message', '')}"


def bar(fraction: float, width: int = 16) -> str:
    """``[#####.....]`` for a fraction in 0..1 (clamped)."""
    f = 0.0 if fraction != fraction else min(1.0, max(0.0, fraction))   # NaN -> 0
    full = int(round(f * width))
    return "[" + "#" * full + "." * (width - full) + "]"


def human_bytes(n: float) -> str:
    for unit in ("B", "K", "M", "G", "T"):
        if abs(n) < 1024 or unit == "T":
            return f"{n:.0f}{unit}" if unit in ("B", "K") else f"{n:.1f}{unit}"
        n /= 1024.0
    return f"{n:.1f}T"


def _c(text: str, code: Optional[int], color: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if color and code else text


def _mem(n: Mapping[str, Any]) -> float:
    total = float(n.get("mem_total") or 0)
    return 100.0 * float(n.get("mem_used") or 0) / total if total else 0.0


def _quantiles(xs: Sequence[float]) -> Tuple[float, float, float]:
    if not xs:
        return 0.0, 0.0, 0.0
    s = sorted(xs)
    return sum(s) / len(s), s[min(len(s) - 1, math.ceil(0.9 * len(s)) - 1)], s[-1]


def problem(n: Mapping[str, Any]) -> bool:
    return n.get("status") != "ready" or bool(n.get("unhealthy"))


def summary(doc: Mapping[str, Any]) -> List[str]:
    """The cluster in two lines: nodes and services."""
    nodes = list(doc.get("nodes") or [])
    by: Dict[str, int] = {}
    for n in nodes:
        by[str(n.get("status"))] = by.get(str(n.get("status")), 0) + 1
    up = [n for n in nodes if n.get("status") in ("ready", "draining")]
    cpu = _quantiles([float(n.get("cpu_percent") or 0.0) for n in up])
    mem = _quantiles([_mem(n) for n in up])
    tasks = sum(int(n.get("tasks") or 0) for n in nodes)
    serving = sum(int(n.get("serving") or 0) for n in nodes)
    sick = sum(int(n.get("unhealthy") or 0) for n in nodes)
    states = ", ".join(f"{by[s]} {s}" for s in sorted(by, key=lambda s: _STATUS_RANK.get(s, 9)))
    svcs = list(doc.get("services") or [])
    health: Dict[str, int] = {}
    for s in svcs:
        health[str(s.get("health"))] = health.get(str(s.get("health")), 0) + 1
    hs = ", ".join(f"{health[h]} {h}" for h in sorted(health, key=lambda h: _HEALTH_RANK.get(h, 9)))
    req = sum(float(s.get("req_s") or 0) for s in svcs)
    errors = sum(int(s.get("errors") or 0) for s in svcs)
    line1 = (f"NODES {len(nodes)}: {states or 'none'} · cpu mean {cpu[0]:.0f}% p90 {cpu[1]:.0f}% "
             f"max {cpu[2]:.0f}% · mem mean {mem[0]:.0f}% p90 {mem[1]:.0f}% max {mem[2]:.0f}% · "
             f"{tasks} replicas" + (f" ({serving} serving, {sick} unhealthy)" if "serving" in
                                    (nodes[0] if nodes else {}) else ""))
    line2 = f"SERVICES {len(svcs)}: {hs or 'none'} · {req:.1f} req/s · {errors} errors"
    return [line1, line2]


def sort_nodes(nodes: Sequence[Mapping[str, Any]], key: str) -> List[Mapping[str, Any]]:
    keys = {"name": lambda n: (str(n.get("name")),),
            "cpu": lambda n: (-float(n.get("cpu_percent") or 0.0), str(n.get("name"))),
            "mem": lambda n: (-_mem(n), str(n.get("name"))),
            "tasks": lambda n: (-int(n.get("tasks") or 0), str(n.get("name"))),
            "status": lambda n: (_STATUS_RANK.get(str(n.get("status")), 9), -int(n.get("unhealthy") or 0),
                                 str(n.get("name")))}
    return sorted(nodes, key=keys.get(key, keys["name"]))


def page_of(items: Sequence[Any], page: int, per_page: Optional[int]) -> Tuple[List[Any], int, int]:
    """(the items of ``page``, the page clamped, how many pages)."""
    if not per_page or per_page <= 0:
        return list(items), 0, 1
    pages = max(1, math.ceil(len(items) / per_page))
    page = min(max(0, page), pages - 1)
    return list(items[page * per_page:(page + 1) * per_page]), page, pages


def render_top(doc: Mapping[str, Any], color: bool = False, now: Optional[float] = None,
               view: View = View(), rows: Optional[int] = None) -> List[str]:
    """The frame; ``rows`` (terminal height) sizes the node page and the services shown."""
    cl = doc.get("cluster") or {}
    when = _dt.datetime.fromtimestamp(now if now is not None else float(doc.get("ts", 0)))
    lines = [f"swarmlet top - cluster {cl.get('name', '?')} - {when:%H:%M:%S}   ({KEYS})"]
    lines += summary(doc) + [""]
    nodes = [n for n in (doc.get("nodes") or []) if not view.problems or problem(n)]
    svcs = sorted(doc.get("services") or [],
                  key=lambda s: (_HEALTH_RANK.get(str(s.get("health")), 9), str(s.get("name"))))
    evs = list(doc.get("events") or [])[-5:]
    per_page, svc_rows = view.per_page, None
    if rows is not None:
        svc_rows = min(len(svcs), max(3, rows // 5))
        fixed = len(lines) + 3 + (2 + svc_rows + 1) + (2 + len(evs) if evs else 0)
        per_page = per_page or max(3, rows - fixed)
    shown, page, pages = page_of(sort_nodes(nodes, view.sort), view.page, per_page)
    w = max([4] + [len(str(n["name"])) for n in shown])
    lines.append(f"{'NODE':<{w}}  {'STATUS':<9} {'CPU':<24} {'MEMORY':<31} TASKS")
    for n in shown:
        cpu = float(n.get("cpu_percent") or 0.0)
        used, total = float(n.get("mem_used") or 0), float(n.get("mem_total") or 0)
        mem = f"{bar(used / total if total else 0.0)} {human_bytes(used)}/{human_bytes(total)}"
        status = str(n.get("status"))
        sick = f" ({n['unhealthy']} unhealthy)" if n.get("unhealthy") else ""
        lines.append(f"{n['name']:<{w}}  {_c(f'{status:<9}', _STATUS_COLOR.get(status), color)} "
                     f"{bar(cpu / 100.0)} {cpu:5.1f}%  {mem:<31} {n.get('tasks', 0)}{sick}")
    lines.append(f"nodes {page * (per_page or 0) + 1 if shown and per_page else (1 if shown else 0)}-"
                 f"{page * (per_page or 0) + len(shown)} of {len(nodes)}"
                 f"{' with a problem' if view.problems else ''} · page {page + 1}/{pages} · "
                 f"sorted by {view.sort}")
    lines.append("")
    listed = svcs[:svc_rows] if svc_rows is not None else svcs
    w = max([7] + [len(str(s["name"])) for s in listed])
    lines.append(f"{'SERVICE':<{w}}  {'REPLICAS':<9} {'HEALTH':<9} {'REQ/S':>8} {'ERRORS':>7} "
                 f"{'CPU':>6}  PORTS")
    for s in listed:
        health = str(s.get("health"))
        cpu = s.get("cpu")
        auto = s.get("autoscale")
        reps = f"{s.get('running', 0)}/{s.get('replicas', 0)}"
        lines.append(f"{s['name']:<{w}}  {reps:<9} {_c(f'{health:<9}', _STATUS_COLOR.get(health), color)} "
                     f"{float(s.get('req_s') or 0):8.1f} {int(s.get('errors') or 0):7d} "
                     f"{(f'{cpu:.0f}%' if isinstance(cpu, (int, float)) else '-'):>6}  "
                     f"{s.get('ports') or ''}"
                     + (f"  auto {auto['min']}..{auto['max']} @{auto['cpu']:g}%" if auto else "")
                     + (f" down after {auto['down_window']:g}s" if auto and auto.get("down_window")
                        else ""))
    if len(listed) < len(svcs):
        lines.append(f"... {len(svcs) - len(listed)} more services (all ok or idle: troubled ones come first)"
                     if all(s.get("health") in ("ok", "idle") for s in svcs[len(listed):])
                     else f"... {len(svcs) - len(listed)} more services")
    if evs:
        lines += ["", "RECENT EVENTS"] + [event_line(e) for e in evs]
    return lines
