"""The offline stack commands as a user runs them: no cluster, no master, no Docker."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from swarmlet.cli.main import cli

pytestmark = pytest.mark.unit

STACK = """\
services:
  web:
    image: swarmlet-hello:1
    ports: ["8080:8080", "8080:8080/udp"]
    container_name: web
    user: "1000"
  seed:
    image: swarmlet-hello:1
    profiles: [seed]
"""


@pytest.fixture
def stack_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SWARMLET_HOME", str(tmp_path / "no-cluster"))
    monkeypatch.delenv("COMPOSE_PROFILES", raising=False)
    d = tmp_path / "shop"
    d.mkdir()
    f = d / "stack.yml"
    f.write_text(STACK)
    return f


def test_dry_run_with_no_master_shows_every_service_as_create_and_says_so(stack_file):
    r = CliRunner().invoke(cli, ["deploy", "-f", str(stack_file), "--dry-run"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == f"Stack 'shop' from {stack_file}"
    assert lines[1].startswith("(no master reachable (no cluster in ") and \
        lines[1].endswith("): every service is shown as create)")
    assert "  + create     shop_web: swarmlet-hello:1; 1 replica; 8080:8080/tcp, 8080:8080/udp" in lines
    assert "  . skip       seed (profile seed not active; --profile seed deploys it)" in lines
    # Each warning once (it used to be printed on stderr and again in the plan).
    for w in ("UDP port 8080 is not load-balanced", "unsupported key 'container_name'"):
        assert r.output.count(w) == 1, r.output
    r = CliRunner().invoke(cli, ["deploy", "-f", str(stack_file), "--dry-run", "--profile", "seed"])
    assert "  + create     shop_seed: swarmlet-hello:1; 1 replica" in r.output


def test_a_real_deploy_still_needs_a_master(stack_file):
    r = CliRunner().invoke(cli, ["deploy", "-f", str(stack_file)])
    assert r.exit_code == 1 and r.output.startswith("error: no cluster in "), r.output


def test_stack_config_prints_the_normalized_stack_and_warns_once(stack_file):
    r = CliRunner().invoke(cli, ["stack", "config", "-f", str(stack_file), "-o", "json",
                                                 "--name", "store"])
    assert r.exit_code == 0, r.output + r.stderr
    doc = json.loads(r.stdout)
    assert list(doc["services"]) == ["store_web"]
    web = doc["services"]["store_web"]
    assert web["container"]["user"] == "1000" and web["labels"]["io.swarmlet.stack"] == "store"
    assert doc["skipped"] == {"seed": {"profiles": ["seed"]}}
    assert r.stderr.count("warning: ") == 2 and "container_name" in r.stderr
    r = CliRunner().invoke(cli, ["stack", "config", "-f", str(stack_file), "-q"])
    assert r.exit_code == 0 and r.stdout == ""
