"""The probe parser: real probe output, junk lines, and every Docker verdict."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from swarmlet.provision.probes import PROBE_SCRIPT, parse

pytestmark = pytest.mark.unit

LAB_OUTPUT = """\
uname=Linux x86_64
os=debian 12
hostname=jointest-node-1
uid=0
user=root
groups=root
home=/root
ssh_connection=172.20.0.1 48154 172.20.0.2 22
sudo=no
pid1=systemd
systemd_booted=yes
docker_installed=yes
current=bundles/5b90fa8f3137101e
bundles=086b1e8ada7093d4 5b90fa8f3137101e
free_kb=82109704
python=3.11.2
libc=glibc 2.36
docker=ok 20.10.24+dfsg1
"""


def test_parses_a_lab_node():
    f = parse(LAB_OUTPUT)
    assert (f.system, f.arch, f.os, f.hostname) == ("Linux", "x86_64", "debian 12", "jointest-node-1")
    assert f.is_root and not f.sudo and f.systemd
    assert f.python == (3, 11, 2) and f.python_state == "ok"
    assert (f.libc, f.libc_version) == ("glibc", "2.36")
    assert (f.docker, f.docker_version) == ("ok", "20.10.24+dfsg1")
    assert (f.server_addr, f.client_addr) == ("172.20.0.2", "172.20.0.1")
    assert f.current_bundle == "5b90fa8f3137101e"
    assert f.bundles == ("086b1e8ada7093d4", "5b90fa8f3137101e")
    assert f.free_kb == 82109704


def test_motd_and_warnings_are_ignored():
    f = parse("Welcome to Ubuntu!\n * Docs: https://x\n" + LAB_OUTPUT + "bash: warning: x\n")
    assert f.hostname == "jointest-node-1" and f.python == (3, 11, 2)


def test_missing_python_leaves_docker_unknown():
    out = LAB_OUTPUT.split("python=")[0] + "python=missing\n"
    f = parse(out)
    assert f.python is None and f.python_state == "missing" and f.docker == "unknown"


@pytest.mark.parametrize("line,state,detail", [
    ("docker=nosocket", "nosocket", ""),
    ("docker=denied", "denied", ""),
    ("docker=refused", "refused", ""),
    ("docker=error Connection reset by peer", "error", "Connection reset by peer"),
])
def test_docker_verdicts(line, state, detail):
    f = parse(LAB_OUTPUT.replace("docker=ok 20.10.24+dfsg1", line))
    assert f.docker == state and f.docker_detail == detail and f.docker_version == ""


def test_non_root_with_sudo_and_no_systemd():
    out = LAB_OUTPUT.replace("uid=0", "uid=1000").replace("sudo=no", "sudo=yes") \
        .replace("pid1=systemd", "pid1=tini").replace("systemd_booted=yes\n", "")
    f = parse(out)
    assert not f.is_root and f.sudo and not f.systemd


def test_broken_python_version():
    f = parse(LAB_OUTPUT.replace("python=3.11.2", "python=3.x"))
    assert f.python is None and f.python_state == "broken"


def test_probe_script_needs_only_sh_and_never_sudo_prompts():
    assert "sudo -n" in PROBE_SCRIPT and "sudo true" not in PROBE_SCRIPT
    assert PROBE_SCRIPT.count("python3 -c") == 1


@given(st.text())
def test_parse_never_raises(text):
    parse(text)
