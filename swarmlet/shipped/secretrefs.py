"""Secret and config references in a spec: names, where they land in a container, their checks.

Pure and shared (shipped): the stack loader, the master (every write, through
``validate.problems``) and the agent (``containerspec``, ``secretfiles``) agree on

- ``NAME``: a stored secret or config name: letters, digits, ``_ . -``, at most 64,
  starting with a letter or digit (Docker's rule; stack files make ``<stack>_<key>``);
- ``container_path(kind, ref)``: a secret at ``/run/secrets/<target>`` (or its absolute
  target), a config at its absolute target;
- ``problems(spec)``: bad names, targets, uid/gid and modes, and two mounts (secrets,
  configs, volumes) on one container path.
"""

from __future__ import annotations

import posixpath
import re
from typing import List, Tuple

from .models import SecretRef, ServiceSpec

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
NAME_WHAT = ("a name of letters, digits, '_', '.' or '-' (at most 64, starting with a letter "
             "or digit)")
SECRETS_DIR = "/run/secrets"
MAX_SIZE = 500 * 1024          # the most a value may hold (argued in master/vault.py)
KINDS = ("secret", "config")
_ID = re.compile(r"[0-9]{1,10}")


def container_path(kind: str, ref: SecretRef) -> str:
    if ref.target.startswith("/"):
        return posixpath.normpath(ref.target)
    return posixpath.join(SECRETS_DIR, ref.target)


def refs(spec: ServiceSpec) -> List[Tuple[str, SecretRef]]:
    """Every (kind, ref) of ``spec`` (or a ``TaskSpec``: it has the same two fields)."""
    return [("secret", r) for r in spec.secrets] + [("config", r) for r in spec.configs]


def ref_problems(kind: str, ref: SecretRef) -> List[str]:
    out = []
    if not NAME.fullmatch(ref.source or ""):
        out.append(f"expected {kind} source as {NAME_WHAT}, got {ref.source!r}")
    t = ref.target
    if not t:
        out.append(f"expected a target for {kind} {ref.source!r}")
    elif kind == "config" and not t.startswith("/"):
        out.append(f"expected an absolute container path as the target of config "
                   f"{ref.source!r}, got {t!r}")
    elif "\0" in t or ".." in t.split("/") or (not t.startswith("/") and t.endswith("/")):
        out.append(f"expected a plain file name or absolute path as the target of {kind} "
                   f"{ref.source!r}, got {t!r}")
    for what, value in (("uid", ref.uid), ("gid", ref.gid)):
        if not _ID.fullmatch(value or ""):
            out.append(f"expected a numeric {what} for {kind} {ref.source!r}, got {value!r}")
    if not 0 <= ref.mode <= 0o777:
        out.append(f"expected a file mode 0000..0777 for {kind} {ref.source!r}, got {ref.mode:o}")
    if ref.version < 0:
        out.append(f"expected a version of 0 (newest) or more for {kind} {ref.source!r}")
    return out


def problems(spec: ServiceSpec) -> List[Tuple[str, str]]:
    """(field, message) for every bad reference of ``spec``."""
    out: List[Tuple[str, str]] = []
    seen = {v.target for v in spec.volumes}
    for kind, ref in refs(spec):
        field = kind + "s"
        for msg in ref_problems(kind, ref):
            out.append((field, msg))
        path = container_path(kind, ref) if ref.target else ""
        if path and path in seen:
            out.append((field, f"expected each container path mounted once, got {path} twice"))
        seen.add(path)
    return out
