"""A service's ``build:`` section -> ``BuildDef`` (what to build; pure).

``build: ./dir`` or the long form (context, dockerfile, dockerfile_inline,
args, target, labels, no_cache, pull). The context is a folder on the admin
host, relative to the stack file's folder. The image of a built service is
``<stack>_<service>:<content hash>``: the hash of the context and the
Dockerfile is computed at deploy time (``swarmlet.builder``), so the loader
gives such a service the placeholder tag ``BUILD_TAG`` until then. Build keys
that need a builder feature swarmlet does not drive (cache_from, secrets,
ssh, platforms…) are warnings.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Dict, Optional

from .loader import Node
from .values import Context, as_bool, as_map, as_scalar_str, as_str, check_keys, fail

BUILD_TAG = "build"   # "<stack>_<service>:build" until the content hash is known
_KEYS = ("context", "dockerfile", "dockerfile_inline", "args", "target", "labels", "no_cache",
         "pull")
_IGNORED = {k: "not used by swarmlet's builds" for k in (
    "cache_from", "cache_to", "network", "shm_size", "extra_hosts", "isolation", "privileged",
    "platforms", "secrets", "ssh", "tags", "ulimits", "additional_contexts", "entitlements")}


@dataclass(frozen=True)
class BuildDef:
    """One service's build: the admin host's Docker builds it before a deploy."""

    service: str                       # the service's full name (<stack>_<service>)
    context: str                       # absolute folder on this host
    dockerfile: str = "Dockerfile"     # relative to the context (or absolute)
    dockerfile_inline: Optional[str] = None
    args: Dict[str, str] = field(default_factory=dict)
    target: Optional[str] = None
    labels: Dict[str, str] = field(default_factory=dict)
    no_cache: bool = False
    pull: bool = False
    repository: str = ""               # image name without tag: "<stack>_<service>"
    also_tag: Optional[str] = None     # the file's own ``image:``, tagged locally too
    location: str = ""                 # file:line:col of ``build:``, for messages


def parse_build(node: Node, service: str, repository: str, image: Optional[str],
                ctx: Context, location: str = "") -> BuildDef:
    if isinstance(node.value, str):
        keys: Dict[str, Node] = {"context": node}
    else:
        keys = check_keys(node, _KEYS, ctx, ignored=_IGNORED)
    fields: Dict[str, object] = {"service": service, "repository": repository, "also_tag": image,
                                 "location": location or str(node.mark)}
    ctx_node = keys.get("context")
    rel = as_str(ctx_node, "a build context folder like ./app") if ctx_node is not None else "."
    if "://" in rel or rel.startswith(("git@", "github.com/")):
        fail(ctx_node, "a local build context folder (remote contexts are not built by swarmlet)")
    fields["context"] = posixpath.normpath(posixpath.join(ctx.base_dir, rel))
    if "dockerfile" in keys:
        fields["dockerfile"] = as_str(keys["dockerfile"], "a Dockerfile path")
    if "dockerfile_inline" in keys:
        if "dockerfile" in keys:
            fail(keys["dockerfile_inline"], "only one of dockerfile and dockerfile_inline")
        fields["dockerfile_inline"] = as_str(keys["dockerfile_inline"], "Dockerfile text")
    if "args" in keys:
        fields["args"] = _args(keys["args"], ctx)
    if "target" in keys:
        fields["target"] = as_str(keys["target"], "a build stage name")
    if "labels" in keys:
        from .deploy import parse_labels
        fields["labels"] = parse_labels(keys["labels"])
    for flag in ("no_cache", "pull"):
        if flag in keys:
            fields[flag] = as_bool(keys[flag])
    return BuildDef(**fields)  # type: ignore[arg-type]


def _args(node: Node, ctx: Context) -> Dict[str, str]:
    out: Dict[str, str] = {}
    if node.is_seq:
        for item in node.value:
            key, eq, value = as_str(item, 'a build arg like "KEY=value"').partition("=")
            if not key:
                fail(item, 'a build arg like "KEY=value"')
            if eq:
                out[key] = value
            elif key in ctx.env:
                out[key] = ctx.env[key]
        return out
    for key, vnode in as_map(node).items():
        if vnode.value is None:
            if key in ctx.env:
                out[key] = ctx.env[key]
            continue
        out[key] = as_scalar_str(vnode)
    return out
