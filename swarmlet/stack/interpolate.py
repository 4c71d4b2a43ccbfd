"""``${VAR}`` interpolation as Compose does it, from a given mapping (pure).

Supported, as in compose-go's ``template`` package:

    $$            a literal $
    $VAR ${VAR}   the value, or "" with a warning when unset
    ${VAR:-dflt}  dflt when VAR is unset or empty     ${VAR-dflt}  only when unset
    ${VAR:?msg}   an error when VAR is unset or empty ${VAR?msg}   only when unset
    ${VAR:+alt}   alt when VAR is set and non-empty   ${VAR+alt}   alt when set

Defaults and alternatives may themselves contain ``${…}``. Any other ``$`` is
an error (Compose says "invalid template"), so a stray ``$1`` in a command is
caught rather than silently eaten; write ``$$1``.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping

from ..shipped.exceptions import StackFileError

_NAME = re.compile(r"[_A-Za-z][_A-Za-z0-9]*")
_OPS = (":-", ":?", ":+", "-", "?", "+")


def interpolate(text: str, env: Mapping[str, str], mark: Any,
                warn: Callable[[str], None]) -> str:
    """``text`` with variables substituted; ``mark`` locates errors."""
    out = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch != "$":
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1] if i + 1 < n else ""
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "{":
            end = _closing_brace(text, i + 2)
            if end < 0:
                raise StackFileError(str(mark), f"expected '}}' to close '${{' in {text!r}")
            out.append(_braced(text[i + 2:end], env, mark, warn))
            i = end + 1
        else:
            m = _NAME.match(text, i + 1)
            if not m:
                raise StackFileError(str(mark), f"expected a variable name after '$' in {text!r} "
                                                f"(write '$$' for a literal '$')")
            out.append(_lookup(m.group(), env, warn))
            i = m.end()
    return "".join(out)


def _closing_brace(text: str, start: int) -> int:
    depth = 1
    i = start
    while i < len(text):
        if text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _lookup(name: str, env: Mapping[str, str], warn: Callable[[str], None]) -> str:
    if name in env:
        return env[name]
    warn(f"variable {name} is not set, using an empty string")
    return ""


def _braced(body: str, env: Mapping[str, str], mark: Any, warn: Callable[[str], None]) -> str:
    m = _NAME.match(body)
    if not m:
        raise StackFileError(str(mark), f"expected a variable name in '${{{body}}}'")
    name, rest = m.group(), body[m.end():]
    if not rest:
        return _lookup(name, env, warn)
    op = next((o for o in _OPS if rest.startswith(o)), None)
    if op is None:
        raise StackFileError(str(mark), f"expected one of :- - :? ? :+ + after {name} in '${{{body}}}'")
    arg = rest[len(op):]
    is_set = name in env
    value = env.get(name, "")
    present = is_set and value != "" if op.startswith(":") else is_set
    if op in (":-", "-"):
        return value if present else interpolate(arg, env, mark, warn)
    if op in (":+", "+"):
        return interpolate(arg, env, mark, warn) if present else ""
    if present:
        return value
    message = interpolate(arg, env, mark, warn) if arg else "is required"
    raise StackFileError(str(mark), f"expected variable {name} to be set: {message}")
