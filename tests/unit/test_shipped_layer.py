"""The shipped layer is visible and closed: the agent and ``swarmlet.shipped`` import only each
other, the standard library and the bundle's requirements, and the bundle ships exactly them."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import swarmlet
from swarmlet.provision.bundle import REQUIREMENTS, _sources

pytestmark = pytest.mark.unit

ROOT = Path(swarmlet.__file__).resolve().parent.parent
SHIPPED = ROOT / "swarmlet" / "shipped"
AGENT = ROOT / "agent"
# Import names of the bundle's requirements (and what they bring along).
THIRD_PARTY = {"aiohttp", "msgpack", "docker", "cryptography", "httptools", "requests", "uvloop",
               "yarl", "multidict"}


def _imports(path: Path, package: str):
    """Absolute module names imported by ``path`` (relative ones resolved against ``package``)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
                if node.module is None:
                    for a in node.names:
                        yield f"{mod}.{a.name}"
                    continue
                yield mod
            else:
                yield node.module


def _package_of(path: Path, root: Path, name: str) -> str:
    """The package a module sits in (for ``__init__.py``, the package itself)."""
    return ".".join([name, *path.relative_to(root).parts[:-1]])


def _check(root: Path, name: str):
    bad = []
    for py in sorted(root.rglob("*.py")):
        pkg = _package_of(py, root, name)
        for mod in _imports(py, pkg):
            top = mod.split(".")[0]
            if top in ("swarmlet",):
                if mod != "swarmlet" and not mod.startswith("swarmlet.shipped"):
                    bad.append(f"{py.relative_to(root)}: {mod}")
            elif top in ("swarmlet_agent", "__future__") or top in THIRD_PARTY:
                continue
            elif top not in sys.stdlib_module_names:
                bad.append(f"{py.relative_to(root)}: {mod}")
    return bad


def test_requirements_cover_the_third_party_imports():
    names = {r.split(">")[0].split("=")[0] for r in REQUIREMENTS}
    assert {"aiohttp", "msgpack", "docker", "httptools", "cryptography"} <= names


def test_agent_imports_only_the_shipped_layer():
    assert _check(AGENT, "swarmlet_agent") == []


def test_shipped_layer_imports_nothing_admin_side():
    assert _check(SHIPPED, "swarmlet.shipped") == []


def test_bundle_ships_the_agent_and_the_shipped_package_only():
    names = {arc for arc, _ in _sources(AGENT, ROOT / "swarmlet")}
    swarmlet_part = {n for n in names if n.startswith("swarmlet/")}
    expect = {"swarmlet/__init__.py"} | {
        f"swarmlet/shipped/{p.relative_to(SHIPPED)}" for p in SHIPPED.rglob("*.py")
        if "__pycache__" not in p.parts}
    assert expect <= swarmlet_part
    assert all(n == "swarmlet/__init__.py" or n.startswith("swarmlet/shipped/") for n in swarmlet_part)
    assert {f"swarmlet_agent/{p.name}" for p in AGENT.glob("*.py")} <= names


def test_the_check_catches_an_admin_import(tmp_path):
    (tmp_path / "x.py").write_text("from swarmlet.cli import main\nimport click\nfrom ..lab import nodes\n")
    bad = _check(tmp_path, "swarmlet.shipped")
    assert len(bad) == 3, bad
