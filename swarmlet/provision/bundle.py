"""The agent bundle: our code plus dependency wheels for one server platform, as one tar.gz.

A server needs nothing but python3 and Docker: no pip, no venv, no internet.
So the admin host downloads binary wheels of the agent's dependencies for the
server's platform and Python (``pip download --only-binary=:all: --platform ...
--python-version X --implementation cp``), unzips them into one folder with
``swarmlet_agent`` and the shipped layer (``swarmlet/__init__.py`` and the
``swarmlet.shipped`` package), and tars it. On the
server ``PYTHONPATH=<bundle dir>`` is all the agent needs (wheels are zip
files of importable trees; none of these needs install-time hooks).

Cache layout under ``$SWARMLET_HOME/bundles/``:
``<platform>-py<X.Y>/deps-<hash of requirements>/`` (unzipped wheels, downloaded once per platform and
Python) and ``<platform>-py<X.Y>/<id>.tar.gz`` where ``id`` hashes the wheel
list and our sources, so a code change makes a new bundle without a new
download. ``BundleCache`` builds each key once even when many hosts ask at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from ..shipped.exceptions import BundleError

# What the shipped code imports from PyPI (the load balancer needs httptools). ``requirements()``
# adds whatever else swarmlet's own metadata declares, minus the admin-only packages.
# uvloop: the ingress workers run on it when it imports (about twice the proxy's throughput;
# the workers fall back to asyncio's loop where no wheel fits the server).
REQUIREMENTS = ("aiohttp>=3.9", "msgpack>=1.0", "docker>=7.0", "cryptography>=41", "httptools>=0.6",
                'uvloop>=0.17; sys_platform == "linux"')
ADMIN_ONLY = {"asyncssh", "click", "pyyaml", "etcd3gw", "acme"}   # etcd3gw, acme: masters only
PIP_TIMEOUT = 600.0
# Bumped when the way wheels are prepared changes (v2: extension modules stripped).
CACHE_FORMAT = "v2"


@dataclass(frozen=True)
class Bundle:
    id: str
    path: Path          # the tar.gz
    size: int
    platform: str
    python: str


# The HA master bundle (``master ha``): the agent's requirements plus the etcd client.
MASTER_EXTRA = ("etcd3gw>=2.4", "PyYAML>=6.0",  # the master reads stack plans (swarmlet.stack)
                "acme>=2.0")      # the HA leader asks the ACME CA (master/acmeclient.py)
AGENT, MASTER = "agent", "master"


def requirements(kind: str = AGENT) -> List[str]:
    """``REQUIREMENTS`` plus swarmlet's declared install requirements that agents may need
    (``kind="master"``: plus what an HA master needs)."""
    base = REQUIREMENTS + (MASTER_EXTRA if kind == MASTER else ())
    out = {re.split(r"[<>=!~ ;\[]", r, 1)[0].lower(): r for r in base}
    try:
        from importlib.metadata import PackageNotFoundError, requires
        declared = requires("swarmlet") or []
    except (ImportError, PackageNotFoundError):
        declared = []
    for req in declared:
        if "extra ==" in req:
            continue
        name = re.split(r"[<>=!~ ;\[]", req, 1)[0].lower()
        if name not in ADMIN_ONLY and name not in out:
            out[name] = req.split(";")[0].strip()
    return sorted(out.values())


def deps_dirname(kind: str = AGENT) -> str:
    """The cache folder of unzipped wheels: named by the requirement set, so adding one re-downloads."""
    text = "\n".join([CACHE_FORMAT, *requirements(kind)])
    return "deps-" + hashlib.sha256(text.encode()).hexdigest()[:12]


def _pkg_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise BundleError(f"cannot find the {name} package to bundle")
    return Path(list(spec.submodule_search_locations)[0])


def _iter_py(root: Path) -> Iterable[Path]:
    for p in sorted(root.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts and p.suffix in (".py", ".json", ".txt"):
            yield p


def _sources(agent_dir: Path, swarmlet_dir: Path) -> List[Tuple[str, Path]]:
    """(archive name, file) pairs for our own code: the agent as ``swarmlet_agent``, and of
    ``swarmlet`` its ``__init__`` and the whole ``shipped`` package (see its docstring)."""
    out: List[Tuple[str, Path]] = []
    for p in _iter_py(agent_dir):
        out.append((f"swarmlet_agent/{p.relative_to(agent_dir)}", p))
    shipped = swarmlet_dir / "shipped"
    if not (shipped / "__init__.py").exists():
        raise BundleError(f"cannot find the shipped layer at {shipped}")
    out.append(("swarmlet/__init__.py", swarmlet_dir / "__init__.py"))
    for p in _iter_py(shipped):
        out.append((f"swarmlet/{p.relative_to(swarmlet_dir)}", p))
    return out


def _master_sources(agent_dir: Path, swarmlet_dir: Path) -> List[Tuple[str, Path]]:
    """The HA master bundle: the agent's files plus the whole ``swarmlet`` package (with the
    dashboard's static files), which ``python3 -m swarmlet.master`` runs from."""
    out = [(arc, p) for arc, p in _sources(agent_dir, swarmlet_dir)
           if not arc.startswith("swarmlet/")]
    for p in sorted(swarmlet_dir.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc",):
            out.append((f"swarmlet/{p.relative_to(swarmlet_dir)}", p))
    return out


async def _pip_download(dest: Path, python: str, platforms: Sequence[str],
                        kind: str = AGENT) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet",
           "--only-binary=:all:", "--implementation", "cp", "--python-version", python,
           "--dest", str(dest)]
    for tag in platforms:
        cmd += ["--platform", tag]
    cmd += requirements(kind)
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), PIP_TIMEOUT)
    except asyncio.TimeoutError:
        proc.kill()
        raise BundleError(f"pip download timed out after {PIP_TIMEOUT:.0f}s") from None
    if proc.returncode != 0:
        tail = out.decode(errors="replace").strip().splitlines()[-3:]
        raise BundleError(f"pip download for {platforms[0]} py{python} failed: {' | '.join(tail)}")


def _unzip_wheels(wheels_dir: Path, deps: Path) -> List[str]:
    names = sorted(p.name for p in wheels_dir.glob("*.whl"))
    if not names:
        raise BundleError("pip download produced no wheels")
    for name in names:
        with zipfile.ZipFile(wheels_dir / name) as zf:
            zf.extractall(deps)
    _strip(deps)
    (deps / ".wheels").write_text("\n".join(names) + "\n")
    return names


def _strip(deps: Path) -> None:
    """Drop debug symbols from extension modules: 33 -> 21 MB unpacked, 9.9 -> 6.4 MB gzipped
    (x86_64 glibc bundle), so every server unpacks and receives less. Best effort: without
    ``strip``, or for a foreign architecture it cannot read, the file stays as it was."""
    tool = shutil.which("strip")
    if tool is None:
        return
    for so in deps.rglob("*.so"):
        subprocess.run([tool, "--strip-unneeded", str(so)], capture_output=True, check=False)


def _make_tar(dest: Path, deps: Path, sources: List[Tuple[str, Path]]) -> None:
    tmp = dest.with_suffix(".part")
    with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
        for p in sorted(deps.rglob("*")):
            rel = p.relative_to(deps)
            if p.is_file() and "__pycache__" not in rel.parts and rel.name != ".wheels":
                tar.add(p, arcname=str(rel), recursive=False)
        for arc, p in sources:
            tar.add(p, arcname=arc, recursive=False)
    os.replace(tmp, dest)


class BundleCache:
    """Builds and caches bundles under ``root``; one build per key at a time."""

    def __init__(self, root: Path, agent_dir: Optional[Path] = None,
                 swarmlet_dir: Optional[Path] = None, kind: str = AGENT) -> None:
        """``kind``: ``"agent"`` (what ``join`` ships) or ``"master"`` (``master ha``: the whole
        swarmlet package and the etcd client, cached under ``master-<platform>-py<X.Y>``)."""
        self.root = root
        self.kind = kind
        self._agent_dir = agent_dir
        self._swarmlet_dir = swarmlet_dir
        self._tasks: Dict[Tuple[str, str], "asyncio.Future[Bundle]"] = {}

    async def get(self, platform: str, python: str, tags: Sequence[str]) -> Bundle:
        key = (platform, python)
        fut = self._tasks.get(key)
        if fut is None:
            fut = self._tasks[key] = asyncio.ensure_future(self._build(platform, python, tags))
        return await asyncio.shield(fut)

    async def _deps(self, base: Path, python: str, tags: Sequence[str]) -> Path:
        deps = base / deps_dirname(self.kind)
        if (deps / ".wheels").exists():
            return deps
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=base, prefix=".dl-") as tmp:
            await _pip_download(Path(tmp) / "wheels", python, tags, self.kind)
            staged = Path(tmp) / "deps"
            await asyncio.to_thread(_unzip_wheels, Path(tmp) / "wheels", staged)
            if deps.exists():
                shutil.rmtree(deps)
            os.replace(staged, deps)
        for old in base.glob("deps*"):  # an earlier requirement set
            if old != deps and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        return deps

    async def _build(self, platform: str, python: str, tags: Sequence[str]) -> Bundle:
        swarmlet_dir = self._swarmlet_dir or _pkg_dir("swarmlet")
        # In a source checkout, ship the agent that sits next to this very swarmlet package
        # (another checkout may be the one installed as swarmlet_agent).
        sibling = swarmlet_dir.parent / "agent"
        agent_dir = self._agent_dir or (sibling if (sibling / "__main__.py").exists()
                                        else _pkg_dir("swarmlet_agent"))
        prefix = "master-" if self.kind == MASTER else ""
        base = self.root / f"{prefix}{platform}-py{python}"
        deps = await self._deps(base, python, tags)
        sources = (_master_sources if self.kind == MASTER else _sources)(agent_dir, swarmlet_dir)
        # The wheel cache folder name covers the requirement set and how wheels were prepared.
        h = hashlib.sha256(deps.name.encode() + b"\0" + (deps / ".wheels").read_bytes())
        for arc, p in sources:
            h.update(arc.encode() + b"\0" + p.read_bytes() + b"\0")
        bid = h.hexdigest()[:16]
        dest = base / f"{bid}.tar.gz"
        if not dest.exists():
            await asyncio.to_thread(_make_tar, dest, deps, sources)
            for old in base.glob("*.tar.gz"):  # one bundle per platform is enough
                if old != dest:
                    old.unlink(missing_ok=True)
        return Bundle(bid, dest, dest.stat().st_size, platform, python)


def read_bytes(bundle: Bundle) -> bytes:
    try:
        return bundle.path.read_bytes()
    except OSError as exc:
        raise BundleError(f"cannot read bundle {bundle.path}: {exc.strerror}") from exc
