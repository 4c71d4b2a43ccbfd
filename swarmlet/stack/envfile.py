"""``env_file:`` contents: ``KEY=VALUE`` lines, parsed the way Compose's dotenv does.

Blank lines and ``#`` comments are skipped; ``export KEY=…`` is accepted;
``'single'`` quotes are literal, ``"double"`` quotes understand ``\\n``, ``\\t``,
``\\"`` and ``\\\\`` and are interpolated, unquoted values lose a trailing
`` # comment`` and are interpolated. A bare ``KEY`` takes its value from the
given environment, and is left out when that lacks it. Earlier keys of the file
can be used by later ones, as in Compose.
"""

from __future__ import annotations

import re
from typing import Callable, Dict, Mapping

from ..shipped.exceptions import StackFileError
from .interpolate import interpolate
from .loader import Mark

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "\\$"}


def parse_env_file(text: str, filename: str, env: Mapping[str, str],
                   warn: Callable[[Mark, str], None]) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        indent = len(raw) - len(raw.lstrip())
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
            indent = len(raw) - len(line)
        m = _KEY.match(line)
        mark = Mark(filename, number, indent + 1)
        if not m:
            raise StackFileError(str(mark), f"expected KEY=VALUE with a variable name, got {raw.strip()!r}")
        key, rest = m.group(), line[m.end():]
        if not rest:
            if key in env:
                out[key] = env[key]
            continue
        if not rest.lstrip().startswith("="):
            raise StackFileError(str(Mark(filename, number, indent + m.end() + 1)),
                                 f"expected '=' after {key}")
        value = rest.lstrip()[1:].strip()
        scope = {**env, **out}
        vmark = Mark(filename, number, indent + 1 + len(line) - len(value))
        out[key] = _value(value, vmark, scope, lambda msg: warn(vmark, msg))
    return out


def _value(value: str, mark: Mark, scope: Mapping[str, str], warn: Callable[[str], None]) -> str:
    if value.startswith("'"):
        end = value.find("'", 1)
        if end < 0:
            raise StackFileError(str(mark), "expected a closing ' quote")
        return value[1:end]
    if value.startswith('"'):
        chars, i = [], 1
        while i < len(value) and value[i] != '"':
            if value[i] == "\\" and i + 1 < len(value):
                chars.append(_ESCAPES.get(value[i + 1], "\\" + value[i + 1]))
                i += 2
                continue
            chars.append(value[i])
            i += 1
        if i >= len(value):
            raise StackFileError(str(mark), 'expected a closing " quote')
        # An escaped \$ must survive interpolation as a literal $.
        return interpolate("".join(chars).replace("\\$", "$$"), scope, mark, warn)
    hash_at = value.find(" #")
    if hash_at >= 0:
        value = value[:hash_at].rstrip()
    return interpolate(value, scope, mark, warn)
