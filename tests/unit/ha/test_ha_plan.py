"""Pure parts of the HA control plane: the masters' choice, the etcd binary's architecture,
host checks, etcd's flags and the service scripts (issue 15)."""

from __future__ import annotations

import pytest

from swarmlet.ha import etcdconf, plan
from swarmlet.provision.probes import HostFacts
from swarmlet.shipped.exceptions import ProvisionError, UsageError

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("names, msg", [
    (["a", "b"], "give 3 or 5 nodes"), (["a", "b", "c", "d"], "not 4"),
    (["a", "a", "b"], "different node"), (["a", "b", "x"], "not a joined node: x"),
])
def test_the_choice_of_masters_is_checked_in_one_line(names, msg):
    with pytest.raises(UsageError, match=msg):
        plan.check_choice(names, ["a", "b", "c", "d", "e"])
    plan.check_choice(["a", "b", "c"], ["a", "b", "c"])
    plan.check_choice(["a", "b", "c", "d", "e"], ["a", "b", "c", "d", "e"])


def _elf(machine: int) -> bytes:
    return b"\x7fELF\x02\x01\x01" + b"\0" * 11 + machine.to_bytes(2, "little")


def test_the_etcd_binary_architecture_comes_from_its_elf_header():
    assert plan.elf_machine(_elf(0x3E)) == "x86_64"
    assert plan.elf_machine(_elf(0xB7)) == "aarch64"
    with pytest.raises(ValueError):
        plan.elf_machine(b"#!/bin/sh\n" + b"\0" * 20)


def test_a_host_of_another_architecture_or_too_old_a_python_is_refused():
    ok = HostFacts(arch="x86_64", python=(3, 11, 2), python_state="ok", uid=0)
    plan.check_host("n1", ok, "x86_64", "root")
    with pytest.raises(ProvisionError, match="the admin host's etcd is x86_64, this server is aarch64"):
        plan.check_host("n1", HostFacts(arch="aarch64", python=(3, 11, 2), python_state="ok"),
                        "x86_64", "root")
    with pytest.raises(ProvisionError, match="too old for a master"):
        plan.check_host("n1", HostFacts(arch="x86_64", python=(3, 9, 2), python_state="ok"),
                        "x86_64", "root")
    with pytest.raises(ProvisionError, match="root or passwordless sudo"):
        plan.check_host("n1", ok, "x86_64", "user")


def test_etcd_flags_are_tls_on_both_sides_and_allow_big_transactions():
    ms = [etcdconf.Member(f"n{i}", f"10.0.0.{i}") for i in range(3)]
    tls = etcdconf.TLSFiles("/ca", "/crt", "/key")
    argv = etcdconf.member_args(ms[1], ms, "/data", tls, "tok", binary="/opt/etcd")
    flags = dict(a[2:].split("=", 1) for a in argv[1:])
    assert argv[0] == "/opt/etcd"
    assert flags["client-cert-auth"] == flags["peer-client-cert-auth"] == "true"
    assert flags["listen-client-urls"] == "https://10.0.0.1:2379"
    assert flags["initial-cluster"] == ("n0=https://10.0.0.0:2380,n1=https://10.0.0.1:2380,"
                                        "n2=https://10.0.0.2:2380")
    assert int(flags["max-txn-ops"]) >= 10000
    with pytest.raises(ValueError):
        etcdconf.member_args(etcdconf.Member("x", "1.2.3.4"), ms, "/d", tls, "t")


def test_scripts_supervise_both_services_and_uninstall_removes_only_ha_files():
    argv = ["/opt/swarmlet/etcd/etcd", "--name=n1"]
    sd = plan.start_script([plan.ETCD_UNIT, plan.MASTER_UNIT], True, argv)
    assert "systemctl restart swarmlet-etcd.service" in sd and "systemctl restart swarmlet-master.service" in sd
    sup = plan.start_script([plan.MASTER_UNIT], False, argv)
    assert "setsid" in sup and "swarmlet-etcd" not in sup.replace("swarmlet-etcd.service", "")
    un = plan.uninstall_script()
    assert "/etc/swarmlet/master" in un and "/var/lib/swarmlet-etcd" in un
    assert "/etc/swarmlet " not in un and "swarmlet-agent" not in un       # the agent stays
    inst = plan.install_script(bundle_id="b1", files=[("ha.json", "{}", "600")], wipe_data=True)
    assert "rm -rf /var/lib/swarmlet-etcd/member" in inst and "master-bundles/b1" in inst
