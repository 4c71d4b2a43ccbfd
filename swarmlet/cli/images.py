"""CLI for images without a registry: ``swarmlet image push IMAGE [--node N]… [--force] [-o json]``.

Owns the rendering only; the work is ``swarmlet.images`` (presence check, one
``docker save | gzip``, concurrent uploads). On a terminal each node gets a
live progress bar (redrawn in place); otherwise one plain line per step. Then
a summary table (NODE, RESULT, SIZE: compressed bytes sent, SECONDS: that
node's upload and ``docker load``), or with ``-o json`` a list of
``{node, result, error, bytes, seconds}``. Each failed node gets one
``error: NODE: reason`` line on stderr, and the exit code is 1 if any failed.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Dict, List, Optional, TextIO, Tuple

import click

from .. import images as imagelib
from ..shipped.exceptions import ConfigError
from .output import emit_json, output_option, table


def human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


class LiveBars:
    """One bar per node, redrawn in place on a terminal (ANSI cursor-up), at most ~10 times/s."""

    WIDTH = 24

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.names: List[str] = []
        self.w = 5
        self.state: Dict[str, Tuple[str, int, int, str]] = {}
        self.saving = ""
        self.drawn = 0
        self.last = 0.0

    def start(self, names: List[str]) -> None:
        self.names = names
        self.w = max([len(n) for n in names] + [5])
        self.state = {n: ("waiting", 0, 0, "") for n in names}

    def __call__(self, ev: imagelib.PushEvent) -> None:
        if not ev.node:
            self.saving = (f"saving {ev.message}: {human(ev.done)} read" if ev.phase == "saving"
                           else f"saved {ev.message}: {human(ev.done)} compressed")
        elif ev.node in self.state:
            self.state[ev.node] = (ev.phase, ev.done, ev.total, ev.message)
        final = ev.phase in ("saved", "done", "failed", "skip")
        if final or time.monotonic() - self.last > 0.1:
            self.draw()

    def _line(self, name: str) -> str:
        phase, done, total, msg = self.state[name]
        frac = done / total if total else 0.0
        fill = int(frac * self.WIDTH)
        bar = "#" * fill + "." * (self.WIDTH - fill)
        label = {"upload": "uploading", "loading": "docker load…", "done": "pushed",
                 "failed": f"failed: {msg}", "skip": "skipped (already present)"}.get(phase, phase)
        if phase in ("skip", "failed", "waiting"):
            return f"{name:<{self.w}}  {label}"
        return f"{name:<{self.w}}  [{bar}] {frac * 100:3.0f}%  {human(done)}/{human(total)}  {label}"

    def draw(self) -> None:
        self.last = time.monotonic()
        lines = ([self.saving] if self.saving else []) + [self._line(n) for n in self.names]
        if self.drawn:
            self.out.write(f"\x1b[{self.drawn}A")
        self.out.write("".join(f"\r\x1b[2K{ln}\n" for ln in lines))
        self.out.flush()
        self.drawn = len(lines)


class PlainLines:
    """One line per step, for logs and pipes."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def start(self, names: List[str]) -> None:
        pass

    def __call__(self, ev: imagelib.PushEvent) -> None:
        line = None
        if not ev.node and ev.phase == "saved":
            line = f"saved {ev.message}: {human(ev.done)} compressed"
        elif not ev.node and ev.phase == "saving" and ev.done == 0:
            line = f"saving {ev.message} (docker save | gzip)"
        elif ev.phase == "upload" and ev.done == 0:
            line = f"{ev.node}: uploading {human(ev.total)}"
        elif ev.phase == "loading":
            line = f"{ev.node}: uploaded, docker load…"
        elif ev.phase == "done":
            line = f"{ev.node}: pushed" + (f" ({ev.message})" if ev.message else "")
        elif ev.phase == "skip":
            line = f"{ev.node}: skipped ({ev.message})"
        elif ev.phase == "failed":
            line = f"{ev.node}: failed: {ev.message}"
        if line is not None:
            self.out.write(line + "\n")
            self.out.flush()


async def _run(image: str, names: Tuple[str, ...], force: bool,
               progress: "Optional[LiveBars | PlainLines]") -> List[imagelib.PushResult]:
    targets = imagelib.select(await imagelib.list_nodes(), names)
    if not targets:
        raise ConfigError("the cluster has no nodes to push to", hint="add some with 'swarmlet join'")
    if progress is not None:
        progress.start([n.name for n in targets])
    return await imagelib.push(image, targets, progress, force=force)


@click.group("image")
def image_group() -> None:
    """Move images to nodes without a registry."""


@image_group.command("push", epilog="Example: swarmlet image push swarmlet-hello:1 --node node-1")
@click.argument("image")
@click.option("--node", "nodes", multiple=True, metavar="NAME",
              help="Push to this node only (repeatable). Default: every node.")
@click.option("--force", is_flag=True, help="Upload even to nodes that have the same image.")
@output_option
@click.pass_context
def push_cmd(ctx: click.Context, image: str, nodes: Tuple[str, ...], force: bool, output: str) -> None:
    """Stream a local image to the nodes that lack it (docker save | gzip, once)."""
    progress: "Optional[LiveBars | PlainLines]" = None
    if output != "json":
        progress = LiveBars(sys.stdout) if sys.stdout.isatty() else PlainLines(sys.stdout)
    results = asyncio.run(_run(image, nodes, force, progress))
    if output == "json":
        emit_json([r.to_dict() for r in results])
    else:
        rows = [(r.node, r.result, human(r.bytes) if r.bytes else "-",
                 f"{r.seconds:.2f}" if r.result == "pushed" else "-") for r in results]
        click.echo(table(rows, ["NODE", "RESULT", "SIZE", "SECONDS"]))
    failed = [r for r in results if r.result == "failed"]
    for r in failed:
        click.echo(f"error: {r.node}: {r.error}", err=True)
    if failed:
        ctx.exit(1)


COMMANDS = [image_group]
