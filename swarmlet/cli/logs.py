"""CLI: ``logs``, the merged logs of every replica of a service.

``logs`` reaches the agents directly with the ``cli`` certificate (the agent API
accepts the ``cli`` role), and asks the master only for the task list and the
nodes' addresses. Why not a master endpoint that merges: log streams are the
bulkiest traffic a CLI asks for, and following N replicas would keep N streams
open through the master for as long as someone watches; going direct keeps
the master out of that data path and keeps logs readable while the master is
down (``--follow`` then only stops noticing replacements). The cost is that
the admin host must reach the agents' API port, which ``join`` already needs.

Lines are requested with Docker's timestamps and merged in time order: all at
once without ``-f``; while following, through ``LineMerger``, which holds each
line ``hold`` seconds so that lines from slower streams still sort in. Each
line is prefixed ``task@node |``, colored per task on a TTY, as
``docker compose logs`` does. While following, the master's task list is
polled every second and replicas that replace dead ones are attached
(from the moment ``logs`` started, so nothing in between is lost).

Pure parts (timestamps, prefixes, merging) are plain functions tested without I/O.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import heapq
import itertools
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import aiohttp
import click

from .. import cluster as clusterlib
from ..client import Client, agent_peer, call_master
from ..shipped import rfc3339
from ..shipped.exceptions import APIError, Unreachable, UsageError
from .services import resolve

# --- pure: timestamps, prefixes, merging -------------------------------------------

_COLORS = (36, 33, 32, 35, 34, 96, 93, 92, 95, 94)   # cyan, yellow, green, magenta, blue, bright…
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")


def parse_ts(line: str) -> Tuple[Optional[float], str]:
    """Split Docker's RFC 3339 (nanosecond) timestamp off a log line: (unix seconds, rest)."""
    got = rfc3339.parse_prefix(line)
    if got is None:
        return None, line
    ts, end = got
    if line[end:end + 1] == " ":
        end += 1
    return ts, line[end:]


def parse_since(text: str, now: float) -> float:
    """``--since``: a duration back from now (30s, 5m, 2h, 1d), unix seconds, or an ISO time."""
    text = text.strip()
    m = _DURATION.match(text)
    if m:
        return now - float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"bad --since {text!r}: use e.g. 10m, 2h, 1700000000 or "
                         "2024-05-01T12:00:00") from None
    if when.tzinfo is None:
        when = when.astimezone()
    return when.timestamp()


def prefix(task: str, node: Optional[str], width: int = 0, color: Optional[int] = None) -> str:
    """``task@node |`` padded to ``width``; wrapped in an ANSI color when ``color``."""
    text = f"{task}@{node or '?'}".ljust(width) + " |"
    return f"\x1b[{color}m{text}\x1b[0m" if color is not None else text


def format_ts(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(order=True)
class LogLine:
    ts: float
    seq: int
    task: str = field(compare=False)
    node: Optional[str] = field(compare=False)
    text: str = field(compare=False)


class LineMerger:
    """Orders lines from several live streams by timestamp.

    A line is released once it has waited ``hold`` seconds since it arrived;
    anything that arrives within that time with an earlier timestamp is
    released before it. Time is passed in (``now``), so this is pure.
    """

    def __init__(self, hold: float = 0.3) -> None:
        self.hold = hold
        self._heap: List[Tuple[float, int, LogLine]] = []   # (ts, seq, line)
        self._arrived: Dict[int, float] = {}
        self._seq = itertools.count()

    def push(self, ts: float, task: str, node: Optional[str], text: str, now: float) -> None:
        seq = next(self._seq)
        heapq.heappush(self._heap, (ts, seq, LogLine(ts, seq, task, node, text)))
        self._arrived[seq] = now

    def ready(self, now: float, flush: bool = False) -> List[LogLine]:
        """Lines safe to print now, in time order (all of them when ``flush``)."""
        out: List[LogLine] = []
        while self._heap:
            ts, seq, line = self._heap[0]
            if not flush and now - self._arrived[seq] < self.hold:
                # An older line is still held: later ones wait behind it to keep order.
                break
            heapq.heappop(self._heap)
            del self._arrived[seq]
            out.append(line)
        return out

    def __len__(self) -> int:
        return len(self._heap)


def merge_sorted(lines: Sequence[LogLine]) -> List[LogLine]:
    """Time order; lines of one stream keep their order when timestamps tie."""
    return sorted(lines)


def split_lines(buf: bytes, chunk: bytes) -> Tuple[List[str], bytes]:
    """Complete lines from ``buf + chunk`` and the partial rest."""
    data = buf + chunk
    *lines, rest = data.split(b"\n")
    return [ln.decode("utf-8", "replace").rstrip("\r") for ln in lines], rest


class Painter:
    """Per-task colors (stable in order of first appearance) and a common prefix width."""

    def __init__(self, color: bool) -> None:
        self.color = color
        self._colors: Dict[str, int] = {}
        self.width = 0

    def line(self, ln: LogLine, timestamps: bool) -> str:
        tag = f"{ln.task}@{ln.node or '?'}"
        self.width = max(self.width, len(tag))
        col = None
        if self.color:
            col = self._colors.setdefault(ln.task, _COLORS[len(self._colors) % len(_COLORS)])
        ts = format_ts(ln.ts) + " " if timestamps and ln.ts > 0 else ""
        return f"{prefix(ln.task, ln.node, self.width, col)} {ts}{ln.text}"


# --- logs: the I/O shell --------------------------------------------------------------

class LogFollower:
    """Streams the logs of a service's replicas from their agents into one ordered output."""

    def __init__(self, service: str, master: Callable[[str, str], Any], client: Client,
                 out: Callable[[str], None], *, follow: bool, tail: Optional[int],
                 since: Optional[float], timestamps: bool, color: bool,
                 poll: float = 1.0, hold: float = 0.3) -> None:
        self.service = service
        self.master = master          # async (method, path) -> JSON
        self.client = client          # reaches each agent, checking it is that node (client.py)
        self.out = out
        self.follow, self.tail, self.since, self.timestamps = follow, tail, since, timestamps
        self.poll, self.painter = poll, Painter(color)
        self.merger = LineMerger(hold if follow else 0.0)
        self.streams: Dict[str, "asyncio.Task[None]"] = {}
        self.last_ts: Dict[str, float] = {}
        self.started = time.time()
        self._seen_any = asyncio.Event()

    async def _rows(self) -> Tuple[List[Dict[str, Any]], Dict[str, Tuple[str, int]]]:
        q = f"/v1/tasks?service={self.service}" + ("" if self.follow else "&all=1")
        rows = await self.master("GET", q)
        nodes = {n["name"]: (n["address"], int(n["api_port"])) for n in await self.master("GET", "/v1/nodes")}
        return rows, nodes

    async def run(self) -> None:
        try:
            rows, nodes = await self._rows()
            self._attach(rows, nodes, first=True)
            if not self.follow:
                await asyncio.gather(*self.streams.values())
                self._emit(flush=True)
                return
            while True:
                await asyncio.sleep(min(self.poll, self.merger.hold) / 2 or 0.05)
                self._emit()
                await self._maybe_poll()
        finally:
            for t in self.streams.values():
                t.cancel()
            await asyncio.gather(*self.streams.values(), return_exceptions=True)
            self._emit(flush=True)
            await self.client.close()

    _last_poll = 0.0

    async def _maybe_poll(self) -> None:
        now = time.monotonic()
        if now - self._last_poll < self.poll:
            return
        self._last_poll = now
        try:
            rows, nodes = await self._rows()
        except (Unreachable, APIError):
            return   # the master is away: keep the streams we have
        self._attach(rows, nodes, first=False)

    def _attach(self, rows: Sequence[Mapping[str, Any]], nodes: Mapping[str, Tuple[str, int]],
                first: bool) -> None:
        for r in rows:
            tid, node = r.get("task"), r.get("node")
            if not tid or not node or node not in nodes:
                continue
            if r.get("state") in ("pending", "assigned", "new") and not r.get("container_id"):
                continue   # no container yet: the next poll picks it up
            running = self.streams.get(tid)
            if running is not None and not running.done():
                continue
            if running is not None and (not self.follow or r.get("desired") != "running"):
                continue   # finished and not coming back
            if tid in self.last_ts:            # re-attach after a container restart: no repeats
                since, tail = self.last_ts[tid], None
            elif first:
                since, tail = self.since, self.tail
            else:                              # a replacement: everything since we started
                since, tail = min(self.since or self.started, self.started), None
            addr, port = nodes[node]
            self.streams[tid] = asyncio.create_task(self._stream(tid, node, addr, port, since, tail))

    async def _stream(self, tid: str, node: str, addr: str, port: int, since: Optional[float],
                      tail: Optional[int]) -> None:
        q = {"timestamps": "1", "follow": "1" if self.follow else "0"}
        if since is not None:
            q["since"] = f"{since:.6f}"
        if tail is not None:
            q["tail"] = str(tail)
        last = self.last_ts.get(tid, float("-inf"))
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5,
                                        sock_read=None if self.follow else 30)
        try:
            async with self.client.request(agent_peer(node, addr, port), "GET",
                                           f"/v1/tasks/{tid}/logs", params=q, timeout=timeout) as resp:
                buf = b""
                async for chunk in resp.content.iter_any():
                    lines, buf = split_lines(buf, chunk)
                    now = time.monotonic()
                    for raw in lines:
                        ts, text = parse_ts(raw)
                        if ts is None:
                            ts = time.time()
                        if ts <= last:
                            continue
                        last = ts
                        self.last_ts[tid] = ts
                        self.merger.push(ts, tid, node, text, now)
                if buf:
                    ts, text = parse_ts(buf.decode("utf-8", "replace"))
                    if ts is None or ts > last:
                        self.merger.push(ts or time.time(), tid, node, text, time.monotonic())
        except APIError:
            return   # 404: the container is gone (an old task), or the node went away

    def _emit(self, flush: bool = False) -> None:
        for ln in self.merger.ready(time.monotonic(), flush=flush):
            self.out(self.painter.line(ln, self.timestamps))


def _master_caller(c: Any) -> Callable[[str, str], Any]:
    async def master(method: str, path: str, body: Any = None) -> Any:
        return await call_master(c, method, path, body, timeout=15.0)
    return master


def _echo(line: str) -> None:
    click.echo(line)


@click.command("logs", epilog="Example: swarmlet logs -f --tail 20 web")
@click.argument("service")
@click.option("-f", "--follow", is_flag=True, help="Keep streaming; picks up replacement replicas.")
@click.option("--since", help="Only lines since: 10m, 2h, unix seconds or an ISO time.")
@click.option("--tail", type=click.IntRange(0), help="Only the last N lines of each replica.")
@click.option("-t", "--timestamps", is_flag=True, help="Show each line's timestamp.")
@click.option("--no-color", is_flag=True, help="No colors even on a terminal.")
def logs_cmd(service: str, follow: bool, since: Optional[str], tail: Optional[int],
             timestamps: bool, no_color: bool) -> None:
    """Merged logs of every replica of SERVICE, in time order, as task@node | line.

    SERVICE is the full name or, where unambiguous, a stack member's short name."""
    service = resolve(service)
    c = clusterlib.load()
    master = _master_caller(c)
    lf = LogFollower(service, master, Client.for_cluster(c), _echo, follow=follow, tail=tail,
                     since=parse_since(since, time.time()) if since else None,
                     timestamps=timestamps, color=sys.stdout.isatty() and not no_color)

    async def go() -> None:
        await master("GET", f"/v1/services/{service}")   # an unknown service: one clean error
        await lf.run()
    try:
        asyncio.run(go())
    except KeyboardInterrupt:
        pass


COMMANDS: List[Any] = [logs_cmd]
