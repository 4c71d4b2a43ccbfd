"""Pure provisioning decisions: from facts and options to checks, names and scripts.

Nothing here does I/O. Given the ``HostFacts`` of a server this module says
whether the agent can run there (a ``ProvisionError`` naming what is missing),
which wheel platforms to bundle for it, what to name the node, and the exact
shell scripts that install, start and remove the agent. ``ssh``/``join`` run
them. Keeping the scripts here makes them easy to read and to test.

Secrets travel inside a script fed on the remote shell's stdin (never on a
command line, which ``ps`` would show) and land 0600 under ``umask 077``.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import shlex
from dataclasses import dataclass
from typing import Dict, List, Mapping, Sequence, Tuple

from ..shipped.exceptions import ProvisionError, UsageError
from .probes import HostFacts

MIN_PYTHON = (3, 9)
MIN_GLIBC = (2, 17)
SERVICE = "swarmlet-agent.service"
_EOF = "SWARMLET_EOF_7f3a"


@dataclass(frozen=True)
class Target:
    """One ``USER@HOST[:PORT]`` from the command line."""

    user: str
    host: str
    port: int = 22

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}" + (f":{self.port}" if self.port != 22 else "")


def parse_target(text: str, default_user: str = "root", default_port: int = 22) -> Target:
    """``root@10.0.0.5``, ``admin@host:2222``, ``[fe80::1]:22``, ``host``."""
    user, at, rest = text.rpartition("@")
    if not at:
        user = default_user
    if not rest or not user:
        raise UsageError(f"bad host {text!r}: expected USER@HOST[:PORT]")
    port = default_port
    m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", rest)
    if m:
        host, p = m.group(1), m.group(2)
    elif rest.count(":") == 1:
        host, p = rest.split(":")
    else:
        host, p = rest, None
    if p is not None:
        if not p.isdigit() or not 0 < int(p) < 65536:
            raise UsageError(f"bad port in {text!r}")
        port = int(p)
    if not host:
        raise UsageError(f"bad host {text!r}: expected USER@HOST[:PORT]")
    return Target(user, host, port)


def parse_address(text: str) -> str:
    """An ``--address``: an IP address (normalized) or a host name; ``UsageError`` otherwise."""
    text = text.strip().strip("[]")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if not re.match(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\.?$", text) \
            or len(text) > 253:
        raise UsageError(f"bad --address {text!r}: give an IP address or a host name")
    return text


def parse_labels(items: Sequence[str]) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for item in items:
        k, eq, v = item.partition("=")
        if not eq or not re.fullmatch(r"[A-Za-z0-9_.\-/]+", k):
            raise UsageError(f"bad label {item!r}: expected key=value")
        out[k] = v
    return out


# --- checks ------------------------------------------------------------------------

def check(host: str, facts: HostFacts) -> None:
    """Raise ``ProvisionError`` with one clear line if the agent cannot run here."""
    if facts.system and facts.system != "Linux":
        raise ProvisionError(host, f"unsupported OS {facts.system} (swarmlet needs Linux)")
    if facts.python_state == "missing":
        raise ProvisionError(host, "no python3 found (the agent needs python3 3.9 or newer)",
                             hint="install python3 with the OS package manager")
    if facts.python_state == "broken" or facts.python is None:
        raise ProvisionError(host, "python3 is present but does not run")
    if facts.python[:2] < MIN_PYTHON:
        raise ProvisionError(host, f"python3 {facts.python_str} is too old (the agent needs 3.9 or newer)")
    priv = facts.is_root or facts.sudo
    if facts.docker == "nosocket":
        what = "the Docker daemon is not running" if facts.docker_installed else "Docker is not installed"
        raise ProvisionError(host, f"{what} (no /var/run/docker.sock)")
    if facts.docker == "refused":
        raise ProvisionError(host, "the Docker daemon is not running (its socket refuses connections)")
    if facts.docker == "denied" and not priv:
        raise ProvisionError(
            host, f"no permission to use Docker: {facts.user or 'the user'} is not root, "
                  "not in the docker group, and has no passwordless sudo")
    if facts.docker not in ("ok", "denied"):
        raise ProvisionError(host, f"cannot talk to the Docker daemon: {facts.docker_detail or facts.docker}")
    if not priv and not facts.home:
        raise ProvisionError(
            host, f"{facts.user or 'the user'} is neither root nor allowed passwordless sudo, "
                  "and has no home directory to install the agent in")
    wheel_platforms(host, facts)  # raises on an unsupported platform


def wheel_platforms(host: str, facts: HostFacts) -> Tuple[str, List[str]]:
    """(cache key, pip ``--platform`` tags) for the server's arch and libc."""
    arch = facts.arch
    if not arch:
        raise ProvisionError(host, "could not determine the CPU architecture")
    if facts.libc == "glibc":
        try:
            major, minor = (int(x) for x in facts.libc_version.split(".")[:2])
        except ValueError:
            raise ProvisionError(host, f"unrecognized glibc version {facts.libc_version!r}") from None
        if (major, minor) < MIN_GLIBC:
            raise ProvisionError(host, f"glibc {facts.libc_version} is too old (need 2.17 or newer)")
        tags = [f"manylinux_2_{m}_{arch}" for m in range(minor, 16, -1)] + [f"manylinux2014_{arch}"]
        key = f"manylinux_2_{minor}_{arch}"
    elif facts.libc == "musl" or (facts.libc in ("", "unknown") and "alpine" in facts.os):
        tags = [f"musllinux_1_2_{arch}", f"musllinux_1_1_{arch}"]
        key = f"musllinux_1_2_{arch}"
    else:
        raise ProvisionError(host, f"unsupported C library {facts.libc or 'unknown'} on {arch}")
    return key, tags


def python_tag(facts: HostFacts) -> str:
    assert facts.python is not None
    return f"{facts.python[0]}.{facts.python[1]}"


def choose_name(hostname: str, address: str, taken: Mapping[str, str]) -> str:
    """The node's name: its hostname, suffixed if another address already has it.

    ``taken`` maps existing names to addresses; a host re-joining keeps its name.
    """
    base = re.sub(r"[^A-Za-z0-9_.\-]", "-", hostname) or "node-" + address.replace(".", "-").replace(":", "-")
    for name, addr in taken.items():
        if addr == address:
            return name
    if base not in taken:
        return base
    i = 2
    while f"{base}-{i}" in taken:
        i += 1
    return f"{base}-{i}"


# --- layout and scripts --------------------------------------------------------------

@dataclass(frozen=True)
class Layout:
    """Where the agent lives on a server (docs/internal-apis.md, "Files on a server")."""

    root: str = "/opt/swarmlet"
    etc: str = "/etc/swarmlet"
    state_dir: str = "/var/lib/swarmlet"
    pidfile: str = "/run/swarmlet-agent.pid"
    logfile: str = "/var/log/swarmlet-agent.log"
    unit: str = "/etc/systemd/system/" + SERVICE

    def bundle_dir(self, bundle_id: str) -> str:
        return f"{self.root}/bundles/{bundle_id}"

    @property
    def current(self) -> str:
        return f"{self.root}/current"

    @property
    def config(self) -> str:
        return f"{self.etc}/agent.json"


LAYOUT = Layout()
USER_DIR = ".swarmlet-agent"


def user_layout(home: str) -> Layout:
    """Everything under ``~/.swarmlet-agent``: for a docker-group user without root or sudo."""
    root = f"{home.rstrip('/')}/{USER_DIR}"
    return Layout(root=root, etc=f"{root}/etc", state_dir=f"{root}/state", pidfile=f"{root}/agent.pid",
                  logfile=f"{root}/agent.log", unit=f"{root}/no-systemd-unit")


def privilege(facts: HostFacts) -> str:
    """How the agent is installed: ``root``, ``sudo`` (root through sudo -n) or ``user``."""
    return "root" if facts.is_root else ("sudo" if facts.sudo else "user")


def layout_for(facts: HostFacts) -> Layout:
    return LAYOUT if privilege(facts) != "user" else user_layout(facts.home)


def use_systemd(facts: HostFacts) -> bool:
    """A system unit needs systemd as PID 1 and root; a user install runs supervised."""
    return facts.systemd and privilege(facts) != "user"


def shell_prefix(facts_or_privilege) -> str:
    """How to run the install shell (root, through sudo, or as the user) reading stdin."""
    priv = facts_or_privilege if isinstance(facts_or_privilege, str) else privilege(facts_or_privilege)
    return "sudo -n sh -s" if priv == "sudo" else "sh -s"


def agent_config(
    *, name: str, address: str, cluster_id: str, labels: Mapping[str, str], seeds: Sequence[str],
    api_port: int, gossip_port: int, layout: Layout = LAYOUT,
) -> Dict[str, object]:
    return {
        "name": name, "address": address, "api_port": api_port, "gossip_port": gossip_port,
        "cluster_id": cluster_id, "labels": dict(labels), "seeds": list(seeds),
        "state_dir": layout.state_dir, "cert": f"{layout.etc}/agent.crt",
        "key": f"{layout.etc}/agent.key", "ca": f"{layout.etc}/ca.crt",
        "gossip_keys": f"{layout.etc}/gossip.keys",
    }


def unpack_script(bundle_id: str, layout: Layout = LAYOUT) -> str:
    """Reads the bundle tar.gz on stdin into its directory, atomically (tmp dir + rename)."""
    final = layout.bundle_dir(bundle_id)
    tmp = final + ".part"
    return (
        "set -e\numask 022\n"
        f"rm -rf {tmp}\nmkdir -p {tmp}\n"
        f"if ! tar -xzf - -C {tmp}; then rm -rf {tmp}; exit 3; fi\n"
        f"rm -rf {final}\nmv {tmp} {final}\n"
    )


def _write_file(path: str, content: str, mode: str = "600") -> str:
    if _EOF in content:
        raise ValueError("file content contains the heredoc delimiter")
    body = content if content.endswith("\n") else content + "\n"
    return f"cat > {path}.tmp <<'{_EOF}'\n{body}{_EOF}\nchmod {mode} {path}.tmp\nmv -f {path}.tmp {path}\n"


def systemd_unit(layout: Layout = LAYOUT) -> str:
    # ExecStart's python is filled in on the server (`command -v python3`).
    return (
        "[Unit]\nDescription=swarmlet agent\n"
        "After=network-online.target docker.service\nWants=network-online.target\n\n"
        "[Service]\n"
        f"Environment=PYTHONPATH={layout.current}\n"
        f"ExecStart=@PYTHON@ -m swarmlet_agent --config {layout.config}\n"
        "Restart=always\nRestartSec=1\n"
        # The agent's containers belong to dockerd, not to this unit: stopping
        # or restarting the agent never touches them.
        "KillMode=mixed\nTimeoutStopSec=15\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )


def supervisor_script(layout: Layout = LAYOUT) -> str:
    """A restart loop for servers without systemd (started with setsid)."""
    return (
        "#!/bin/sh\n# swarmlet agent supervisor: restarts the agent when it exits.\n"
        f"echo $$ > {layout.pidfile}\n"
        "child=\n"
        "trap '[ -n \"$child\" ] && kill -TERM $child 2>/dev/null; wait $child 2>/dev/null; exit 0' TERM INT\n"
        "while :; do\n"
        f"  PYTHONPATH={layout.current} @PYTHON@ -m swarmlet_agent --config {layout.config} "
        f">>{layout.logfile} 2>&1 &\n"
        "  child=$!\n  wait $child\n  sleep 1\ndone\n"
    )


def _stop_supervised(layout: Layout) -> str:
    pf = layout.pidfile
    return (
        f"if [ -f {pf} ] && kill -0 \"$(cat {pf})\" 2>/dev/null; then\n"
        f"  kill -TERM \"$(cat {pf})\"\n"
        f"  i=0; while kill -0 \"$(cat {pf})\" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.2; i=$((i+1)); done\n"
        f"fi\nrm -f {pf}\n"
    )


def install_script(
    *, bundle_id: str, config: Mapping[str, object], cert_pem: bytes, key_pem: bytes,
    ca_pem: bytes, gossip_keys_json: str, layout: Layout = LAYOUT, keep_bundles: int = 2,
) -> str:
    """Write certs, keys and config, and point ``current`` at the bundle.

    Idempotent: running it again rewrites the same files. Old bundles beyond
    the newest ``keep_bundles`` are pruned (the current one always survives).
    """
    return "".join([
        "set -e\numask 077\n",
        f"mkdir -p {layout.etc} {layout.state_dir} {layout.root}/bundles\n",
        f"chmod 700 {layout.etc} {layout.state_dir}\n",
        _write_file(f"{layout.etc}/agent.crt", cert_pem.decode()),
        _write_file(f"{layout.etc}/agent.key", key_pem.decode()),
        _write_file(f"{layout.etc}/ca.crt", ca_pem.decode()),
        _write_file(f"{layout.etc}/gossip.keys", gossip_keys_json),
        _write_file(layout.config, json.dumps(config, indent=2)),
        f"ln -sfn bundles/{bundle_id} {layout.current}.new\n",
        f"mv -Tf {layout.current}.new {layout.current}\n",
        f"cd {layout.root}/bundles && ls -1t | grep -v -x {shlex.quote(bundle_id)} | grep -v '\\.part$' "
        f"| tail -n +{keep_bundles} | xargs -r rm -rf\n",
    ])


def start_script(systemd: bool, layout: Layout = LAYOUT) -> str:
    """(Re)start the agent: a systemd unit where systemd is PID 1, else setsid + restart loop.

    Restarting never touches the agent's containers: they are dockerd's children.
    """
    parts = ["set -e\nPY=$(command -v python3)\n", _stop_supervised(layout)]
    if systemd:
        unit_b64 = base64.b64encode(systemd_unit(layout).encode()).decode()
        parts += [
            f"echo {unit_b64} | base64 -d | sed \"s#@PYTHON@#$PY#\" > {layout.unit}.tmp\n",
            # Reload systemd only when the unit changed: a re-join skips that cost.
            f"if cmp -s {layout.unit}.tmp {layout.unit}; then rm -f {layout.unit}.tmp; else\n"
            f"  chmod 644 {layout.unit}.tmp; mv -f {layout.unit}.tmp {layout.unit}; systemctl daemon-reload\nfi\n",
            f"systemctl is-enabled --quiet {SERVICE} || systemctl enable {SERVICE} >/dev/null 2>&1\n",
            f"systemctl restart {SERVICE}\n",
        ]
    else:
        sup = f"{layout.root}/supervise.sh"
        sup_b64 = base64.b64encode(supervisor_script(layout).encode()).decode()
        parts += [
            # A host that had the systemd unit (e.g. a forced switch): stop it first.
            f"if [ -f {layout.unit} ]; then systemctl disable --now {SERVICE} >/dev/null 2>&1 || true; "
            f"rm -f {layout.unit}; fi\n",
            f"echo {sup_b64} | base64 -d | sed \"s#@PYTHON@#$PY#\" > {sup}\nchmod 700 {sup}\n",
            f"setsid {sup} </dev/null >/dev/null 2>&1 &\n",
        ]
    return "".join(parts)


def uninstall_script(purge: bool, layout: Layout = LAYOUT) -> str:
    """Stop and remove the agent, its service and files; ``purge`` also its containers."""
    parts = [
        "set +e\n",
        f"if command -v systemctl >/dev/null 2>&1 && [ -f {layout.unit} ]; then\n"
        f"  systemctl disable --now {SERVICE} >/dev/null 2>&1\n"
        f"  rm -f {layout.unit}\n  systemctl daemon-reload\nfi\n",
        _stop_supervised(layout),
    ]
    if purge:
        parts.append(
            # Prefer the bundle's docker SDK (no docker CLI needed); fall back to the CLI.
            f"PYTHONPATH={layout.current} python3 -c 'import docker; c = docker.from_env(); "
            "[x.remove(force=True) for x in c.containers.list(all=True, "
            "filters={\"label\": \"io.swarmlet.managed=1\"})]' 2>/dev/null || "
            "{ command -v docker >/dev/null 2>&1 && "
            "docker ps -aq --filter label=io.swarmlet.managed=1 | xargs -r docker rm -f >/dev/null; }\n"
        )
    parts.append(f"rm -rf {layout.root} {layout.etc} {layout.state_dir} {layout.logfile}\n")
    parts.append("exit 0\n")
    return "".join(parts)
