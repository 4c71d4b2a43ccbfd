"""Facts about a server: one POSIX sh script to run over SSH, and a pure parser.

As in pyinfra, a fact is a command plus a parser. ``PROBE_SCRIPT`` needs only
``/bin/sh`` (python3 may be missing, which is one of the facts). It prints
``key=value`` lines; ``parse`` turns them into ``HostFacts`` and never raises on
odd output (a missing key is simply unknown). Judging the facts (is python too
old? may we use Docker?) is ``plan``'s job, not this module's.

The Docker check talks to the daemon's socket directly with python3 (the agent
uses the socket through the docker SDK, not the CLI), which separates "not
installed", "daemon not running" and "permission denied".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

# Python snippet run by the probe: version, libc, and the Docker socket verdict.
_PY = r"""
import sys, platform, socket, json
print("python=%d.%d.%d" % sys.version_info[:3])
lib, ver = platform.libc_ver()
print("libc=%s %s" % (lib or "unknown", ver or ""))
s = socket.socket(socket.AF_UNIX)
s.settimeout(3)
try:
    s.connect("/var/run/docker.sock")
    s.sendall(b"GET /version HTTP/1.0\r\nHost: docker\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    body = data.split(b"\r\n\r\n", 1)[-1]
    try:
        print("docker=ok " + json.loads(body.decode()).get("Version", "?"))
    except ValueError:
        print("docker=error bad answer")
except FileNotFoundError:
    print("docker=nosocket")
except PermissionError:
    print("docker=denied")
except ConnectionRefusedError:
    print("docker=refused")
except OSError as e:
    print("docker=error %s" % (e.strerror or e))
"""

PROBE_SCRIPT = (
    "PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin\n"
    "echo \"uname=$(uname -s -m 2>/dev/null)\"\n"
    "if [ -r /etc/os-release ]; then . /etc/os-release; echo \"os=$ID $VERSION_ID\"; fi\n"
    "echo \"hostname=$(hostname 2>/dev/null || cat /etc/hostname 2>/dev/null)\"\n"
    "echo \"uid=$(id -u)\"\n"
    "echo \"user=$(id -un)\"\n"
    "echo \"groups=$(id -Gn)\"\n"
    "echo \"home=$HOME\"\n"
    "echo \"ssh_connection=$SSH_CONNECTION\"\n"
    "if [ \"$(id -u)\" != 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null;"
    " then echo sudo=yes; else echo sudo=no; fi\n"
    "echo \"pid1=$(cat /proc/1/comm 2>/dev/null)\"\n"
    "if [ -d /run/systemd/system ]; then echo systemd_booted=yes; fi\n"
    "if command -v dockerd >/dev/null 2>&1 || command -v docker >/dev/null 2>&1;"
    " then echo docker_installed=yes; else echo docker_installed=no; fi\n"
    "if [ -L /opt/swarmlet/current ]; then echo \"current=$(readlink /opt/swarmlet/current)\"; fi\n"
    "if [ -d /opt/swarmlet/bundles ]; then echo \"bundles=$(ls /opt/swarmlet/bundles 2>/dev/null | tr '\\n' ' ')\"; fi\n"
    "if [ -L \"$HOME/.swarmlet-agent/current\" ]; then echo \"user_current=$(readlink \"$HOME/.swarmlet-agent/current\")\"; fi\n"
    "if [ -d \"$HOME/.swarmlet-agent/bundles\" ]; then"
    " echo \"user_bundles=$(ls \"$HOME/.swarmlet-agent/bundles\" 2>/dev/null | tr '\\n' ' ')\"; fi\n"
    "echo \"free_kb=$(df -Pk /opt 2>/dev/null | awk 'NR==2 {print $4}')\"\n"
    "if command -v python3 >/dev/null 2>&1; then python3 -c '" + _PY.replace("'", "'\"'\"'") + "'"
    " 2>/dev/null || echo python=broken; else echo python=missing; fi\n"
)


@dataclass(frozen=True)
class HostFacts:
    """What the probe learned; ``None``/empty means unknown."""

    system: str = ""               # "Linux"
    arch: str = ""                 # "x86_64", "aarch64"
    os: str = ""                   # "debian 12"
    hostname: str = ""
    uid: Optional[int] = None
    user: str = ""
    groups: Tuple[str, ...] = ()
    home: str = ""
    sudo: bool = False
    pid1: str = ""
    systemd_booted: bool = False
    python: Optional[Tuple[int, int, int]] = None   # None: missing or broken
    python_state: str = "missing"  # ok | missing | broken
    libc: str = ""                 # "glibc", "musl", "unknown"
    libc_version: str = ""
    docker: str = "unknown"        # ok | nosocket | denied | refused | error | unknown
    docker_version: str = ""
    docker_detail: str = ""
    docker_installed: bool = False
    server_addr: str = ""          # the server's address on the SSH connection
    client_addr: str = ""          # how the server sees us (for --advertise-addr hints)
    current_bundle: str = ""
    bundles: Tuple[str, ...] = ()
    user_current_bundle: str = ""  # the same two, for an install under ~/.swarmlet-agent
    user_bundles: Tuple[str, ...] = ()
    free_kb: Optional[int] = None
    raw: Dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_root(self) -> bool:
        return self.uid == 0

    @property
    def systemd(self) -> bool:
        """systemd is PID 1 and booted (so a system unit is the right supervisor)."""
        return self.pid1 == "systemd" and self.systemd_booted

    @property
    def python_str(self) -> str:
        return ".".join(map(str, self.python)) if self.python else self.python_state


def parse(output: str) -> HostFacts:
    """``HostFacts`` from the probe's stdout. Tolerates junk lines (motd, warnings)."""
    kv: Dict[str, str] = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.isidentifier():
            kv[key] = value.strip()
    uname = kv.get("uname", "").split()
    py = kv.get("python", "missing")
    version: Optional[Tuple[int, int, int]] = None
    py_state = py if py in ("missing", "broken") else "ok"
    if py_state == "ok":
        try:
            parts = tuple(int(p) for p in py.split("."))
            version = (parts + (0, 0, 0))[:3]  # type: ignore[assignment]
        except ValueError:
            py_state = "broken"
    libc = kv.get("libc", "").split()
    docker = kv.get("docker", "unknown").split(None, 1)
    ssh = kv.get("ssh_connection", "").split()
    free = kv.get("free_kb", "")
    return HostFacts(
        system=uname[0] if uname else "",
        arch=uname[1] if len(uname) > 1 else "",
        os=kv.get("os", ""),
        hostname=kv.get("hostname", "").split(".")[0],
        uid=int(kv["uid"]) if kv.get("uid", "").isdigit() else None,
        user=kv.get("user", ""),
        groups=tuple(kv.get("groups", "").split()),
        home=kv.get("home", ""),
        sudo=kv.get("sudo") == "yes",
        pid1=kv.get("pid1", ""),
        systemd_booted=kv.get("systemd_booted") == "yes",
        python=version,
        python_state=py_state,
        libc=libc[0] if libc else "",
        libc_version=libc[1] if len(libc) > 1 else "",
        docker=docker[0] if docker else "unknown",
        docker_version=docker[1] if docker[:1] == ["ok"] and len(docker) > 1 else "",
        docker_detail=docker[1] if docker[:1] != ["ok"] and len(docker) > 1 else "",
        docker_installed=kv.get("docker_installed") == "yes",
        server_addr=ssh[2] if len(ssh) >= 3 else "",
        client_addr=ssh[0] if ssh else "",
        current_bundle=kv.get("current", "").rstrip("/").rsplit("/", 1)[-1],
        bundles=tuple(kv.get("bundles", "").split()),
        user_current_bundle=kv.get("user_current", "").rstrip("/").rsplit("/", 1)[-1],
        user_bundles=tuple(kv.get("user_bundles", "").split()),
        free_kb=int(free) if free.isdigit() else None,
        raw=kv,
    )
