"""Builds for stack services with ``build:``, on the admin host's Docker (admin side).

Owns three steps of ``swarmlet deploy`` (and ``stack config``) for such services:

- ``content_tag(build)``: ``<stack>_<service>:<hash>``, the hash (sha256, 16 hex
  digits) of every file of the context that Docker would send (``.dockerignore``
  honoured: its patterns, ``**`` and ``!`` exceptions, the last match winning),
  each with its path and mode, plus the Dockerfile, build args, target and
  labels. Reading files is all it does: no Docker needed, so it works offline.
- ``resolve_builds(stack)``: the stack with each built service's image set to
  its content tag (the loader's ``:build`` placeholder replaced). A missing
  context or Dockerfile is a ``StackFileError`` at the ``build:`` key.
- ``build_all(stack, progress)``: builds, through the docker SDK in a thread
  (never on the event loop), each image the local Docker does not already have
  under its content tag, so an unchanged context is neither rebuilt nor, since
  the nodes then hold the same image id, pushed again. Progress lines go to a
  callback. A failure raises ``BuildFailed`` with the last lines of the build
  log; the caller has applied nothing yet.

The build runs offline: ``pull`` is off unless the file asks for it, so a
Dockerfile ``FROM`` a locally built image (``swarmlet-hello:1``) works without
any registry.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import re
import stat
from collections import deque
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Sequence, Tuple

from .shipped.exceptions import DockerError, StackFileError
from .stack.build import BuildDef
from .stack.compose import Stack

HASH_LEN = 16
TAIL_LINES = 20
MAX_FILES = 200_000          # a context this large is a mistake (a home folder?): refused
Progress = Callable[[str, str], None]   # (service, line)


class BuildFailed(DockerError):
    """A build failed; the message ends with the tail of its log."""


# --- .dockerignore -------------------------------------------------------------------

def _ignore_patterns(context: str) -> List[Tuple[bool, str]]:
    """(negated, pattern) pairs from the context's .dockerignore, as Docker reads them."""
    try:
        with open(os.path.join(context, ".dockerignore"), encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        pat = os.path.normpath(line[1:].strip() if neg else line).lstrip("/")
        if pat and pat != ".":
            out.append((neg, pat))
    return out


def _segment_re(seg: str) -> str:
    out, i = [], 0
    while i < len(seg):
        c = seg[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = seg.find("]", i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = seg[i + 1:end]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = end
        elif c == "\\" and i + 1 < len(seg):
            i += 1
            out.append(re.escape(seg[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _pattern_re(pattern: str) -> "re.Pattern[str]":
    """Docker's .dockerignore pattern (Go filepath.Match plus ``**``) as a regex."""
    segs = pattern.split("/")
    body = ""
    for i, seg in enumerate(segs):
        last = i == len(segs) - 1
        if seg == "**":
            body += ".*" if last else "(?:[^/]+/)*"
        else:
            body += _segment_re(seg) + ("" if last else "/")
    return re.compile(f"^{body}(?:/.*)?$")   # a folder pattern covers what is inside


def ignored(rel: str, patterns: Sequence[Tuple[bool, "re.Pattern[str]"]]) -> bool:
    """Whether ``rel`` (a path relative to the context) is left out; the last match wins."""
    out = False
    for neg, rx in patterns:
        if rx.match(rel):
            out = not neg
    return out


def context_files(context: str) -> Iterator[Tuple[str, str]]:
    """(relative path, absolute path) of every file Docker would send, sorted."""
    pats = [(neg, _pattern_re(p)) for neg, p in _ignore_patterns(context)]
    prune = not any(neg for neg, _ in pats)   # no "!" exception: an ignored folder is skipped whole
    found: List[Tuple[str, str]] = []
    for root, dirs, files in os.walk(context):
        rel_root = os.path.relpath(root, context)
        if prune:
            dirs[:] = [d for d in dirs
                       if not ignored(d if rel_root == "." else f"{rel_root}/{d}", pats)]
        dirs.sort()
        for name in sorted(files) + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            rel = name if rel_root == "." else f"{rel_root}/{name}"
            if rel in (".dockerignore",) or not ignored(rel, pats):
                found.append((rel, os.path.join(root, name)))
                if len(found) > MAX_FILES:
                    raise OSError(f"more than {MAX_FILES} files in the build context {context}")
    return iter(sorted(found))


# --- the content tag -------------------------------------------------------------------

def _dockerfile_path(b: BuildDef) -> str:
    return b.dockerfile if os.path.isabs(b.dockerfile) else os.path.join(b.context, b.dockerfile)


def content_hash(b: BuildDef) -> str:
    """The hash of what the build reads; raises ``OSError`` for a missing context or Dockerfile."""
    if not os.path.isdir(b.context):
        raise FileNotFoundError(2, "no such folder", b.context)
    h = hashlib.sha256()

    def put(*parts: Any) -> None:
        for p in parts:
            data = p if isinstance(p, bytes) else str(p).encode()
            h.update(len(data).to_bytes(8, "big"))
            h.update(data)

    if b.dockerfile_inline is not None:
        put("inline", b.dockerfile_inline)
    else:
        with open(_dockerfile_path(b), "rb") as fh:
            put("dockerfile", b.dockerfile, fh.read())
    put("args", sorted(b.args.items()), "target", b.target or "", "labels", sorted(b.labels.items()))
    for rel, path in context_files(b.context):
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            put("link", rel, os.readlink(path))
            continue
        put("file", rel, oct(st.st_mode & 0o7777))
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:HASH_LEN]


def content_tag(b: BuildDef) -> str:
    return f"{b.repository}:{content_hash(b)}"


def resolve_builds(stack: Stack) -> Stack:
    """The stack with every built service's image set to its content tag."""
    if not stack.builds:
        return stack
    tags: Dict[str, str] = {}
    problems = []
    for name, b in sorted(stack.builds.items()):
        try:
            tags[name] = content_tag(b)
        except OSError as exc:
            what = exc.filename or b.context
            problems.append((b.location, f"expected a readable build context and Dockerfile, but "
                                         f"{what}: {exc.strerror or exc}"))
    if problems:
        raise StackFileError(problems[0][0], problems[0][1], tuple(problems))
    services = tuple(dataclasses.replace(s, image=tags[s.name]) if s.name in tags else s
                     for s in stack.services)
    return dataclasses.replace(stack, services=services)


# --- building ------------------------------------------------------------------------------

def _docker() -> Any:
    from .images import _local_docker
    return _local_docker()


def _has_image(client: Any, tag: str) -> bool:
    import docker.errors
    try:
        client.api.inspect_image(tag)
        return True
    except docker.errors.ImageNotFound:
        return False
    except docker.errors.APIError as exc:
        raise DockerError(f"inspect image {tag}: {exc.explanation or exc}") from exc


def _build_sync(client: Any, b: BuildDef, tag: str, emit: Callable[[str], None]) -> None:
    """One ``docker build``, streamed; raises ``BuildFailed`` with the log's tail. Blocking."""
    import docker.errors
    import requests.exceptions
    tail: Deque[str] = deque(maxlen=TAIL_LINES)

    def line(text: str) -> None:
        for ln in text.splitlines():
            if ln.strip():
                tail.append(ln.rstrip())
                emit(ln.rstrip())

    kw: Dict[str, Any] = dict(path=b.context, tag=tag, buildargs=dict(b.args) or None,
                              target=b.target, labels=dict(b.labels) or None, nocache=b.no_cache,
                              pull=b.pull, rm=True, forcerm=True, decode=True)
    inline_path = None
    if b.dockerfile_inline is not None:
        inline_path = os.path.join(b.context, f".swarmlet-dockerfile-{os.getpid()}")
        with open(inline_path, "w", encoding="utf-8") as fh:
            fh.write(b.dockerfile_inline)
        kw["dockerfile"] = os.path.basename(inline_path)
    else:
        kw["dockerfile"] = b.dockerfile
    try:
        for chunk in client.api.build(**kw):
            if "stream" in chunk:
                line(str(chunk["stream"]))
            elif "status" in chunk:
                line(str(chunk["status"]))
            if "error" in chunk or "errorDetail" in chunk:
                msg = chunk.get("error") or (chunk.get("errorDetail") or {}).get("message", "")
                line(str(msg))
                raise BuildFailed(_failure(b, tail))
    except docker.errors.APIError as exc:
        line(str(exc.explanation or exc))
        raise BuildFailed(_failure(b, tail)) from exc
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        line(str(exc))
        raise BuildFailed(_failure(b, tail)) from exc
    finally:
        if inline_path is not None:
            try:
                os.unlink(inline_path)
            except OSError:
                pass
    if not _has_image(client, tag):
        raise BuildFailed(_failure(b, tail) + f"\n(the build ended without an image {tag})")
    if b.also_tag:
        repo, _, t = b.also_tag.rpartition(":")
        if not repo or "/" in t:
            repo, t = b.also_tag, "latest"
        client.api.tag(tag, repo, t)


def _failure(b: BuildDef, tail: Sequence[str]) -> str:
    shown = "\n".join(f"  | {ln}" for ln in tail) or "  | (no output)"
    return (f"{b.location}: the build of {b.service} (context {b.context}) failed; "
            f"nothing was deployed. Last lines of its log:\n{shown}")


async def build_all(stack: Stack, progress: Optional[Progress] = None) -> Dict[str, str]:
    """Build each service's image unless the local Docker has its tag; {service: "built"|"cached"}.

    ``stack`` must have its tags resolved (``resolve_builds``)."""
    if not stack.builds:
        return {}
    loop = asyncio.get_running_loop()
    client = await asyncio.to_thread(_docker)
    out: Dict[str, str] = {}

    def emitter(service: str) -> Callable[[str], None]:
        def emit(text: str) -> None:
            if progress is not None:
                loop.call_soon_threadsafe(progress, service, text)
        return emit

    try:
        for spec in stack.services:
            b = stack.builds.get(spec.name)
            if b is None:
                continue
            if await asyncio.to_thread(_has_image, client, spec.image):
                out[spec.name] = "cached"
                if progress is not None:
                    progress(spec.name, f"{spec.image} is up to date (context unchanged)")
                continue
            if progress is not None:
                progress(spec.name, f"building {spec.image} from {b.context}")
            await asyncio.to_thread(_build_sync, client, b, spec.image, emitter(spec.name))
            out[spec.name] = "built"
    finally:
        await asyncio.to_thread(client.close)
    return out
