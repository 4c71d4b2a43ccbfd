"""`init`'s files and modes, and the install/uninstall scripts run by a real sh in a temp layout."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from swarmlet import cluster as clusterlib
from swarmlet.shipped import tlsutil
from swarmlet.shipped.exceptions import ConfigError
from swarmlet.provision import plan

pytestmark = pytest.mark.integration


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_init_makes_keys_0600_in_a_0700_home(tmp_path):
    home = tmp_path / "h"
    home.mkdir()
    c = clusterlib.init(name="prod", advertise_addr="10.0.0.1", home=home)
    assert mode(home) == 0o700
    for secret in ("ca.key", "master.key", "cli.key", "gossip.keys", "cluster.json"):
        assert mode(home / secret) == 0o600, secret
    meta = json.loads((home / "cluster.json").read_text())
    assert meta["name"] == "prod" and meta["advertise_addr"] == "10.0.0.1" and meta["id"] == c.id
    assert [len(k) for k in c.gossip_keys()] == [32]
    # The certificates chain to the CA and carry their roles: a TLS context loads them.
    assert c.client_ssl("cli") and c.client_ssl("master")
    tlsutil.server_context(str(home / "master.crt"), str(home / "master.key"), str(home / "ca.crt"))


def test_second_init_refuses_unless_forced(tmp_path):
    home = tmp_path / "h"
    home.mkdir()
    first = clusterlib.init(home=home)
    first_keys = first.gossip_keys()
    with pytest.raises(ConfigError) as ei:
        clusterlib.init(home=home)
    assert "already exists" in str(ei.value) and "--force" in ei.value.hint
    second = clusterlib.init(home=home, force=True)
    assert second.id != first.id and second.gossip_keys() != first_keys


def test_load_without_init_hints_at_init(tmp_path):
    with pytest.raises(ConfigError) as ei:
        clusterlib.load(tmp_path)
    assert "swarmlet init" in ei.value.hint


def test_registry_roundtrip(tmp_path):
    c = clusterlib.init(home=tmp_path)
    clusterlib.save_node(c, clusterlib.NodeRecord(name="a", address="10.0.0.1", ssh_host="10.0.0.1"))
    clusterlib.save_node(c, clusterlib.NodeRecord(name="a", address="10.0.0.9", ssh_host="h"))
    assert [(r.name, r.address) for r in clusterlib.nodes(c)] == [("a", "10.0.0.9")]
    assert clusterlib.find_node(c, "h").name == "a"
    assert clusterlib.forget_node(c, "a") and clusterlib.nodes(c) == []


def _layout(root: Path) -> plan.Layout:
    return plan.Layout(root=str(root / "opt"), etc=str(root / "etc"), state_dir=str(root / "state"),
                       pidfile=str(root / "run.pid"), logfile=str(root / "agent.log"),
                       unit=str(root / "unit.service"))


def _sh(script: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", script], input=stdin, capture_output=True, timeout=30)


def test_install_script_on_a_real_shell_is_idempotent(tmp_path):
    lay = _layout(tmp_path)
    os.makedirs(f"{lay.root}/bundles/b1")
    cfg = plan.agent_config(name="n1", address="10.0.0.5", cluster_id="c", labels={}, seeds=[],
                            api_port=7443, gossip_port=7946, layout=lay)
    script = plan.install_script(bundle_id="b1", config=cfg, cert_pem=b"CERT\n", key_pem=b"KEY\n",
                                 ca_pem=b"CA\n", gossip_keys_json='["k"]', layout=lay)
    for _ in range(2):
        r = subprocess.run(["sh", "-s"], input=script.encode(), capture_output=True, timeout=30)
        assert r.returncode == 0, r.stderr
    etc = Path(lay.etc)
    assert mode(etc) == 0o700 and mode(Path(lay.state_dir)) == 0o700
    for f in ("agent.crt", "agent.key", "ca.crt", "gossip.keys", "agent.json"):
        assert mode(etc / f) == 0o600, f
    assert (etc / "agent.key").read_text() == "KEY\n"
    assert json.loads((etc / "agent.json").read_text())["name"] == "n1"
    assert os.readlink(lay.current) == "bundles/b1"
    assert not list(etc.glob("*.tmp"))


def test_old_bundles_are_pruned_but_current_stays(tmp_path):
    lay = _layout(tmp_path)
    for i, b in enumerate(["b1", "b2", "b3"]):
        os.makedirs(f"{lay.root}/bundles/{b}")
        os.utime(f"{lay.root}/bundles/{b}", (1000 + i, 1000 + i))
    script = plan.install_script(bundle_id="b1", config={}, cert_pem=b"c", key_pem=b"k", ca_pem=b"a",
                                 gossip_keys_json="[]", layout=lay)
    assert subprocess.run(["sh", "-s"], input=script.encode(), capture_output=True).returncode == 0
    assert sorted(os.listdir(f"{lay.root}/bundles")) == ["b1", "b3"]


def test_unpack_failure_leaves_no_partial_bundle(tmp_path):
    lay = _layout(tmp_path)
    r = _sh(plan.unpack_script("bx", lay), b"this is not a tarball")
    assert r.returncode == 3
    assert not os.path.exists(f"{lay.root}/bundles/bx") and not os.path.exists(f"{lay.root}/bundles/bx.part")


def test_uninstall_removes_everything(tmp_path):
    lay = _layout(tmp_path)
    for d in (lay.etc, lay.state_dir, f"{lay.root}/bundles/b1"):
        os.makedirs(d)
    Path(lay.logfile).write_text("log")
    r = _sh(plan.uninstall_script(purge=False, layout=lay))
    assert r.returncode == 0
    assert not any(os.path.exists(p) for p in (lay.root, lay.etc, lay.state_dir, lay.logfile))
