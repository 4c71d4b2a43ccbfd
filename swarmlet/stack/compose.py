"""A Compose stack file -> a ``Stack`` of ``ServiceSpec``s, all or nothing.

Owns the top level of the file (``name``, ``services``, ``volumes``, ``secrets`` and
``configs`` (``secrets.py``); ``networks`` is a warning), profiles, cross-service checks
(a published port used twice), the stack's name, and ``load_stack``/``parse_stack``.

``parse_stack`` is pure: the stack file's text comes in, and env files are read
through the ``read_text`` it is given. Either a whole ``Stack`` comes back or a
``StackFileError`` is raised carrying every problem of the file, each at its
``file:line:col``; nothing is half-returned.

Services are named ``<stack>_<service>`` as ``docker stack deploy`` names them;
each carries the labels ``io.swarmlet.stack`` (so that ``--prune`` and ``stack
rm`` touch only this stack) and ``io.swarmlet.stack.service`` (its short name,
by which the stack's other services reach it). Named volumes are namespaced
``<stack>_<name>`` the same way. A service with ``profiles:`` is deployed only
when one of them is active (``--profile``, or ``COMPOSE_PROFILES`` as in
Compose; ``*`` activates all); it is still checked.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

from ..shipped.exceptions import StackFileError
from ..shipped.models import STACK_SERVICE_LABEL, ServiceSpec
from .build import BuildDef
from .loader import Mark, Node, parse_yaml
from .secrets import StackValue, parse_defs
from .service import check_name, parse_service, profiles_of
from .values import Context, StackWarning, as_map, as_str, check_keys, fail, fail_at
from .volumes import VolumeDef, parse_volume_defs

TOP_LEVEL = ("version", "name", "services", "volumes", "secrets", "configs")
TOP_IGNORED = {
    "networks": "services reach each other by name on swarmlet's own network",
    "include": "not supported by swarmlet; deploy each file",
}
_STACK_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")


@dataclass(frozen=True)
class Stack:
    """A parsed stack file: what ``deploy`` should make the cluster look like."""

    name: str
    services: Tuple[ServiceSpec, ...]
    volumes: Dict[str, VolumeDef] = field(default_factory=dict)
    warnings: Tuple[StackWarning, ...] = ()
    file: str = ""
    certificates: Tuple[Any, ...] = ()    # edge.CertFiles: tls: {cert, key} pairs, read and checked
    values: Tuple[StackValue, ...] = ()     # the file's secrets and configs (never shown)
    builds: Dict[str, BuildDef] = field(default_factory=dict)      # full service name -> build
    skipped: Tuple[Tuple[str, Tuple[str, ...]], ...] = ()           # (short name, its profiles)
    profiles: Tuple[str, ...] = ()                                  # the active profiles
    marks: Dict[str, str] = field(default_factory=dict)             # value path -> file:line:col

    def service(self, name: str) -> ServiceSpec:
        """A service by its full name (``hello_web``) or its short name in the file (``web``)."""
        for spec in self.services:
            if spec.name == name or spec.labels.get(STACK_SERVICE_LABEL) == name:
                return spec
        raise KeyError(name)

    def where(self, short: str, path: str = "") -> str:
        """``file:line:col`` of ``services.<short>[.path]`` (the file when unknown)."""
        key = f"services.{short}" + (f".{path}" if path else "")
        return self.marks.get(key) or self.marks.get(f"services.{short}") or self.file


def normalize_stack_name(text: str) -> str:
    """Compose's project-name rule: lowercase letters, digits, '_' and '-'."""
    return re.sub(r"[^a-z0-9_-]", "", text.lower()).lstrip("_-")


def _no_reader(path: str) -> str:
    raise FileNotFoundError(2, "No such file or directory", path)


def active_profiles(profiles: Optional[Sequence[str]], env: Mapping[str, str]) -> Tuple[str, ...]:
    """The profiles given, else ``COMPOSE_PROFILES`` (comma-separated), as Compose reads them."""
    if profiles is None:
        profiles = [p for p in env.get("COMPOSE_PROFILES", "").split(",")]
    return tuple(p.strip() for p in profiles if p.strip())


def parse_stack(text: str, filename: str = "stack.yml", env: Optional[Mapping[str, str]] = None,
                *, name: Optional[str] = None, base_dir: Optional[str] = None,
                read_text: Callable[[str], str] = _no_reader,
                read_bytes: Optional[Callable[[str, int], bytes]] = None,
                profiles: Optional[Sequence[str]] = None, home: Optional[str] = None) -> Stack:
    """Parse a stack file's text. ``env`` feeds ``${VAR}``; nothing is read from os.environ.

    ``read_bytes(path, limit)`` reads secret and config files (at most ``limit`` bytes);
    ``profiles``: the active profiles (None: ``COMPOSE_PROFILES`` in ``env``);
    ``home`` expands ``~/`` in bind mounts (None: ``HOME`` in ``env``).
    """
    env = dict(env or {})
    if base_dir is None:
        base_dir = posixpath.dirname(filename) or "."
    ctx = Context(filename=filename, base_dir=base_dir, env=env, read_text=read_text,
                  home=home if home is not None else env.get("HOME"))
    if read_bytes is not None:
        ctx.read_bytes = read_bytes
    root = parse_yaml(text, filename, env, ctx.warn)
    if root is None:
        fail_at(Mark(filename, 1, 1), "expected a mapping with 'services', got an empty file")
    if not root.is_map:
        fail(root, "a mapping with 'services' at the top of the file")
    keys = check_keys(root, TOP_LEVEL, ctx, ignored=TOP_IGNORED)
    stack = _stack_name(name, keys.get("name"), filename, base_dir)
    if "services" not in keys:
        fail_at(root.mark, "expected a top-level 'services' mapping")
    services_node = keys["services"]
    if not as_map(services_node):
        fail(services_node, "at least one service")
    volumes: Dict[str, VolumeDef] = {}
    if "volumes" in keys:
        with ctx.guard():
            volumes = parse_volume_defs(keys["volumes"], stack, ctx)
    refs: Dict[str, Any] = {"secret": {}, "config": {}}
    values: list = []
    for kind in ("secret", "config"):
        if kind + "s" in keys:
            with ctx.guard():
                defs, found = parse_defs(keys[kind + "s"], kind, stack, ctx)
                refs[kind], values = defs, values + found
    active = active_profiles(profiles, env)
    specs = []
    builds: Dict[str, BuildDef] = {}
    skipped = []
    published: Dict[Tuple[int, str], str] = {}
    for sname, snode in services_node.value.items():
        key_mark = services_node.key_marks.get(sname, snode.mark)
        ctx.marks[f"services.{sname}"] = str(key_mark)
        with ctx.guard():
            check_name(sname, Node(sname, key_mark, services_node.path), stack)
            if not snode.is_map:
                fail(snode, "a mapping")
            wanted = profiles_of(snode, ctx)
            spec, build = parse_service(sname, snode, stack, volumes, ctx, refs)
            if spec is None:
                continue
            if wanted and "*" not in active and not set(wanted) & set(active):
                skipped.append((sname, wanted))
                continue
            for port in spec.ports:
                if port.published is None:
                    continue
                key = (port.published, port.protocol)
                if key in published:
                    fail_at(snode.value["ports"].mark,
                            f"expected each published port once in the stack, but "
                            f"{port.published}/{port.protocol} is already published by service "
                            f"{published[key]!r}")
                published[key] = sname
            specs.append(spec)
            if build is not None:
                builds[spec.name] = build
    if ctx.errors:
        raise ctx.combined()
    return Stack(name=stack, services=tuple(specs), volumes=volumes,
                 warnings=tuple(sorted(ctx.warnings, key=_file_order(filename))), file=filename,
                 certificates=tuple(ctx.certificates), values=tuple(values),
                 builds=builds, skipped=tuple(skipped), profiles=active, marks=dict(ctx.marks))


def _file_order(filename: str) -> Callable[[StackWarning], tuple]:
    """Warnings in reading order: the stack file by line and column, then env files."""
    def key(w: StackWarning) -> tuple:
        file, _, rest = w.location.rpartition(":")
        file, _, line = file.rpartition(":")
        if file != filename or not (line.isdigit() and rest.isdigit()):
            return (1, 0, 0)
        return (0, int(line), int(rest))
    return key


def _stack_name(explicit: Optional[str], node: Optional[Node], filename: str, base_dir: str) -> str:
    if explicit is not None:
        text = normalize_stack_name(explicit)
        if not text:
            raise StackFileError(filename, f"expected a stack name of letters or digits, got {explicit!r}")
        return text
    if node is not None:
        raw = as_str(node, "a stack name")
        if not _STACK_NAME.fullmatch(raw):
            fail(node, "a stack name of lowercase letters, digits, '_' and '-'")
        return raw
    # Like Compose's project name: the stack file's folder ("examples/hello" -> hello).
    folder = posixpath.basename(posixpath.normpath(base_dir)) if base_dir not in ("", ".") else ""
    return normalize_stack_name(folder) or "stack"


def _read_text(path: str) -> str:
    with open(path, "rb") as fh:
        return fh.read().decode("utf-8-sig")


def _read_bytes(path: str, limit: int) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(limit)


def load_stack(path: str, env: Optional[Mapping[str, str]] = None,
               name: Optional[str] = None, profiles: Optional[Sequence[str]] = None) -> Stack:
    """Read and parse the stack file at ``path``; env files are relative to its folder.

    ``env`` is the mapping ``${VAR}`` reads (the CLI passes ``os.environ``).
    """
    try:
        raw = open(path, "rb").read()
    except OSError as exc:
        raise StackFileError(path, f"expected a readable stack file ({exc.strerror or exc})") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = raw[:exc.start]
        line = before.count(b"\n") + 1
        col = exc.start - (before.rfind(b"\n") + 1) + 1
        raise StackFileError(f"{path}:{line}:{col}", "expected UTF-8 text") from exc
    base_dir = os.path.dirname(os.path.abspath(path))
    return parse_stack(text, path, env, name=name, base_dir=base_dir, read_text=_read_text,
                       read_bytes=_read_bytes, profiles=profiles)
