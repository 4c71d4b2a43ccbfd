"""CLI for watching the cluster run: ``events``, ``top`` and ``dashboard``.

``events`` reads ``GET /v1/events`` (``-f`` polls with ``since=ID``); ``top``
renders the master's overview stream (SSE, ``GET /v1/overview?stream=1``) in
place; ``dashboard`` prints the dashboard's address and token. The frame of
``top`` (``render_top``) is pure and tested without I/O.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import sys
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import aiohttp
import click

from .. import cluster as clusterlib
from ..client import Client, master_peers
from ..shipped.exceptions import APIError, Unreachable
from .logs import _master_caller
from .output import emit_json, output_option
from .services import call

# --- events ---------------------------------------------------------------------------

def event_line(e: Mapping[str, Any]) -> str:
    when = _dt.datetime.fromtimestamp(float(e.get("ts", 0))).strftime("%Y-%m-%d %H:%M:%S")
    return f"{when}  {str(e.get('kind', '')):<9} {e.get('subject', '')}: {e.get('message', '')}"


@click.command("events", epilog="Example: swarmlet events -f   (or: swarmlet events -o json)")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events.")
@click.option("-n", "--limit", default=100, show_default=True, type=click.IntRange(1, 10000),
              help="How many recent events to show first.")
@output_option
def events_cmd(follow: bool, limit: int, output: str) -> None:
    """The cluster's events: nodes joining and dying, tasks placed, started, failed and
    restarted, updates and rollbacks, scaling, load-balancer evictions."""
    events = call("GET", f"/v1/events?limit={limit}")
    if output == "json" and not follow:
        emit_json(events)
        return

    def show(evs: Sequence[Mapping[str, Any]]) -> None:
        for e in evs:
            click.echo(json.dumps(e) if output == "json" else event_line(e))
    show(events)
    if not follow:
        return
    last = max((int(e["id"]) for e in events), default=0)
    c = clusterlib.load()
    master = _master_caller(c)

    async def loop() -> None:
        nonlocal last
        while True:
            await asyncio.sleep(0.5)
            try:
                new = await master("GET", f"/v1/events?limit=1000&since={last}")
            except Unreachable:
                continue   # the master restarts: keep waiting
            show(new)
            sys.stdout.flush()
            last = max([last] + [int(e["id"]) for e in new])
    try:
        asyncio.run(loop())
    except KeyboardInterrupt:
        pass


# --- top ------------------------------------------------------------------------------

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


_STATUS_COLOR = {"ready": 32, "draining": 33, "suspect": 33, "down": 31, "left": 90,
                 "ok": 32, "degraded": 33, "idle": 90}


def _c(text: str, code: Optional[int], color: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if color and code else text


def render_top(doc: Mapping[str, Any], color: bool = False, now: Optional[float] = None) -> List[str]:
    """One frame of ``swarmlet top`` from an overview document. Pure."""
    cl = doc.get("cluster") or {}
    when = _dt.datetime.fromtimestamp(now if now is not None else float(doc.get("ts", 0)))
    lines = [f"swarmlet top - cluster {cl.get('name', '?')} - {when:%H:%M:%S}   (Ctrl-C quits)", ""]
    nodes = list(doc.get("nodes") or [])
    w = max([4] + [len(str(n["name"])) for n in nodes])
    lines.append(f"{'NODE':<{w}}  {'STATUS':<9} {'CPU':<24} {'MEMORY':<31} TASKS")
    for n in nodes:
        cpu = float(n.get("cpu_percent") or 0.0)
        used, total = float(n.get("mem_used") or 0), float(n.get("mem_total") or 0)
        mem = f"{bar(used / total if total else 0.0)} {human_bytes(used)}/{human_bytes(total)}"
        status = str(n.get("status"))
        lines.append(f"{n['name']:<{w}}  {_c(f'{status:<9}', _STATUS_COLOR.get(status), color)} "
                     f"{bar(cpu / 100.0)} {cpu:5.1f}%  {mem:<31} {n.get('tasks', 0)}")
    lines.append("")
    svcs = list(doc.get("services") or [])
    w = max([7] + [len(str(s["name"])) for s in svcs])
    lines.append(f"{'SERVICE':<{w}}  {'REPLICAS':<9} {'HEALTH':<9} {'REQ/S':>8} {'ERRORS':>7} "
                 f"{'CPU':>6}  PORTS")
    for s in svcs:
        health = str(s.get("health"))
        cpu = s.get("cpu")
        auto = s.get("autoscale")
        reps = f"{s.get('running', 0)}/{s.get('replicas', 0)}"
        lines.append(f"{s['name']:<{w}}  {reps:<9} {_c(f'{health:<9}', _STATUS_COLOR.get(health), color)} "
                     f"{float(s.get('req_s') or 0):8.1f} {int(s.get('errors') or 0):7d} "
                     f"{(f'{cpu:.0f}%' if isinstance(cpu, (int, float)) else '-'):>6}  "
                     f"{s.get('ports') or ''}"
                     + (f"  auto {auto['min']}..{auto['max']} @{auto['cpu']:g}%" if auto else ""))
    evs = list(doc.get("events") or [])[-5:]
    if evs:
        lines += ["", "RECENT EVENTS"] + [event_line(e) for e in evs]
    return lines


def frame_text(lines: Sequence[str]) -> str:
    """Redraw in place: home, each line cleared to its end, the rest of the screen cleared."""
    return "\x1b[H" + "".join(ln + "\x1b[K\n" for ln in lines) + "\x1b[J"


async def sse_events(resp: Any):
    """(event, data) pairs from a Server-Sent Events response."""
    event, data = "message", []
    async for raw in resp.content:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


async def watch_overview(c: Any, on_doc: Callable[[Dict[str, Any]], None],
                         on_error: Callable[[str], None]) -> None:
    """Follow the master's overview stream, reconnecting every second while it is away."""
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
    peers = master_peers(c)
    async with Client.for_cluster(c) as client:
        n = 0
        while True:
            peer = peers[n % len(peers)]   # HA: the next master after one went away
            try:
                async with client.request(peer, "GET", "/v1/overview", params={"stream": "1"},
                                          timeout=timeout) as resp:
                    async for event, data in sse_events(resp):
                        if event == "overview":
                            on_doc(json.loads(data))
            except APIError as exc:
                on_error(f"{exc}; retrying")
                n += 1
            except ValueError:
                on_error("the master sent a garbled overview; retrying")
            await asyncio.sleep(1.0)


@click.command("top", epilog="Example: swarmlet top   (Ctrl-C quits)")
@click.option("--once", is_flag=True, help="Print one frame and exit (no screen control).")
def top_cmd(once: bool) -> None:
    """Live view: nodes (CPU and memory bars, tasks) and services (replicas, health,
    req/s and errors from the load balancer), redrawn in place as the cluster changes."""
    if once:
        for line in render_top(call("GET", "/v1/overview")):
            click.echo(line)
        return
    c = clusterlib.load()
    tty = sys.stdout.isatty()
    out = sys.stdout
    last: Dict[str, Any] = {}

    def draw(doc: Dict[str, Any]) -> None:
        last["doc"] = doc
        out.write(frame_text(render_top(doc, color=tty, now=time.time())))
        out.flush()

    def problem(msg: str) -> None:
        lines = render_top(last["doc"], color=tty) if "doc" in last else []
        out.write(frame_text(lines + ["", msg]))
        out.flush()

    out.write("\x1b[?1049h\x1b[?25l\x1b[2J")   # the alternate screen, no cursor
    out.flush()
    try:
        asyncio.run(watch_overview(c, draw, problem))
    except KeyboardInterrupt:
        pass
    finally:
        out.write("\x1b[?25h\x1b[?1049l")      # give the terminal back as it was
        out.flush()


# --- dashboard and autoscale ----------------------------------------------------------

@click.command("dashboard", epilog="Example: swarmlet dashboard")
@output_option
def dashboard_cmd(output: str) -> None:
    """Print the web dashboard's address with its login token."""
    info = call("GET", "/v1/dashboard")
    if output == "json":
        emit_json(info)
        return
    click.echo(f"dashboard: {info['login']}")
    click.echo("(the token sets a cookie on first visit; the certificate is the cluster CA's: "
               f"trust {clusterlib.load().path('ca.crt')} in the browser, or accept it)")


COMMANDS: List[Any] = [events_cmd, top_cmd, dashboard_cmd]
