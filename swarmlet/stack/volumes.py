"""Top-level ``volumes:`` declarations and each service's ``volumes:`` and ``tmpfs:`` mounts.

Named volumes must be declared at the top level (Compose rejects undeclared
ones too). Like ``docker stack deploy`` they are namespaced by stack,
``<stack>_<name>``, unless they set ``name:`` or are ``external`` (the legacy
``external: {name: X}`` form is read as ``external: true`` + ``name: X``, with
the deprecation warning Docker's loaders give). A host path is bind-mounted
only when written as one (``/abs``, ``./rel``, ``~/rel``, or long syntax
``type: bind``); a relative path is resolved against the stack file's folder
and ``~`` against the client's HOME, as ``docker stack deploy`` does, and the
path must exist on the servers. ``tmpfs`` mounts (``type: tmpfs`` or the
service's ``tmpfs:`` key) are in-memory mounts with an optional size and mode.
Anonymous volumes have no place in ``VolumeMount``: they are warnings, and the
container's own filesystem is used.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from ..shipped.models import VolumeMount
from .loader import Node
from .values import (Context, as_bool, as_bytes, as_int, as_map, as_scalar_str, as_str,
                     check_keys, fail, fail_at)

_VOLUME_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


@dataclass(frozen=True)
class VolumeDef:
    """A named volume declared at the top level of the stack file."""

    key: str                 # the name services refer to
    name: str                # the Docker volume name on the servers
    external: bool = False   # must already exist; never created or removed
    driver: str = "local"
    driver_opts: Dict[str, str] = field(default_factory=dict)
    labels: Dict[str, str] = field(default_factory=dict)


def parse_volume_defs(node: Node, stack: str, ctx: Context) -> Dict[str, VolumeDef]:
    out: Dict[str, VolumeDef] = {}
    for key, vnode in as_map(node).items():
        if not key or not set(key) <= _VOLUME_NAME_OK:
            fail_at(node.key_marks.get(key, vnode.mark),
                    f"expected a volume name of letters, digits, '_', '.' or '-', got {key!r}")
        if vnode.value is None:
            out[key] = VolumeDef(key, f"{stack}_{key}")
            continue
        with ctx.guard():
            out[key] = _volume_def(key, vnode, stack, ctx)
    return out


def _volume_def(key: str, vnode: Node, stack: str, ctx: Context) -> VolumeDef:
    keys = check_keys(vnode, ("name", "external", "driver", "driver_opts", "labels"), ctx)
    external, legacy_name = _external(keys["external"], ctx) if "external" in keys else (False, None)
    name = as_str(keys["name"]) if "name" in keys else None
    if legacy_name is not None:
        if name is not None and name != legacy_name:
            fail(keys["name"], f"the same name as external.name ({legacy_name!r}), or only one of them")
        name = legacy_name
    if name is None:
        name = key if external else f"{stack}_{key}"
    driver = as_str(keys["driver"]) if "driver" in keys else "local"
    if driver != "local":
        ctx.warn(keys["driver"].mark, f"volume driver {driver!r} ignored: "
                                      "swarmlet creates local volumes", "driver")
    opts = _str_map(keys["driver_opts"]) if "driver_opts" in keys else {}
    labels = _labels(keys["labels"]) if "labels" in keys else {}
    return VolumeDef(key, name, external, driver, opts, labels)


def _external(node: Node, ctx: Context) -> Tuple[bool, Optional[str]]:
    """``external: true`` or the legacy ``external: {name: X}`` (external, named X)."""
    if not node.is_map:
        return as_bool(node), None
    keys = check_keys(node, ("name",), ctx)
    if "name" not in keys:
        fail(node, "true, false or the legacy {name: VOLUME}")
    ctx.warn(node.mark, "external: {name: ...} is deprecated; write external: true and name: ... "
                        "(read as such)", "external")
    return True, as_str(keys["name"], "an external volume name")


def _str_map(node: Node) -> Dict[str, str]:
    return {k: as_scalar_str(v) for k, v in as_map(node).items()}


def _labels(node: Node) -> Dict[str, str]:
    if node.is_seq:
        out = {}
        for item in node.value:
            k, _, v = as_str(item, 'a label like "key=value"').partition("=")
            out[k] = v
        return out
    return _str_map(node)


def parse_mounts(node: Node, defs: Dict[str, VolumeDef], ctx: Context) -> Tuple[VolumeMount, ...]:
    if not node.is_seq:
        fail(node, "a list of volumes")
    out: List[VolumeMount] = []
    for item in node.value:
        with ctx.guard():
            mount = _long(item, defs, ctx) if item.is_map else _short(item, defs, ctx)
            if mount is None:
                continue
            add_mount(out, mount, item)
    return tuple(out)


def add_mount(out: List[VolumeMount], mount: VolumeMount, item: Node) -> None:
    if any(m.target == mount.target for m in out):
        fail(item, f"each container path mounted once ({mount.target} repeats)")
    out.append(mount)


def parse_tmpfs(node: Node, ctx: Context) -> Tuple[VolumeMount, ...]:
    """The service's ``tmpfs:``: a path or a list of ``/path[:size=64m,mode=1777]``."""
    items = node.value if node.is_seq else [node]
    out: List[VolumeMount] = []
    for item in items:
        with ctx.guard():
            text = as_str(item, 'a tmpfs mount like "/run" or "/tmp:size=64m,mode=1777"')
            target, _, opts = text.partition(":")
            size = mode = None
            for opt in filter(None, opts.split(",")):
                k, _, v = opt.partition("=")
                if k == "size":
                    size = _size_text(item, v)
                elif k == "mode" and _octal(v) is not None:
                    mode = _octal(v)
                elif k in ("ro", "rw", "exec", "noexec", "suid", "nosuid", "dev", "nodev", "uid", "gid"):
                    ctx.warn(item.mark, f"tmpfs option {k!r} ignored: only size and mode are applied")
                else:
                    fail(item, "tmpfs options size=BYTES and mode=OCTAL")
            add_mount(out, VolumeMount(source="", target=_target(item, target), kind="tmpfs",
                                       size=size, mode=mode), item)
    return tuple(out)


def _octal(text: str) -> Optional[int]:
    try:
        value = int(text, 8)
    except ValueError:
        return None
    return value if 0 <= value <= 0o7777 else None


def _size_text(item: Node, text: str) -> int:
    return as_bytes(Node(text, item.mark, item.path))


def _is_path(source: str) -> bool:
    return source.startswith(("/", "./", "../", "~")) or source in (".", "..")


def _source(item: Node, source: str, kind: str, defs: Dict[str, VolumeDef], ctx: Context) -> str:
    if kind == "bind":
        if source == "~" or source.startswith("~/"):
            if not ctx.home:
                fail(item, "an absolute or ./relative host path (~ needs HOME set on this host)")
            return posixpath.normpath(ctx.home + source[1:])
        if source.startswith("~"):
            fail(item, "an absolute, ./relative or ~/ host path (~user is not expanded)")
        return posixpath.normpath(posixpath.join(ctx.base_dir, source))
    if source not in defs:
        fail(item, f"a volume declared under the top-level 'volumes:' (add {source!r} there)")
    return defs[source].name


def _target(item: Node, target: str) -> str:
    if not target.startswith("/"):
        fail(item, "an absolute container path for the mount target")
    return posixpath.normpath(target)


def _short(item: Node, defs: Dict[str, VolumeDef], ctx: Context):
    text = as_str(item, 'a volume like "data:/var/lib/data" or "./conf:/etc/app:ro"')
    parts = text.split(":")
    if len(parts) == 1:
        ctx.warn(item.mark, f"anonymous volume {text!r} ignored: name it under the top-level "
                            "'volumes:' to keep its data")
        return None
    if len(parts) > 3 or not parts[0] or not parts[1]:
        fail(item, 'a volume like "data:/var/lib/data" or "./conf:/etc/app:ro"')
    source, target = parts[0], parts[1]
    read_only = False
    if len(parts) == 3:
        for opt in parts[2].split(","):
            if opt in ("ro", "rw"):
                read_only = opt == "ro"
            elif opt in ("z", "Z", "cached", "delegated", "consistent", "nocopy",
                         "shared", "slave", "private", "rshared", "rslave", "rprivate"):
                ctx.warn(item.mark, f"volume option {opt!r} ignored")
            else:
                fail(item, f"volume options ro or rw (not {opt!r})")
    kind = "bind" if _is_path(source) else "volume"
    return VolumeMount(source=_source(item, source, kind, defs, ctx),
                       target=_target(item, target), kind=kind, read_only=read_only)


def _long(item: Node, defs: Dict[str, VolumeDef], ctx: Context):
    keys = check_keys(item, ("type", "source", "target", "read_only", "tmpfs"), ctx,
                      ignored={"volume": "volume options are not supported",
                               "bind": "bind options are not supported",
                               "consistency": "has no effect on Linux"})
    kind = as_str(keys["type"]) if "type" in keys else "volume"
    if kind not in ("volume", "bind", "tmpfs"):
        fail(keys["type"], "type volume, bind or tmpfs")
    if "target" not in keys:
        fail(item, "a mount with 'target'")
    target = _target(keys["target"], as_str(keys["target"]))
    if kind == "tmpfs":
        return _long_tmpfs(keys, target, ctx)
    if "tmpfs" in keys:
        fail(keys["tmpfs"], "tmpfs options only with type: tmpfs")
    if "source" not in keys:
        if kind == "bind":
            fail(item, "a bind mount with 'source'")
        ctx.warn(item.mark, f"anonymous volume {target!r} ignored: name it under the top-level "
                            "'volumes:' to keep its data")
        return None
    src_node = keys["source"]
    source = _source(src_node, as_str(src_node), kind, defs, ctx)
    read_only = as_bool(keys["read_only"]) if "read_only" in keys else False
    return VolumeMount(source=source, target=target, kind=kind, read_only=read_only)


def _long_tmpfs(keys: Dict[str, Node], target: str, ctx: Context) -> VolumeMount:
    if "source" in keys:
        fail(keys["source"], "no 'source' for a tmpfs mount")
    size = mode = None
    if "tmpfs" in keys:
        opts = check_keys(keys["tmpfs"], ("size", "mode"), ctx)
        if "size" in opts:
            size = as_bytes(opts["size"])
        if "mode" in opts:
            mode = as_int(opts["mode"], 0, 0o7777, "a file mode like 1777 (octal) or 1023")
            if isinstance(opts["mode"].value, int) and not opts["mode"].interpolated:
                # YAML reads 1777 as decimal; Compose means the octal digits written.
                parsed = _octal(str(opts["mode"].value))
                mode = parsed if parsed is not None else mode
    read_only = as_bool(keys["read_only"]) if "read_only" in keys else False
    return VolumeMount(source="", target=target, kind="tmpfs", read_only=read_only, size=size,
                       mode=mode)
