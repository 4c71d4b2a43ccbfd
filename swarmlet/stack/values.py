"""Typed readers for ``Node`` values, each failing with ``file:line:col: expected …``.

Owns: the conversion of one YAML value into one Python value (strings, ints,
durations like ``1m30s``, byte sizes like ``512M``, string lists), the error
wording, and the ``Context`` that collects warnings while a file is read.
"""

from __future__ import annotations

import contextlib
import difflib
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, NoReturn, Optional, Tuple

from ..shipped.exceptions import StackFileError
from .loader import Mark, Node


@dataclass(frozen=True)
class StackWarning:
    """Something in the file that swarmlet reads past (an unsupported key…)."""

    location: str        # file:line:col
    message: str
    key: str = ""        # the key it is about, when there is one

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


MAX_ERRORS = 100   # a file this broken says enough with its first hundred problems


@dataclass
class Context:
    """What reading one stack file needs: where it is, the variables, the warnings,
    and the errors collected so far (every one is reported, not just the first).

    ``home`` expands ``~`` in bind-mount sources, as ``docker stack deploy`` does
    with the client's HOME; ``marks`` records where some values were written
    (``services.web.logging.driver`` -> ``file:line:col``) for checks made after
    loading, such as a logging driver a node lacks.
    """

    filename: str
    base_dir: str
    env: Mapping[str, str]
    read_text: Callable[[str], str]
    home: Optional[str] = None
    warnings: List[StackWarning] = field(default_factory=list)
    certificates: List[Any] = field(default_factory=list)   # edge.CertFiles read for tls: {cert, key}
    # (path, at most N bytes) -> bytes: secret and config files (stack/secrets.py)
    read_bytes: Callable[[str, int], bytes] = field(default=lambda path, limit: _no_bytes(path))
    errors: List[StackFileError] = field(default_factory=list)
    marks: Dict[str, str] = field(default_factory=dict)

    def warn(self, mark: Mark, message: str, key: str = "") -> None:
        warning = StackWarning(str(mark), message, key)
        if warning not in self.warnings:   # an alias used twice says it once
            self.warnings.append(warning)

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Run a block; a ``StackFileError`` in it is recorded and reading goes on after it."""
        try:
            yield
        except StackFileError as exc:
            if len(self.errors) >= MAX_ERRORS:
                raise self.combined() from exc
            self.errors.append(exc)

    def combined(self) -> StackFileError:
        return StackFileError.combine(sorted(self.errors, key=lambda e: _location_key(e.location)))

    def remember(self, node: Node) -> None:
        """Keep where ``node`` was written, under its path (``services.web.logging.driver``)."""
        self.marks[node.path] = str(node.mark)


def _location_key(location: str) -> tuple:
    """``file:line:col`` sorts by file, then line and column as numbers."""
    file, _, col = location.rpartition(":")
    file2, _, line = file.rpartition(":")
    if line.isdigit() and col.isdigit():
        return (file2, int(line), int(col))
    return (location, 0, 0)


def _no_bytes(path: str) -> bytes:
    raise FileNotFoundError(2, "No such file or directory", path)


def show(node: Node) -> str:
    v = node.value
    if isinstance(v, dict):
        return "a mapping" if v else "an empty mapping"
    if isinstance(v, list):
        return "a list" if v else "an empty list"
    if v is None:
        return "nothing (null)"
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v)


def fail(node: Node, expected: str) -> NoReturn:
    where = f" for {node.path}" if node.path else ""
    raise StackFileError(str(node.mark), f"expected {expected}{where}, got {show(node)}")


def fail_at(mark: Mark, message: str) -> NoReturn:
    raise StackFileError(str(mark), message)


def as_map(node: Node) -> Dict[str, Node]:
    if not node.is_map:
        fail(node, "a mapping")
    return node.value


def as_seq(node: Node) -> List[Node]:
    if not node.is_seq:
        fail(node, "a list")
    return node.value


def as_str(node: Node, what: str = "a string") -> str:
    if not isinstance(node.value, str) or node.value == "":
        fail(node, what)
    return node.value


def as_scalar_str(node: Node, what: str = "a string, number or boolean") -> str:
    """Environment and label values: Compose turns numbers and booleans into text."""
    v = node.value
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (str, int, float)):
        return str(v)
    fail(node, what)


_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def as_int(node: Node, lo: Optional[int] = None, hi: Optional[int] = None,
           what: str = "") -> int:
    v = node.value
    if node.interpolated and isinstance(v, str) and _INT.fullmatch(v.strip()):
        v = int(v.strip())
    if not what:
        what = "an integer" + _range(lo, hi)
    if isinstance(v, bool) or not isinstance(v, int):
        fail(node, what)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        fail(node, what)
    return v


def as_float(node: Node, lo: Optional[float] = None, hi: Optional[float] = None,
             what: str = "") -> float:
    v = node.value
    if isinstance(v, str) and _FLOAT.fullmatch(v.strip()):
        v = float(v.strip())   # Compose writes cpus as a string: "0.5"
    if not what:
        what = "a number" + _range(lo, hi)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
        fail(node, what)
    v = float(v)
    if (lo is not None and v < lo) or (hi is not None and v > hi) or v in (float("inf"), float("-inf")):
        fail(node, what)
    return v


def as_bool(node: Node) -> bool:
    v = node.value
    if node.interpolated and isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    if not isinstance(v, bool):
        fail(node, "true or false")
    return v


def as_choice(node: Node, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if not isinstance(node.value, str) or node.value not in choices:
        fail(node, "one of " + ", ".join(choices))
    return node.value


def _range(lo: Optional[float], hi: Optional[float]) -> str:
    if lo is not None and hi is not None:
        return f" from {lo} to {hi}"
    if lo is not None:
        return f" >= {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""


_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> Optional[float]:
    """Go ``time.ParseDuration`` syntax ("1m30s", "500ms", "1.5h") in seconds; None if invalid."""
    text = text.strip()
    if text in ("0", "+0"):
        return 0.0
    if not text:
        return None
    pos, total = 0, 0.0
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if not m:
            return None
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    return total


def as_duration(node: Node) -> float:
    """Seconds. A bare number counts as seconds."""
    v = node.value
    what = 'a duration like "10s", "1m30s" or "500ms"'
    if isinstance(v, bool):
        fail(node, what)
    if isinstance(v, (int, float)):
        if v < 0 or v != v or v == float("inf"):
            fail(node, what)
        return float(v)
    if not isinstance(v, str):
        fail(node, what)
    seconds = parse_duration(v)
    if seconds is None:
        fail(node, what)
    return seconds


_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([bkmgt]?)b?", re.IGNORECASE)
_SIZE_UNIT = {"": 1, "b": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4}


def as_bytes(node: Node) -> int:
    """Docker's size syntax ("512M", "1g", "64k", or a number of bytes), 1024-based."""
    v = node.value
    what = 'a size like "512M", "1G" or a number of bytes'
    if isinstance(v, bool):
        fail(node, what)
    if isinstance(v, int):
        if v <= 0:
            fail(node, what)
        return v
    if not isinstance(v, str):
        fail(node, what)
    m = _SIZE.fullmatch(v.strip())
    if not m:
        fail(node, what)
    size = int(float(m.group(1)) * _SIZE_UNIT[m.group(2).lower()])
    if size <= 0:
        fail(node, what)
    return size


def as_str_list(node: Node, what: str = "a list of strings") -> Tuple[str, ...]:
    if not node.is_seq:
        fail(node, what)
    return tuple(as_str(item, "a string") for item in node.value)


def check_keys(node: Node, supported: Iterable[str], ctx: Context,
               ignored: Mapping[str, str] = {}) -> Dict[str, Node]:
    """The mapping's entries; warns for each key that swarmlet does not use.

    ``ignored`` maps known-but-unsupported keys to a reason. Unknown keys get a
    "did you mean" hint. ``x-*`` extension keys are the user's own: no warning.
    """
    entries = as_map(node)
    supported = tuple(supported)
    for key in entries:
        if key in supported or key.startswith("x-"):
            continue
        mark = node.key_marks.get(key, node.mark)
        path = f"{node.path}.{key}" if node.path else key
        if key in ignored:
            ctx.warn(mark, f"unsupported key {key!r} ({path}) ignored: {ignored[key]}", key)
            continue
        hint = difflib.get_close_matches(key, supported, n=1)
        extra = f"; did you mean {hint[0]!r}?" if hint else ""
        ctx.warn(mark, f"unknown key {key!r} ({path}) ignored{extra}", key)
    return entries
