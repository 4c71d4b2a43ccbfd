"""Rendering for the CLI: tables for people, JSON for programs (``-o json``)."""

from __future__ import annotations

import json
import sys
from typing import Any, Callable, Iterable, Mapping, Sequence

import click

output_option = click.option(
    "-o", "--output", "output", type=click.Choice(["table", "json"]), default="table",
    show_default=True, help="Output format.",
)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> str:
    rows = [["" if c is None else str(c) for c in r] for r in rows]
    widths = [len(h) for h in headers]
    for r in rows:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))
    fmt = "  ".join("{:<%d}" % w for w in widths)
    lines = [fmt.format(*headers).rstrip()]
    lines += [fmt.format(*r).rstrip() for r in rows]
    return "\n".join(lines)


def emit(
    output: str,
    records: Sequence[Mapping[str, Any]],
    columns: Sequence[tuple],
) -> None:
    """Print ``records`` as JSON or as a table of ``columns`` = (header, key or fn)."""
    if output == "json":
        emit_json(list(records))
        return
    rows = []
    for rec in records:
        row = []
        for _, getter in columns:
            row.append(getter(rec) if callable(getter) else rec.get(getter))
        rows.append(row)
    click.echo(table(rows, [h for h, _ in columns]))


def err(message: str) -> None:
    click.echo(message, err=True)


def is_tty() -> bool:
    return sys.stdout.isatty()
