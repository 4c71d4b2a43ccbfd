"""The agent bundle, built for real (pip download from PyPI) for this machine's platform.

Unpacked, it must run the agent's imports on a bare python3 (``-S``: no
site-packages, so nothing installed here helps), and must not carry or pull in
click or asyncssh.
"""

from __future__ import annotations

import asyncio
import platform
import subprocess
import sys
import shutil
import tarfile

import pytest

from swarmlet.provision import plan
from swarmlet.provision.bundle import BundleCache, _pkg_dir
from swarmlet.provision.probes import HostFacts

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    lib, ver = platform.libc_ver()
    facts = HostFacts(system="Linux", arch=platform.machine(), libc=lib, libc_version=ver,
                      python=tuple(sys.version_info[:3]), python_state="ok")
    key, tags = plan.wheel_platforms("local", facts)
    py = f"{sys.version_info[0]}.{sys.version_info[1]}"

    async def build():
        cache = BundleCache(root)
        # Many hosts asking at once share one build.
        a, b = await asyncio.gather(cache.get(key, py, tags), cache.get(key, py, tags))
        assert a == b
        return a

    bundle = asyncio.run(build())
    out = tmp_path_factory.mktemp("unpacked")
    with tarfile.open(bundle.path) as tar:
        tar.extractall(out)
    return bundle, out


def test_bundle_contents(built):
    bundle, out = built
    assert (out / "swarmlet_agent" / "__main__.py").exists()
    for mod in ("exceptions.py", "models.py", "tlsutil.py", "rfc3339.py", "__init__.py", "lb", "gossip"):
        assert (out / "swarmlet" / "shipped" / mod).exists(), mod
    assert (out / "swarmlet" / "__init__.py").exists()
    for admin_only in ("cli", "provision", "pki.py", "cluster.py", "lab", "master", "stack"):
        assert not (out / "swarmlet" / admin_only).exists(), admin_only
    for dep in ("aiohttp", "msgpack", "docker", "cryptography", "yarl", "multidict"):
        assert (out / dep).is_dir(), dep
    assert not (out / "click").exists() and not (out / "asyncssh").exists()
    assert bundle.size < 30_000_000


def test_agent_imports_on_a_bare_python(built):
    _, out = built
    code = (
        "import sys, pkgutil, importlib\n"
        f"sys.path.insert(0, {str(out)!r})\n"
        "import swarmlet, swarmlet_agent\n"
        "# Every shipped module, including those the agent imports lazily (ingress, lb).\n"
        "for pkg in (swarmlet, swarmlet_agent):\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(m.name)\n"
        "import aiohttp, msgpack, docker, cryptography.hazmat.primitives.ciphers.aead\n"
        "assert 'click' not in sys.modules and 'asyncssh' not in sys.modules, 'admin-only import'\n"
        "assert all(not (getattr(m, '__file__', '') or '').startswith('/work') or m.__file__.startswith("
        f"{str(out)!r}) for m in list(sys.modules.values())), 'leaked import'\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-S", "-E", "-c", code], capture_output=True, text=True, timeout=60,
                       cwd="/")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "ok"


def test_bundle_id_follows_the_sources_and_reuses_the_wheels(built, tmp_path):
    bundle, _ = built
    # A snapshot of our sources, so other sessions editing the tree cannot race this test.
    agent = tmp_path / "agent"
    shutil.copytree(_pkg_dir("swarmlet_agent"), agent, ignore=shutil.ignore_patterns("__pycache__"))
    sw = tmp_path / "swarmlet"
    shutil.copytree(_pkg_dir("swarmlet"), sw, ignore=shutil.ignore_patterns("__pycache__"))
    root = bundle.path.parent.parent

    def build():
        return asyncio.run(BundleCache(root, agent, sw).get(bundle.platform, bundle.python, []))

    first, again = build(), build()
    assert again.id == first.id and again.path == first.path
    (agent / "daemon.py").write_text((agent / "daemon.py").read_text() + "\n# changed\n")
    changed = build()  # no platform tags given: only works if the wheels come from the cache
    assert changed.id != first.id and changed.path.exists()
