"""The ``--secret``/``--config`` flags of ``run`` and ``update`` (pure parsing).

``NAME``, ``NAME:TARGET`` or docker's ``source=NAME,target=T,uid=U,gid=G,mode=0440``; a secret's
target defaults to its name (``/run/secrets/NAME``), a config's to ``/NAME``. Judged by the same
``shipped/secretrefs.py`` rules as stack files and the master.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

from ..shipped import secretrefs
from ..shipped.exceptions import UsageError
from ..shipped.models import SecretRef, to_wire


def parse_ref(kind: str, text: str) -> SecretRef:
    """``NAME``, ``NAME:TARGET`` or docker's ``source=NAME,target=T,uid=U,gid=G,mode=0440``
    (``run --secret``, ``update --secret-add``; the same for configs)."""
    fields: Dict[str, str] = {}
    if "=" in text:
        for part in text.split(","):
            k, eq, v = part.partition("=")
            if not eq or k not in ("source", "src", "target", "uid", "gid", "mode"):
                raise UsageError(f"bad --{kind} {text!r}: use NAME[:TARGET] or "
                                 "source=NAME,target=T,uid=U,gid=G,mode=0440")
            fields["source" if k == "src" else k] = v
    else:
        fields["source"], _, target = text.partition(":")
        if target:
            fields["target"] = target
    source = fields.get("source", "")
    try:
        mode = int(fields.get("mode", "0444"), 8)
    except ValueError as exc:
        raise UsageError(f"bad --{kind} {text!r}: mode is octal, e.g. 0440") from exc
    ref = SecretRef(source, fields.get("target") or (source if kind == "secret" else f"/{source}"),
                    uid=fields.get("uid", "0"), gid=fields.get("gid", "0"), mode=mode)
    problems = secretrefs.ref_problems(kind, ref)
    if problems:
        raise UsageError(f"bad --{kind} {text!r}: {problems[0]}")
    return ref


def refs_after(kind: str, current: List[Dict[str, Any]], add: Tuple[str, ...],
               rm: Tuple[str, ...]) -> List[Dict[str, Any]]:
    """The wire refs after ``--{kind}-rm NAME`` and ``--{kind}-add`` (a re-added name replaces)."""
    new = [parse_ref(kind, t) for t in add]
    gone = set(rm) | {r.source for r in new}
    return [r for r in current if r.get("source") not in gone] + [to_wire(r) for r in new]
