"""Pure provisioning decisions: targets, checks with their messages, names, scripts."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given, strategies as st

from swarmlet.shipped.exceptions import ProvisionError, UsageError
from swarmlet.provision import plan
from swarmlet.provision.probes import HostFacts

pytestmark = pytest.mark.unit

GOOD = HostFacts(system="Linux", arch="x86_64", os="debian 12", hostname="n1", uid=0, user="root",
                 pid1="systemd", systemd_booted=True, python=(3, 11, 2), python_state="ok",
                 libc="glibc", libc_version="2.36", docker="ok", docker_version="24.0",
                 docker_installed=True, server_addr="10.0.0.5")


def facts(**kw) -> HostFacts:
    return dataclasses.replace(GOOD, **kw)


@pytest.mark.parametrize("text,want", [
    ("root@10.0.0.5", plan.Target("root", "10.0.0.5", 22)),
    ("admin@host.example:2222", plan.Target("admin", "host.example", 2222)),
    ("10.0.0.7", plan.Target("root", "10.0.0.7", 22)),
    ("ops@[fe80::1]:2200", plan.Target("ops", "fe80::1", 2200)),
    ("ops@fe80::1", plan.Target("ops", "fe80::1", 22)),
])
def test_parse_target(text, want):
    assert plan.parse_target(text) == want


@pytest.mark.parametrize("bad", ["root@", "@host", "root@host:0", "root@host:x", "root@host:70000"])
def test_parse_target_rejects(bad):
    with pytest.raises(UsageError):
        plan.parse_target(bad)


def test_target_str_roundtrip():
    for t in ("root@10.0.0.5", "a@h:2222", "a@[fe80::1]:2200"):
        assert str(plan.parse_target(t)) == t


def test_labels():
    assert plan.parse_labels(["zone=a", "disk=ssd", "empty="]) == {"zone": "a", "disk": "ssd", "empty": ""}
    with pytest.raises(UsageError):
        plan.parse_labels(["novalue"])


def test_good_host_passes():
    plan.check("h", GOOD)
    plan.check("h", facts(uid=1000, sudo=True, docker="denied"))


@pytest.mark.parametrize("kw,needle", [
    (dict(python=None, python_state="missing", docker="unknown"), "no python3 found"),
    (dict(python=(3, 8, 10)), "python3 3.8.10 is too old"),
    (dict(python=None, python_state="broken"), "does not run"),
    (dict(docker="nosocket", docker_installed=False), "Docker is not installed"),
    (dict(docker="nosocket"), "Docker daemon is not running"),
    (dict(docker="refused"), "Docker daemon is not running"),
    (dict(docker="denied", uid=1000, user="bob"), "no permission to use Docker"),
    (dict(docker="error", docker_detail="boom"), "cannot talk to the Docker daemon: boom"),
    (dict(uid=1000, user="bob", home=""), "neither root nor allowed passwordless sudo"),
    (dict(system="Darwin"), "unsupported OS"),
    (dict(libc_version="2.12"), "glibc 2.12 is too old"),
    (dict(libc="uclibc"), "unsupported C library"),
])
def test_checks_say_what_is_missing(kw, needle):
    with pytest.raises(ProvisionError) as ei:
        plan.check("root@h", facts(**kw))
    assert needle in str(ei.value) and str(ei.value).startswith("root@h: ")
    assert "\n" not in str(ei.value)


def test_python_39_is_enough():
    plan.check("h", facts(python=(3, 9, 0)))


def test_wheel_platforms_glibc_and_musl():
    key, tags = plan.wheel_platforms("h", GOOD)
    assert key == "manylinux_2_36_x86_64"
    assert tags[0] == "manylinux_2_36_x86_64" and "manylinux_2_17_x86_64" in tags
    assert tags[-1] == "manylinux2014_x86_64" and "manylinux_2_16_x86_64" not in tags
    key, tags = plan.wheel_platforms("h", facts(libc="musl", libc_version="", arch="aarch64", os="alpine 3.19"))
    assert key == "musllinux_1_2_aarch64" and "musllinux_1_1_aarch64" in tags


def test_choose_name():
    assert plan.choose_name("web1", "10.0.0.1", {}) == "web1"
    assert plan.choose_name("web1", "10.0.0.1", {"web1": "10.0.0.1"}) == "web1"
    assert plan.choose_name("web1", "10.0.0.2", {"web1": "10.0.0.1"}) == "web1-2"
    assert plan.choose_name("web1", "10.0.0.3", {"web1": "a", "web1-2": "b"}) == "web1-3"
    # A host that re-joins keeps whatever name it had.
    assert plan.choose_name("renamed", "10.0.0.2", {"web1-2": "10.0.0.2"}) == "web1-2"
    assert plan.choose_name("", "10.0.0.9", {}) == "node-10-0-0-9"


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "a-2"]), st.ip_addresses(v=4).map(str)),
                max_size=8))
def test_choose_name_never_collides(hosts):
    taken = {}
    for hostname, addr in hosts:
        name = plan.choose_name(hostname, addr, taken)
        assert taken.get(name, addr) == addr  # never steals another address's name
        taken[name] = addr


def _install(**kw) -> str:
    cfg = plan.agent_config(name="n1", address="10.0.0.5", cluster_id="c1", labels={"zone": "a"},
                            seeds=["10.0.0.6:7946"], api_port=7443, gossip_port=7946)
    return plan.install_script(bundle_id="abc123", config=cfg, cert_pem=b"CERT", key_pem=b"SECRETKEY",
                               ca_pem=b"CA", gossip_keys_json='["R09TU0lQ"]', **kw)


def test_agent_config_matches_the_contract():
    cfg = plan.agent_config(name="n1", address="10.0.0.5", cluster_id="c1", labels={}, seeds=[],
                            api_port=7443, gossip_port=7946)
    assert set(cfg) == {"name", "address", "api_port", "gossip_port", "cluster_id", "labels", "seeds",
                        "state_dir", "cert", "key", "ca", "gossip_keys"}
    assert cfg["key"] == "/etc/swarmlet/agent.key" and cfg["gossip_keys"] == "/etc/swarmlet/gossip.keys"


def test_install_script_writes_secrets_0600_under_umask():
    s = _install()
    assert s.startswith("set -e\numask 077\n")
    assert "chmod 600 /etc/swarmlet/agent.key.tmp" in s and "chmod 600 /etc/swarmlet/gossip.keys.tmp" in s
    # Secrets only inside quoted heredocs (fed on stdin), never in a command's arguments.
    key_line = [ln for ln in s.splitlines() if "SECRETKEY" in ln]
    assert key_line == ["SECRETKEY"]
    assert "mv -Tf /opt/swarmlet/current.new /opt/swarmlet/current" in s
    cfg_json = s.split("cat > /etc/swarmlet/agent.json.tmp <<'SWARMLET_EOF_7f3a'\n")[1].split("\nSWARMLET_EOF_7f3a")[0]
    assert json.loads(cfg_json)["seeds"] == ["10.0.0.6:7946"]


def test_heredoc_delimiter_in_content_is_refused():
    with pytest.raises(ValueError):
        plan.install_script(bundle_id="x", config={}, cert_pem=b"SWARMLET_EOF_7f3a", key_pem=b"k",
                            ca_pem=b"c", gossip_keys_json="[]")


def test_start_script_systemd_vs_supervised():
    s = plan.start_script(True)
    assert "systemctl restart swarmlet-agent.service" in s and "setsid" not in s
    u = plan.start_script(False)
    assert "setsid /opt/swarmlet/supervise.sh" in u and "systemctl restart" not in u
    assert "Restart=always" in plan.systemd_unit()
    sup = plan.supervisor_script()
    assert "echo $$ > /run/swarmlet-agent.pid" in sup and "while :" in sup


def test_uninstall_purge_only_when_asked():
    assert "io.swarmlet.managed=1" not in plan.uninstall_script(False)
    p = plan.uninstall_script(True)
    assert "io.swarmlet.managed=1" in p
    assert "rm -rf /opt/swarmlet /etc/swarmlet /var/lib/swarmlet" in p


def test_unpack_is_atomic():
    s = plan.unpack_script("abc")
    assert "tar -xzf - -C /opt/swarmlet/bundles/abc.part" in s
    assert s.index("mv /opt/swarmlet/bundles/abc.part /opt/swarmlet/bundles/abc") > s.index("tar -xzf")


def test_shell_prefix():
    assert plan.shell_prefix(GOOD) == "sh -s"
    assert plan.shell_prefix(facts(uid=1000, sudo=True)) == "sudo -n sh -s"
    assert plan.shell_prefix(facts(uid=1000, home="/home/ops")) == "sh -s"
    assert [plan.shell_prefix(p) for p in ("root", "sudo", "user")] == ["sh -s", "sudo -n sh -s", "sh -s"]


def test_docker_group_user_without_sudo_installs_under_home_supervised():
    f = facts(uid=1000, user="ops", groups=("ops", "docker"), home="/home/ops")
    plan.check("h", f)
    assert plan.privilege(f) == "user" and not plan.use_systemd(f)
    lay = plan.layout_for(f)
    assert lay.root == "/home/ops/.swarmlet-agent" and lay.pidfile.startswith(lay.root)
    assert all(p.startswith("/home/ops/") for p in (lay.etc, lay.state_dir, lay.logfile, lay.current))
    cfg = plan.agent_config(name="n", address="a", cluster_id="c", labels={}, seeds=[], api_port=7443,
                            gossip_port=7946, layout=lay)
    assert cfg["key"] == "/home/ops/.swarmlet-agent/etc/agent.key"
    s = plan.start_script(False, lay)
    assert "setsid /home/ops/.swarmlet-agent/supervise.sh" in s
    assert plan.layout_for(facts(uid=1000, sudo=True)) == plan.LAYOUT and plan.use_systemd(GOOD)
