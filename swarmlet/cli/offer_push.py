"""Offer to push images the nodes lack, before ``deploy`` or ``run`` (no registry needed).

With ``--push`` the missing images are pushed; on a terminal the user is
asked; otherwise a warning names the image and the command that fixes it.
An image that is not in the local Docker either is only warned about: the
nodes will try to pull it, and ``swarmlet ps`` shows the pull error.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Iterable, Optional

import click

from .. import images as imagelib
from ..shipped.exceptions import DockerError, SwarmletError
from .images import PlainLines
from .output import err


def offer_push(images: Iterable[str], push: Optional[bool]) -> None:
    """``push``: True push, False never, None ask on a TTY (else warn)."""
    if push is False:
        return
    for image in sorted(set(images)):
        try:
            missing = asyncio.run(imagelib.missing_on_nodes(image))
        except SwarmletError as exc:
            err(f"warning: cannot check whether the nodes have {image}: {exc}")
            continue
        if not missing:
            continue
        names = ", ".join(n.name for n in missing)
        try:
            imagelib.local_image_id(image)
        except DockerError:
            err(f"warning: {image} is missing on {names} and not in the local Docker: "
                "the nodes will try to pull it")
            continue
        if push is None:
            if not sys.stdin.isatty():
                err(f"warning: {image} is missing on {names}; push it with "
                    f"'swarmlet image push {image}' (or pass --push)")
                continue
            if not click.confirm(f"{image} is missing on {names}. Push it now?", default=True):
                continue
        results = asyncio.run(imagelib.push(image, missing, PlainLines(sys.stdout)))
        for r in results:
            if r.result == "failed":
                err(f"warning: {r.node}: push of {image} failed: {r.error}")
