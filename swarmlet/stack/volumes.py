"""Top-level ``volumes:`` declarations and each service's ``volumes:`` mounts.

Named volumes must be declared at the top level (Compose rejects undeclared
ones too). Like ``docker stack deploy`` they are namespaced by stack,
``<stack>_<name>``, unless they set ``name:`` or are ``external``. A host path
is bind-mounted only when written as one (``/abs``, ``./rel``, or long syntax
``type: bind``); a relative path is resolved against the stack file's folder,
and must exist on the servers. ``tmpfs`` and anonymous volumes have no place in
``VolumeMount``: they are warnings, and the container's own filesystem is used.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from ..shipped.models import VolumeMount
from .loader import Node
from .values import (Context, as_bool, as_map, as_scalar_str, as_str, check_keys, fail,
                     fail_at)

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
        keys = check_keys(vnode, ("name", "external", "driver", "driver_opts", "labels"), ctx)
        external = as_bool(keys["external"]) if "external" in keys else False
        name = as_str(keys["name"]) if "name" in keys else (key if external else f"{stack}_{key}")
        driver = as_str(keys["driver"]) if "driver" in keys else "local"
        if driver != "local":
            ctx.warn(keys["driver"].mark, f"volume driver {driver!r} ignored: "
                                          "swarmlet creates local volumes", "driver")
        opts = _str_map(keys["driver_opts"]) if "driver_opts" in keys else {}
        labels = _labels(keys["labels"]) if "labels" in keys else {}
        out[key] = VolumeDef(key, name, external, driver, opts, labels)
    return out


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
        mount = _long(item, defs, ctx) if item.is_map else _short(item, defs, ctx)
        if mount is None:
            continue
        if any(m.target == mount.target for m in out):
            fail(item, f"each container path mounted once ({mount.target} repeats)")
        out.append(mount)
    return tuple(out)


def _is_path(source: str) -> bool:
    return source.startswith(("/", "./", "../", "~")) or source in (".", "..")


def _source(item: Node, source: str, kind: str, defs: Dict[str, VolumeDef], ctx: Context) -> str:
    if kind == "bind":
        if source.startswith("~"):
            fail(item, "an absolute or ./relative host path (~ is not expanded on the servers)")
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
    keys = check_keys(item, ("type", "source", "target", "read_only"), ctx,
                      ignored={"volume": "volume options are not supported",
                               "bind": "bind options are not supported",
                               "tmpfs": "tmpfs options are not supported",
                               "consistency": "has no effect on Linux"})
    kind = as_str(keys["type"]) if "type" in keys else "volume"
    if kind == "tmpfs":
        ctx.warn(keys["type"].mark, "tmpfs mounts are not supported; ignored", "type")
        return None
    if kind not in ("volume", "bind"):
        fail(keys["type"], "type volume or bind")
    if "target" not in keys:
        fail(item, "a mount with 'target'")
    target = _target(keys["target"], as_str(keys["target"]))
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
