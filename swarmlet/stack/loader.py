"""YAML text -> a tree of ``Node`` values that remember where they came from.

Owns: parsing (PyYAML's pure-Python ``SafeLoader`` composer, so every node has
a line and column), duplicate keys (an error, as in Compose; PyYAML would keep
the last silently), merge keys (``<<: *base``), aliases (guarded against
recursion and "billion laughs" blow-up), and ``${VAR}`` interpolation of
string values. Every failure becomes a ``StackFileError`` at ``file:line:col``.

The pure-Python composer is used on purpose rather than ``CSafeLoader``: a
deeply nested document then ends in a ``RecursionError`` we can catch, instead
of a C stack overflow, and stack files are small enough for speed not to matter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Set

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from ..shipped.exceptions import StackFileError
from .interpolate import interpolate

MERGE_TAG = "tag:yaml.org,2002:merge"
STR_TAG = "tag:yaml.org,2002:str"
# Aliases let a tiny file expand exponentially; no real stack file comes near this.
MAX_NODES = 100_000
TOO_DEEP = "expected YAML nested at most a few hundred levels deep"


@dataclass(frozen=True)
class Mark:
    """A place in a file, 1-based like editors and compilers print it."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True, eq=False)
class Node:
    """One YAML value at one place in the document.

    ``value`` is ``Dict[str, Node]`` for a mapping (insertion-ordered), ``List[Node]``
    for a sequence, or a plain scalar (str, int, float, bool, None). ``path`` is
    the dotted path users see in messages (``services.web.deploy.replicas``).
    ``interpolated`` says a string came out of ``${VAR}`` substitution: such
    strings may stand for numbers and booleans, as in Compose.
    """

    value: Any
    mark: Mark
    path: str
    key_marks: Dict[str, Mark] = field(default_factory=dict)
    interpolated: bool = False

    @property
    def is_map(self) -> bool:
        return isinstance(self.value, dict)

    @property
    def is_seq(self) -> bool:
        return isinstance(self.value, list)

    def plain(self) -> Any:
        """The value with marks stripped (for extension fields and messages)."""
        if isinstance(self.value, dict):
            return {k: v.plain() for k, v in self.value.items()}
        if isinstance(self.value, list):
            return [v.plain() for v in self.value]
        return self.value


def child_path(parent: str, key: str) -> str:
    return f"{parent}.{key}" if parent else key


def parse_yaml(text: str, filename: str, env: Dict[str, str],
               warn: Callable[[Mark, str], None]) -> Optional[Node]:
    """Parse one YAML document into a ``Node`` tree, interpolating ``${VAR}``.

    Returns ``None`` for an empty document.
    """
    try:
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Mark(filename, mark.line + 1, mark.column + 1) if mark else Mark(filename, 1, 1)
        raise StackFileError(str(where), _yaml_message(exc)) from exc
    except yaml.reader.ReaderError as exc:
        line, col = _line_col(text, exc.position)
        raise StackFileError(f"{filename}:{line}:{col}",
                             "expected printable UTF-8 text, found a control character") from exc
    except yaml.YAMLError as exc:
        raise StackFileError(f"{filename}:1:1", f"expected valid YAML: {exc}") from exc
    except RecursionError as exc:
        raise StackFileError(f"{filename}:1:1", TOO_DEEP) from exc
    if root is None:
        return None
    try:
        return _Builder(filename, env, warn).build(root, "")
    except RecursionError as exc:
        raise StackFileError(f"{filename}:1:1", TOO_DEEP) from exc


def _yaml_message(exc: yaml.MarkedYAMLError) -> str:
    """PyYAML's problem, worded as what was expected (its own words often are)."""
    problem = (exc.problem or "").strip()
    context = (exc.context or "").strip()
    if problem.startswith("expected"):
        return f"{problem} (invalid YAML)"
    if problem.startswith("but ") and context.startswith("expected"):
        return f"{context}, {problem}"
    return f"expected valid YAML, but {problem or context or 'it is malformed'}"


def _yaml11_only(value: Any, text: str) -> bool:
    if isinstance(value, bool):
        return text.lower() not in ("true", "false")
    if isinstance(value, (int, float)):
        return ":" in text or "_" in text
    return False


def _line_col(text: str, position: int) -> tuple:
    before = text[:position]
    line = before.count("\n") + 1
    return line, position - (before.rfind("\n") + 1) + 1


class _Builder:
    """Turns composed PyYAML nodes into our ``Node`` tree."""

    def __init__(self, filename: str, env: Dict[str, str],
                 warn: Callable[[Mark, str], None]) -> None:
        self.filename = filename
        self.env = env
        self.warn = warn
        self.count = 0
        self.active: Set[int] = set()   # ids of nodes being built: a repeat is a cycle
        self.constructor = SafeConstructor()

    def mark(self, ynode: Any) -> Mark:
        m = ynode.start_mark
        return Mark(self.filename, m.line + 1, m.column + 1)

    def error(self, ynode: Any, message: str) -> StackFileError:
        return StackFileError(str(self.mark(ynode)), message)

    def build(self, ynode: Any, path: str) -> Node:
        self.count += 1
        if self.count > MAX_NODES:
            raise self.error(ynode, f"expected at most {MAX_NODES} values after expanding aliases")
        if id(ynode) in self.active:
            raise self.error(ynode, "expected an alias that does not contain itself")
        self.active.add(id(ynode))
        try:
            if isinstance(ynode, MappingNode):
                return self.mapping(ynode, path)
            if isinstance(ynode, SequenceNode):
                return Node([self.build(item, f"{path}[{i}]") for i, item in enumerate(ynode.value)],
                            self.mark(ynode), path)
            return self.scalar(ynode, path)
        finally:
            self.active.discard(id(ynode))

    def scalar(self, ynode: ScalarNode, path: str) -> Node:
        mark = self.mark(ynode)
        try:
            value = self.constructor.construct_object(ynode, deep=True)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
            where = f" for {path}" if path else ""
            if not ynode.tag.startswith("tag:yaml.org,2002:"):
                raise self.error(ynode, f"expected plain YAML{where}, without the tag {ynode.tag!r}") from exc
            kind = ynode.tag.rsplit(":", 1)[-1]
            raise self.error(ynode, f"expected a valid !!{kind} value{where}, got {ynode.value!r}") from exc
        if isinstance(value, (bytes, bytearray)) or not isinstance(
                value, (str, int, float, bool, type(None))):
            # Timestamps, binary, sets…: Compose has no use for them; keep the text.
            value = ynode.value
        elif ynode.style is None and _yaml11_only(value, ynode.value):
            # Compose reads YAML 1.2, where `80:80` and `yes` are strings, not
            # the base-60 number 4880 and True that YAML 1.1 (PyYAML) makes of them.
            value = ynode.value
        if isinstance(value, str) and "$" in value:
            result = interpolate(value, self.env, mark, lambda m: self.warn(mark, m))
            return Node(result, mark, path, interpolated=True)
        return Node(value, mark, path)

    def mapping(self, ynode: MappingNode, path: str) -> Node:
        own: Dict[str, Node] = {}
        marks: Dict[str, Mark] = {}
        merged: List[Node] = []
        for knode, vnode in ynode.value:
            if knode.tag == MERGE_TAG:
                merged.extend(self.merge_sources(vnode, path))
                continue
            key = self.key(knode)
            if key in own:
                first = marks[key]
                raise self.error(knode, f"expected each key once, but {key!r} repeats "
                                        f"(first at line {first.line})")
            marks[key] = self.mark(knode)
            own[key] = self.build(vnode, child_path(path, key))
        # Merge keys: explicit keys win, then earlier merge sources win.
        value: Dict[str, Node] = {}
        for src in merged:
            for k, v in src.value.items():
                if k not in value and k not in own:
                    value[k] = v
                    marks.setdefault(k, src.key_marks.get(k, src.mark))
        value.update(own)
        return Node(value, self.mark(ynode), path, key_marks=marks)

    def merge_sources(self, vnode: Any, path: str) -> List[Node]:
        items = vnode.value if isinstance(vnode, SequenceNode) else [vnode]
        out = []
        for item in items:
            if not isinstance(item, MappingNode):
                raise self.error(item, "expected a mapping (or a list of mappings) to merge with <<")
            out.append(self.build(item, path))
        return out

    def key(self, knode: Any) -> str:
        if not isinstance(knode, ScalarNode):
            raise self.error(knode, "expected a plain string as a mapping key")
        try:
            value = self.constructor.construct_object(knode) if knode.tag != STR_TAG else knode.value
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
            raise self.error(knode, "expected a plain string as a mapping key") from exc
        if not isinstance(value, str):
            raise self.error(knode, f"expected a string key, got {knode.value!r} "
                                    f"(quote it if you mean the text)")
        return value
