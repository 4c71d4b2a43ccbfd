"""CLI for watching the cluster run: ``events``, ``top`` and ``dashboard``.

``events`` reads ``GET /v1/events`` (``-f`` polls with ``since=ID``); ``top``
renders the master's overview stream (SSE, ``GET /v1/overview?stream=1``) in
place, with keys to page, sort and filter the nodes; ``dashboard`` prints the
dashboard's address and token. The frame of ``top`` (``topview.render_top``) and
what a key does (``key_action``) are pure and tested without I/O.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import termios
import time
import tty as ttymod
from dataclasses import replace
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import aiohttp
import click

from .. import cluster as clusterlib
from ..client import Client, master_peers
from ..shipped.exceptions import APIError, Unreachable
from .logs import _master_caller
from .output import emit_json, output_option
from .topview import SORTS, View, bar, event_line, human_bytes, render_top  # noqa: F401 (re-exported)
from .services import call

# --- events ---------------------------------------------------------------------------

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


def key_action(view: View, key: bytes) -> Optional[View]:
    """The view after a key of the live view; None for quit. Pure."""
    if key in (b"q", b"Q", b"\x03"):
        return None
    if key in (b"n", b" ", b"\x1b[6~", b"j"):        # next page (space, PgDn)
        return view.turn(1)
    if key in (b"p", b"b", b"\x1b[5~", b"k"):        # previous page (PgUp)
        return view.turn(-1)
    if key in (b"s", b"S"):
        return view.next_sort()
    if key in (b"f", b"F"):
        return replace(view, problems=not view.problems, page=0)
    if key in (b"g", b"\x1b[H"):                     # first page (Home)
        return replace(view, page=0)
    return view


@click.command("top", epilog="Example: swarmlet top --sort cpu   (keys: n/p pages, s sorts, "
                             "f shows only troubled nodes, q quits)")
@click.option("--once", is_flag=True, help="Print one frame and exit (no screen control).")
@click.option("--sort", "sort_key", type=click.Choice(SORTS), default="name", show_default=True,
              help="Order of the nodes (status: the troubled first).")
@click.option("--page", type=click.IntRange(1), default=1, show_default=True, help="Page of nodes.")
@click.option("--per-page", type=click.IntRange(1), default=None,
              help="Nodes per page (default: as many as the terminal holds; --once: all).")
@click.option("--problems", is_flag=True, help="Only nodes not ready or running an unhealthy replica.")
def top_cmd(once: bool, sort_key: str, page: int, per_page: Optional[int], problems: bool) -> None:
    """Live view: the cluster's aggregates (nodes by status, CPU and memory mean/p90/max,
    replicas serving, services by health, req/s and errors), then a page of nodes (CPU and
    memory bars, tasks) in the order asked for, and the services, troubled first; redrawn in
    place as the cluster changes. Usable at 1,000 nodes: page with n/p, sort with s."""
    view = View(sort=sort_key, page=page - 1, per_page=per_page, problems=problems)
    if once:
        for line in render_top(call("GET", "/v1/overview"), view=view):
            click.echo(line)
        return
    c = clusterlib.load()
    tty = sys.stdout.isatty()
    out = sys.stdout
    last: Dict[str, Any] = {}
    state = {"view": view}

    def frame(extra: Sequence[str] = ()) -> None:
        if "doc" not in last:
            return
        rows = shutil.get_terminal_size((120, 40)).lines if tty else None
        lines = render_top(last["doc"], color=tty, now=time.time(), view=state["view"],
                           rows=rows - len(extra) if rows else None)
        out.write(frame_text(lines + list(extra)))
        out.flush()

    def draw(doc: Dict[str, Any]) -> None:
        last["doc"] = doc
        frame()

    def problem(msg: str) -> None:
        if "doc" in last:
            frame(["", msg])
        else:
            out.write(frame_text([msg]))
            out.flush()

    async def run() -> None:
        quit_ = asyncio.Event()
        loop = asyncio.get_running_loop()
        fd = sys.stdin.fileno() if sys.stdin.isatty() else None

        def on_key() -> None:
            try:
                key = os.read(fd, 16)
            except OSError:
                return
            new = key_action(state["view"], key)
            if new is None:
                quit_.set()
                return
            state["view"] = new
            frame()
        if fd is not None:
            loop.add_reader(fd, on_key)
        watch = asyncio.create_task(watch_overview(c, draw, problem))
        try:
            await quit_.wait()
        finally:
            if fd is not None:
                loop.remove_reader(fd)
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)

    saved = None
    if sys.stdin.isatty():
        saved = termios.tcgetattr(sys.stdin.fileno())
        ttymod.setcbreak(sys.stdin.fileno())          # keys without Enter; Ctrl-C still works
    out.write("\x1b[?1049h\x1b[?25l\x1b[2J")   # the alternate screen, no cursor
    out.flush()
    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    finally:
        if saved is not None:
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)
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
