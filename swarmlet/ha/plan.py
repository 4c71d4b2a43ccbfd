"""Pure decisions of ``swarmlet master ha``: checks, the layout on a server, and its scripts.

How etcd gets onto a server (the issue's choice, argued): the admin host installs Debian's
``etcd-server`` (``scripts/bootstrap.sh``) and uploads that very binary over the SSH
connection ``join`` already trusts, after checking the server's architecture against the
binary's ELF header. No internet, no registry, no package manager on the server. (Where a
registry can be reached an etcd image would do too; we do not need one.)

Each master node gets, next to its agent (``swarmlet.provision.plan.LAYOUT``):

    /opt/swarmlet/etcd/etcd                      the uploaded binary (0755)
    /opt/swarmlet/master-bundles/<id>/           swarmlet + its dependencies (the master bundle)
    /opt/swarmlet/master-current                 -> master-bundles/<id>
    /etc/swarmlet/master/                        the master's home (0700): cluster.json, ca.crt,
                                                 master.crt/.key, gossip.keys, vault.key,
                                                 ha.json, etcd/
                                                 (ca.crt, member.crt/.key, client.crt/.key)
    /var/lib/swarmlet-etcd/                      etcd's data (0700)

and two services supervised the way the agent is: systemd units ``swarmlet-etcd.service``
and ``swarmlet-master.service`` where systemd is PID 1, else a setsid restart loop with a
pidfile under /run and a log under /var/log. No CA key is ever written to a server.
"""

from __future__ import annotations

import base64
import shlex
from dataclasses import dataclass
from typing import List, Sequence

from ..provision.plan import _write_file
from ..provision.probes import HostFacts
from ..shipped.exceptions import ProvisionError, UsageError

MIN_PYTHON = (3, 10)        # the etcd client (etcd3gw) needs 3.10
SIZES = (3, 5)
ETCD_UNIT = "swarmlet-etcd.service"
MASTER_UNIT = "swarmlet-master.service"

# ELF e_machine -> `uname -m`
ELF_MACHINES = {0x3E: "x86_64", 0xB7: "aarch64", 0x28: "armv7l", 0x03: "i686", 0xF3: "riscv64",
                0x15: "ppc64le", 0x16: "s390x"}


@dataclass(frozen=True)
class Layout:
    root: str = "/opt/swarmlet"
    home: str = "/etc/swarmlet/master"
    data: str = "/var/lib/swarmlet-etcd"
    etcd_pid: str = "/run/swarmlet-etcd.pid"
    master_pid: str = "/run/swarmlet-master.pid"
    etcd_log: str = "/var/log/swarmlet-etcd.log"
    master_log: str = "/var/log/swarmlet-master.log"
    units: str = "/etc/systemd/system"

    @property
    def etcd(self) -> str:
        return f"{self.root}/etcd/etcd"

    def bundle_dir(self, bundle_id: str) -> str:
        return f"{self.root}/master-bundles/{bundle_id}"

    @property
    def current(self) -> str:
        return f"{self.root}/master-current"


LAYOUT = Layout()


def check_choice(names: Sequence[str], joined: Sequence[str]) -> None:
    """3 or 5 distinct joined nodes (a one-line ``UsageError`` otherwise)."""
    if len(set(names)) != len(names):
        raise UsageError("each master must be a different node")
    if len(names) not in SIZES:
        raise UsageError(f"give 3 or 5 nodes for the masters, not {len(names)} "
                         "(an even number adds no fault tolerance; 1 is 'swarmlet init')")
    unknown = [n for n in names if n not in joined]
    if unknown:
        raise UsageError(f"not a joined node: {', '.join(unknown)} "
                         f"(joined: {', '.join(joined) or 'none'})")


def elf_machine(head: bytes) -> str:
    """The architecture of an ELF binary from its first 20 bytes."""
    if len(head) < 20 or head[:4] != b"\x7fELF":
        raise ValueError("not an ELF binary")
    little = head[5] == 1
    machine = int.from_bytes(head[18:20], "little" if little else "big")
    return ELF_MACHINES.get(machine, f"elf-machine-{machine:#x}")


def check_host(host: str, facts: HostFacts, etcd_arch: str, privilege: str) -> None:
    if privilege == "user":
        raise ProvisionError(host, "a master needs root or passwordless sudo "
                                   "(etcd and the master run as system services)")
    if facts.python is None or facts.python[:2] < MIN_PYTHON:
        have = facts.python_str if facts.python else "none"
        raise ProvisionError(host, f"python3 {have} is too old for a master (needs 3.10 or newer)")
    if facts.arch and facts.arch != etcd_arch:
        raise ProvisionError(
            host, f"the admin host's etcd is {etcd_arch}, this server is {facts.arch}",
            hint=f"put an etcd binary for {facts.arch} on the admin host's PATH "
                 f"(e.g. from Debian's etcd-server:{_debarch(facts.arch)})")
    if facts.free_kb is not None and facts.free_kb < 512 * 1024:
        raise ProvisionError(host, f"only {facts.free_kb // 1024} MB free: etcd needs at least "
                                   "512 MB for its data")


def _debarch(arch: str) -> str:
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "armhf"}.get(arch, arch)


def upload_script(dest: str, mode: str = "755") -> str:
    """Read stdin into ``dest`` atomically."""
    return (f"set -e\numask 022\nmkdir -p $(dirname {dest})\n"
            f"cat > {dest}.part\nchmod {mode} {dest}.part\nmv -f {dest}.part {dest}\n")


def unpack_script(bundle_id: str, layout: Layout = LAYOUT) -> str:
    final = layout.bundle_dir(bundle_id)
    tmp = final + ".part"
    return ("set -e\numask 022\n"
            f"if [ -d {final} ]; then cat >/dev/null; exit 0; fi\n"
            f"rm -rf {tmp}\nmkdir -p {tmp}\n"
            f"if ! tar -xzf - -C {tmp}; then rm -rf {tmp}; exit 3; fi\nmv {tmp} {final}\n")


def install_script(*, bundle_id: str, files: Sequence[tuple], wipe_data: bool,
                   layout: Layout = LAYOUT) -> str:
    """Write the master's home (``files``: (relative path, text, mode)) and point
    ``master-current`` at the bundle. ``wipe_data``: a fresh etcd member (a new cluster)."""
    parts = ["set -e\numask 077\n",
             f"mkdir -p {layout.home}/etcd {layout.data}\nchmod 700 {layout.home} {layout.data}\n"]
    if wipe_data:
        parts.append(f"rm -rf {layout.data}/member\n")
    for rel, text, mode in files:
        parts.append(_write_file(f"{layout.home}/{rel}", text, mode))
    parts.append(f"ln -sfn master-bundles/{bundle_id} {layout.current}.new\n"
                 f"mv -Tf {layout.current}.new {layout.current}\n")
    return "".join(parts)


def _unit(description: str, exec_start: str, env: str = "", after: str = "") -> str:
    return ("[Unit]\n" f"Description={description}\n"
            f"After=network-online.target{(' ' + after) if after else ''}\n"
            "Wants=network-online.target\n\n[Service]\n"
            + (f"Environment={env}\n" if env else "")
            + f"ExecStart={exec_start}\nRestart=always\nRestartSec=1\n"
            "LimitNOFILE=65536\nTimeoutStopSec=15\n\n[Install]\nWantedBy=multi-user.target\n")


def etcd_command(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def master_command(layout: Layout = LAYOUT) -> str:
    return f"@PYTHON@ -m swarmlet.master --home {layout.home}"


def _supervisor(command: str, pidfile: str, logfile: str, env: str = "") -> str:
    return ("#!/bin/sh\n# swarmlet supervisor: restarts the service when it exits.\n"
            f"echo $$ > {pidfile}\nchild=\n"
            "trap '[ -n \"$child\" ] && kill -TERM $child 2>/dev/null; wait $child 2>/dev/null; exit 0' TERM INT\n"
            "while :; do\n"
            f"  {env + ' ' if env else ''}{command} >>{logfile} 2>&1 &\n"
            "  child=$!\n  wait $child\n  sleep 1\ndone\n")


def _stop_supervised(pidfile: str) -> str:
    return (f"if [ -f {pidfile} ] && kill -0 \"$(cat {pidfile})\" 2>/dev/null; then\n"
            f"  kill -TERM \"$(cat {pidfile})\"\n"
            f"  i=0; while kill -0 \"$(cat {pidfile})\" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.2; i=$((i+1)); done\n"
            f"fi\nrm -f {pidfile}\n")


def _services(etcd_argv: Sequence[str], layout: Layout) -> List[tuple]:
    """(unit name, description, command, env, pidfile, logfile, after)."""
    env = f"PYTHONPATH={layout.current}"
    return [(ETCD_UNIT, "swarmlet etcd member", etcd_command(etcd_argv), "", layout.etcd_pid,
             layout.etcd_log, ""),
            (MASTER_UNIT, "swarmlet master", master_command(layout), env, layout.master_pid,
             layout.master_log, ETCD_UNIT)]


def start_script(which: Sequence[str], systemd: bool, etcd_argv: Sequence[str],
                 layout: Layout = LAYOUT) -> str:
    """(Re)start the named services (``ETCD_UNIT``, ``MASTER_UNIT``)."""
    parts = ["set -e\nPY=$(command -v python3)\n"]
    for unit, desc, cmd, env, pid, logf, after in _services(etcd_argv, layout):
        if unit not in which:
            continue
        parts.append(_stop_supervised(pid))
        if systemd:
            text = _unit(desc, cmd, env, after)
            b64 = base64.b64encode(text.encode()).decode()
            path = f"{layout.units}/{unit}"
            parts.append(f"echo {b64} | base64 -d | sed \"s#@PYTHON@#$PY#\" > {path}\n"
                         f"chmod 644 {path}\nsystemctl daemon-reload\n"
                         f"systemctl enable {unit} >/dev/null 2>&1\nsystemctl restart {unit}\n")
        else:
            sup = f"{layout.root}/{unit.replace('.service', '')}-supervise.sh"
            b64 = base64.b64encode(_supervisor(cmd, pid, logf, env).encode()).decode()
            parts.append(f"mkdir -p {layout.root}\n"
                         f"echo {b64} | base64 -d | sed \"s#@PYTHON@#$PY#\" > {sup}\nchmod 700 {sup}\n"
                         f"setsid {sup} </dev/null >/dev/null 2>&1 &\n")
    return "".join(parts)


def stop_script(which: Sequence[str], layout: Layout = LAYOUT) -> str:
    parts = ["set +e\n"]
    for unit, _, _, _, pid, _, _ in _services([], layout):
        if unit not in which:
            continue
        parts.append(f"if command -v systemctl >/dev/null 2>&1 && [ -f {layout.units}/{unit} ]; then\n"
                     f"  systemctl stop {unit} >/dev/null 2>&1\nfi\n")
        parts.append(_stop_supervised(pid))
    parts.append("exit 0\n")
    return "".join(parts)


def uninstall_script(layout: Layout = LAYOUT) -> str:
    """Stop both services and remove every HA file from the server (the agent stays)."""
    parts = [stop_script((ETCD_UNIT, MASTER_UNIT), layout).replace("exit 0\n", "")]
    for unit in (ETCD_UNIT, MASTER_UNIT):
        parts.append(f"if [ -f {layout.units}/{unit} ]; then systemctl disable {unit} >/dev/null 2>&1; "
                     f"rm -f {layout.units}/{unit}; fi\n")
    parts.append("command -v systemctl >/dev/null 2>&1 && systemctl daemon-reload >/dev/null 2>&1\n")
    parts.append(f"rm -rf {layout.home} {layout.data} {layout.root}/etcd {layout.root}/master-bundles "
                 f"{layout.current} {layout.root}/swarmlet-etcd-supervise.sh "
                 f"{layout.root}/swarmlet-master-supervise.sh {layout.etcd_log} {layout.master_log}\n")
    parts.append("exit 0\n")
    return "".join(parts)
