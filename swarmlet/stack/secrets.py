"""Top-level ``secrets:`` and ``configs:`` of a stack file, and each service's references.

Compose's keys, as ``docker stack deploy`` reads them:

- top level: a secret has ``file:`` (relative to the stack file's folder),
  ``environment:`` (a variable of the deploying shell) or ``external: true``
  (made with ``swarmlet secret create``); a config has ``file:``, ``content:``
  (inline text, ``${VAR}`` interpolated) or ``external: true``. Like
  ``docker stack deploy`` a defined one is stored as ``<stack>_<key>`` unless it
  says ``name:``; an external one is used under its own name (``name:`` or the key);
- a service's ``secrets:``/``configs:``: short syntax (the key) or long syntax
  (``source``, ``target``, ``uid``, ``gid``, ``mode``). A secret lands at
  ``/run/secrets/<target>`` (default: the key), a config at ``target``
  (default ``/<key>``); mode defaults to 0444, uid and gid to 0.

Values are read here (through the ``Context``'s ``read_bytes``), refused past
``vault.MAX_SIZE`` at their line, and carried in ``Stack.values`` (``StackValue``,
never printed) for the master, which makes a new version only when one changed
and pins the versions in each spec. A reference to a key the file does not
define, or a ``file:`` that cannot be read, is a ``StackFileError`` at its place.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from ..shipped import secretrefs
from ..shipped.secretrefs import MAX_SIZE
from ..shipped.models import SecretRef
from .loader import Node
from .values import Context, as_bool, as_map, as_scalar_str, as_str, check_keys, fail, fail_at

TOP_KEYS = {"secret": ("file", "environment", "external", "name", "labels"),
            "config": ("file", "content", "external", "name", "labels")}
_IGNORED = {"driver": "not supported by swarmlet", "driver_opts": "not supported by swarmlet",
            "template_driver": "not supported by swarmlet"}


@dataclass(frozen=True)
class StackValue:
    """A secret's or config's value from the stack file, for the master (never shown)."""

    kind: str
    name: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class SecretDef:
    key: str                  # what services refer to
    name: str                 # the stored name
    kind: str
    external: bool = False


def parse_defs(node: Node, kind: str, stack: str, ctx: Context
               ) -> Tuple[Dict[str, SecretDef], List[StackValue]]:
    defs: Dict[str, SecretDef] = {}
    values: List[StackValue] = []
    for key, vnode in as_map(node).items():
        key_mark = node.key_marks.get(key, vnode.mark)
        if not secretrefs.NAME.fullmatch(key):
            fail_at(key_mark, f"expected a {kind} name as {secretrefs.NAME_WHAT}, got {key!r}")
        keys = check_keys(vnode, TOP_KEYS[kind], ctx, ignored=_IGNORED) if vnode.value is not None \
            else fail(vnode, f"a {kind} with {' or '.join(repr(k) for k in TOP_KEYS[kind][:3])}")
        external = as_bool(keys["external"]) if "external" in keys else False
        name = as_str(keys["name"]) if "name" in keys else (key if external else f"{stack}_{key}")
        if not secretrefs.NAME.fullmatch(name):
            fail(keys.get("name", vnode), f"a {kind} name as {secretrefs.NAME_WHAT}")
        twin = next((d.key for d in defs.values() if d.name == name), None)
        if twin is not None:
            fail_at(key_mark, f"expected each {kind} stored under its own name, but {key!r} and "
                              f"{twin!r} are both {name!r}")
        sources = [k for k in TOP_KEYS[kind][:2] if k in keys]
        if external:
            if sources:
                fail_at(keys[sources[0]].mark, f"expected an external {kind} without "
                                               f"'{sources[0]}' (it is made with `swarmlet {kind} create`)")
        elif len(sources) != 1:
            fail_at(key_mark, f"expected {kind} {key!r} to have one of "
                              f"{', '.join(repr(k) for k in TOP_KEYS[kind][:2])} or 'external: true'")
        defs[key] = SecretDef(key, name, kind, external)
        if external:
            continue
        with ctx.guard():   # an unreadable value is one error; the services using it are fine
            data = _value(kind, key, sources[0], keys[sources[0]], ctx)
            if len(data) > MAX_SIZE:
                fail_at(keys[sources[0]].mark, f"expected {kind} {key!r} of at most "
                                               f"{MAX_SIZE // 1024} KiB, got {len(data) / 1024:.1f} KiB")
            values.append(StackValue(kind, name, data))
    return defs, values


def _value(kind: str, key: str, source: str, node: Node, ctx: Context) -> bytes:
    if source == "environment":
        var = as_str(node, "an environment variable name")
        if var not in ctx.env:
            fail(node, f"the environment variable {var!r} to be set (it holds {kind} {key!r})")
        return ctx.env[var].encode()
    if source == "content":
        return as_scalar_str(node, "the config's text").encode()
    rel = as_str(node, f"a file holding {kind} {key!r}")
    path = posixpath.normpath(posixpath.join(ctx.base_dir, rel))
    try:
        return ctx.read_bytes(path, MAX_SIZE + 1)
    except OSError as exc:
        fail_at(node.mark, f"expected a readable file at {path} for {kind} {key!r} "
                           f"({exc.strerror or exc})")


def parse_refs(node: Node, kind: str, defs: Dict[str, SecretDef], ctx: Context
               ) -> Tuple[SecretRef, ...]:
    """A service's ``secrets:`` or ``configs:`` (short or long syntax)."""
    if not node.is_seq:
        fail(node, f"a list of {kind}s")
    out: List[SecretRef] = []
    for item in node.value:
        if item.is_map:
            keys = check_keys(item, ("source", "target", "uid", "gid", "mode"), ctx)
            if "source" not in keys:
                fail(item, f"a {kind} with 'source'")
            src_node = keys["source"]
        else:
            keys, src_node = {}, item
        key = as_str(src_node, f"the name of a {kind}")
        d = defs.get(key)
        if d is None:
            fail(src_node, f"a {kind} defined under the top-level '{kind}s:' (add {key!r} there)")
        target = as_str(keys["target"]) if "target" in keys else (key if kind == "secret" else f"/{key}")
        ref = SecretRef(d.name, target,
                        uid=as_scalar_str(keys["uid"]) if "uid" in keys else "0",
                        gid=as_scalar_str(keys["gid"]) if "gid" in keys else "0",
                        mode=_mode(keys["mode"]) if "mode" in keys else 0o444)
        for problem in secretrefs.ref_problems(kind, ref):
            fail_at(item.mark, problem)
        out.append(ref)
    return tuple(out)


def _mode(node: Node) -> int:
    """YAML 1.1 reads ``0440`` as the octal number it means; a string is read as octal."""
    v = node.value
    if isinstance(v, int) and not isinstance(v, bool):
        mode = v
    elif isinstance(v, str):
        text = v[2:] if v.lower().startswith("0o") else v
        try:
            mode = int(text, 8)
        except ValueError:
            fail(node, "an octal file mode like 0440")
    else:
        fail(node, "an octal file mode like 0440")
    if not 0 <= mode <= 0o777:
        fail(node, "a file mode from 0000 to 0777")
    return mode
