"""An in-process asyncssh server standing in for a server, for join's error paths.

It is a real SSH server on 127.0.0.1 (real key exchange, host keys, public-key
auth). What it does with a command is up to the test: ``real_probe`` runs the
probe script in a real local ``sh`` with a chosen PATH (e.g. one without
python3); otherwise canned answers stand in for a host's tools.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import asyncssh
import pytest

from swarmlet import cluster as clusterlib
from swarmlet.provision.bundle import deps_dirname
from swarmlet.provision.probes import PROBE_SCRIPT

GOOD_PROBE = """\
uname=Linux x86_64
os=debian 12
hostname=fakehost
uid=0
user=root
groups=root
home=/root
ssh_connection=127.0.0.1 50000 127.0.0.1 22
sudo=no
pid1=systemd
systemd_booted=yes
docker_installed=yes
free_kb=1000
python=3.11.2
libc=glibc 2.36
docker=ok 24.0.7
"""


@dataclass
class FakeHost:
    port: int
    host_key: asyncssh.SSHKey
    commands: List[str] = field(default_factory=list)
    stdin_sizes: List[int] = field(default_factory=list)


Behaviour = Callable[[str, bytes], Tuple[int, str, str]]


def canned(probe: str = GOOD_PROBE, upload: Tuple[int, str] = (0, "")) -> Behaviour:
    """Answer the probe with ``probe``; the bundle upload with ``upload`` (status, stderr)."""
    def run(command: str, stdin: bytes) -> Tuple[int, str, str]:
        if command == PROBE_SCRIPT:
            return 0, probe, ""
        if "tar -xzf -" in command:
            return upload[0], "", upload[1]
        return 0, "", ""
    return run


def _make_server_class(authorized: asyncssh.SSHAuthorizedKeys):
    class _Server(asyncssh.SSHServer):
        def begin_auth(self, username: str) -> bool:
            return True

        def public_key_auth_supported(self) -> bool:
            return True

        def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
            return authorized.validate(key, "127.0.0.1", "127.0.0.1") is not None
    return _Server


@pytest.fixture
async def ssh_server_factory():
    servers = []

    async def start(client_key: asyncssh.SSHKey, behaviour: Behaviour,
                    host_key: Optional[asyncssh.SSHKey] = None, real_probe_path: Optional[str] = None) -> FakeHost:
        host_key = host_key or asyncssh.generate_private_key("ssh-ed25519")
        authorized = asyncssh.import_authorized_keys(client_key.export_public_key().decode())
        fake = FakeHost(0, host_key)

        async def handle(process: asyncssh.SSHServerProcess) -> None:
            command = process.command or ""
            data = await process.stdin.read() if ("tar -xzf -" in command or command.endswith("sh -s")) else b""
            fake.commands.append(command)
            fake.stdin_sizes.append(len(data))
            if command == PROBE_SCRIPT and real_probe_path is not None:
                proc = await asyncio.create_subprocess_exec(
                    "/bin/sh", "-c", command, env={"PATH": real_probe_path, "HOME": "/tmp"},
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                out, err = await proc.communicate()
                status, stdout, stderr = proc.returncode or 0, out.decode(), err.decode()
            else:
                status, stdout, stderr = behaviour(command, data)
            process.stdout.write(stdout.encode())
            process.stderr.write(stderr.encode())
            process.exit(status)

        server = await asyncssh.create_server(
            _make_server_class(authorized), "127.0.0.1", 0, server_host_keys=[host_key],
            process_factory=handle, encoding=None)
        servers.append(server)
        fake.port = server.sockets[0].getsockname()[1]
        return fake

    yield start
    for s in servers:
        s.close()
        await s.wait_closed()


@pytest.fixture
def client_key(tmp_path) -> Tuple[asyncssh.SSHKey, str]:
    key = asyncssh.generate_private_key("ssh-ed25519")
    path = tmp_path / "id_ed25519"
    key.write_private_key(str(path))
    os.chmod(path, 0o600)
    return key, str(path)


@pytest.fixture
def cluster(tmp_path) -> clusterlib.Cluster:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    return clusterlib.init(name="t", home=home)


@pytest.fixture
def prebuilt_deps(cluster) -> Path:
    """A dependency folder already in the bundle cache, so no test downloads wheels."""
    deps = cluster.bundles_dir / "manylinux_2_36_x86_64-py3.11" / deps_dirname()
    deps.mkdir(parents=True)
    (deps / "placeholder_dep").mkdir()
    (deps / "placeholder_dep" / "__init__.py").write_text("")
    (deps / ".wheels").write_text("placeholder_dep-1.0-py3-none-any.whl\n")
    return deps


@pytest.fixture
def path_without_python(tmp_path) -> str:
    """A PATH with the tools the probe uses, but no python3."""
    d = tmp_path / "bin"
    d.mkdir()
    for tool in ("uname", "id", "hostname", "cat", "df", "awk", "tr", "ls", "readlink"):
        found = shutil.which(tool)
        if found:
            (d / tool).symlink_to(found)
    return str(d)
