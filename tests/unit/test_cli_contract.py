"""The CLI contract: every named command exists, has help with an example, and
a command not built yet says so and exits 2 with no fake output."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from swarmlet.cli import stubs
from swarmlet.cli.main import cli

pytestmark = pytest.mark.unit

FIXED_NAMES = [
    "init", "join", "leave", "nodes", "node drain", "node activate", "node rm",
    "run", "deploy", "services", "ps", "scale", "update", "rollback", "logs", "rm",
    "status", "lab up", "lab ls", "lab down", "lab load", "image push", "key rotate",
    "stack config", "stack ls", "stack rm",
]
READ_COMMANDS = ["nodes", "services", "ps", "lab ls"]


def _resolve(name: str):
    cmd = cli
    for part in name.split():
        cmd = cmd.commands[part]
    return cmd


@pytest.mark.parametrize("name", FIXED_NAMES)
def test_command_exists_with_help_and_example(name):
    cmd = _resolve(name)
    result = CliRunner().invoke(cli, [*name.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "Example: swarmlet" in result.output
    assert (cmd.help or "").strip()


def _is_stub(name: str) -> bool:
    return _resolve(name).callback.__module__ == stubs.__name__


STUBS = [n for n in sorted(stubs.CONTRACT) if _is_stub(n)]


# What each contract command does. A command that talks to the master: its arguments and
# the requests it must send (method, path, and body keys that must match). A command that
# works over SSH, on processes or streams from agents: the test that drives it for real.
SPEC = {"name": "web", "image": "img:1", "replicas": 2, "env": {}, "health": {"kind": "none"},
        "update": {"parallelism": 1, "monitor": 5.0, "failure_action": "rollback"}}
SENDS = {
    "run": (["run", "web", "--image", "img:1", "--replicas", "3"],
            [("POST", "/v1/services?create=1", {"name": "web", "image": "img:1", "replicas": 3})]),
    "services": (["services", "-o", "json"], [("GET", "/v1/services", None)]),
    "ps": (["ps", "web", "-o", "json"], [("GET", "/v1/tasks?service=web", None)]),
    "scale": (["scale", "web=5", "api=0"], [("PATCH", "/v1/services/web", {"replicas": 5}),
                                             ("PATCH", "/v1/services/api", {"replicas": 0})]),
    "rm": (["rm", "web"], [("DELETE", "/v1/services/web", None)]),
    "status": (["status", "-o", "json"], [("GET", "/v1/status", None)]),
    "node drain": (["node", "drain", "n1"], [("POST", "/v1/nodes/n1/drain", None)]),
    "node activate": (["node", "activate", "n1"], [("POST", "/v1/nodes/n1/activate", None)]),
    "rebalance": (["rebalance"], [("POST", "/v1/rebalance", None)]),
    "autoscale": (["autoscale", "web", "--min", "2", "--max", "6", "--cpu", "70", "--down-window", "15"],
                  [("PATCH", "/v1/services/web",
                    {"autoscale": {"min": 2, "max": 6, "cpu": 70.0, "down_window": 15.0}})]),
    "update": (["update", "web", "--image", "img:2", "--detach", "--no-push"],
               [("GET", "/v1/services/web", None), ("PATCH", "/v1/services/web", {"image": "img:2"})]),
    "rollback": (["rollback", "web", "--to", "1", "--detach"],
                 [("POST", "/v1/services/web/rollback", {"to": 1})]),
    "history": (["history", "web", "-o", "json"], [("GET", "/v1/services/web/revisions", None)]),
    "events": (["events", "-o", "json"], [("GET", "/v1/events?limit=100", None)]),
    "top": (["top", "--once"], [("GET", "/v1/overview", None)]),
    "dashboard": (["dashboard", "-o", "json"], [("GET", "/v1/dashboard", None)]),
    "deploy": (["deploy", "-f", "{stack}", "--dry-run"],
               [("POST", "/v1/stacks/shop", {"dry_run": True, "prune": False})]),
    # the value travels base64 in the body (b"pw\n" -> "cHcK"), never in the path
    "secret create": (["secret", "create", "db-pw", "{value}"],
                      [("POST", "/v1/secrets", {"name": "db-pw", "data": "cHcK"})]),
    "secret ls": (["secret", "ls", "-o", "json"], [("GET", "/v1/secrets", None)]),
    "secret inspect": (["secret", "inspect", "db-pw", "-o", "json"],
                       [("GET", "/v1/secrets/db-pw", None)]),
    "secret rm": (["secret", "rm", "db-pw"], [("DELETE", "/v1/secrets/db-pw", None)]),
    "secret rotate": (["secret", "rotate", "db-pw", "{value}", "--detach"],
                      [("POST", "/v1/secrets/db-pw/rotate", {"data": "cHcK"})]),
    "config create": (["config", "create", "app.conf", "{value}"],
                      [("POST", "/v1/configs", {"name": "app.conf", "data": "cHcK"})]),
    "config ls": (["config", "ls", "-o", "json"], [("GET", "/v1/configs", None)]),
    "config inspect": (["config", "inspect", "app.conf", "-o", "json"],
                       [("GET", "/v1/configs/app.conf", None)]),
    "config rm": (["config", "rm", "app.conf"], [("DELETE", "/v1/configs/app.conf", None)]),
    "config rotate": (["config", "rotate", "app.conf", "{value}", "--detach"],
                      [("POST", "/v1/configs/app.conf/rotate", {"data": "cHcK"})]),
    "cert ls": (["cert", "ls", "-o", "json"], [("GET", "/v1/certs", None)]),
    "cert add": (["cert", "add", "shop", "--cert", "{cert}", "--key", "{key}"],
                 [("PUT", "/v1/certs/shop", {"key": "{key-pem}"})]),
    "cert rm": (["cert", "rm", "shop"], [("DELETE", "/v1/certs/shop", None)]),
    "cert renew": (["cert", "renew", "shop.example.com"],
                   [("POST", "/v1/certs/shop.example.com/renew", None)]),
    "edge show": (["edge", "show", "-o", "json"], [("GET", "/v1/edge", None)]),
    "edge config": (["edge", "config", "--acme-directory", "letsencrypt-staging", "--https-port",
                     "8443"], [("PATCH", "/v1/edge", {"acme_directory": "letsencrypt-staging",
                                                       "https_port": 8443})]),
    "stack ls": (["stack", "ls", "-o", "json"], [("GET", "/v1/services", None)]),
}
DRIVEN = {   # command -> the test file that runs it against real sshd, processes or agents
    "init": "tests/integration/provision/test_master_process.py",
    "join": "tests/e2e/test_join.py", "leave": "tests/e2e/test_join.py",
    "nodes": "tests/e2e/test_join.py", "logs": "tests/e2e/test_observe.py",
    "image push": "tests/integration/test_image_push.py",
    "key rotate": "tests/chaos/test_key_rotate.py",
    "master start": "tests/integration/provision/test_master_process.py",
    "master stop": "tests/integration/provision/test_master_process.py",
    "master status": "tests/integration/provision/test_master_process.py",
    "master logs": "tests/integration/provision/test_master_process.py",
    "master ha": "tests/chaos/test_ha.py", "master single": "tests/chaos/test_ha.py",
    "stack config": "tests/unit/stack/test_stack_cli.py",     # offline: no master to fake
    "stack rm": "tests/e2e/test_stacks.py",
}
ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent.parent


def test_every_contract_command_has_a_stated_behaviour():
    """Each command of the contract is here, so a new one cannot go untested."""
    stated = set(SENDS) | set(DRIVEN) | {"node rm"} | set(STUBS)
    assert stated == set(stubs.CONTRACT), stated ^ set(stubs.CONTRACT)
    assert not set(STUBS) & (set(SENDS) | set(DRIVEN)), "a stub cannot be said to work"


@pytest.mark.parametrize("name", sorted(DRIVEN))
def test_driven_commands_are_run_by_their_test(name):
    text = (ROOT / DRIVEN[name]).read_text()
    assert ", ".join(f'"{w}"' for w in name.split()) in text, (name, DRIVEN[name])


def _answer(method: str, path: str):
    if path.startswith("/v1/services/web/revisions"):
        return [{"revision": 1, "created_at": 0.0, "spec": SPEC}]
    if path.startswith("/v1/services/") and method == "GET":
        return {"name": "web", "revision": 1, "spec": SPEC, "running": 2, "replicas": 2, "update": None}
    if path.startswith("/v1/services/") and method == "POST":
        return {"name": "web", "revision": 3, "to": 1, "changed": True}
    if path.startswith("/v1/services"):
        return [] if method == "GET" else {"name": "web", "revision": 2, "changed": True, "created": True}
    if path.startswith("/v1/tasks") or path.startswith("/v1/events"):
        return []
    if path == "/v1/status":
        return {"cluster": {}, "nodes": {"total": 0}, "services": 0, "tasks": {}}
    if path.startswith("/v1/nodes"):
        return {"name": "n1", "availability": "drain", "tasks": 0}
    if path == "/v1/rebalance":
        return {"moving": 0}
    if path == "/v1/overview":
        return {"ts": 0, "nodes": [], "services": [], "events": [], "cluster": {}}
    if path == "/v1/dashboard":
        return {"url": "https://127.0.0.1:1/", "token": "t", "login": "https://127.0.0.1:1/?token=t"}
    if path.startswith("/v1/secrets") or path.startswith("/v1/configs"):
        row = {"name": "x", "version": 2, "size": 3, "services": ["web"], "changed": True,
               "created_at": 0, "updated_at": 0, "versions": [], "removed": 1}
        return [row] if method == "GET" and path.count("/") == 2 else row
    if path.startswith("/v1/stacks/"):
        return {"text": "plan", "warnings": [], "has_changes": False, "create": [], "update": [],
                "remove": [], "applied": []}
    return {}


@pytest.mark.parametrize("name", sorted(SENDS))
def test_master_commands_send_what_they_say(name, monkeypatch, tmp_path):
    from swarmlet import cluster as clusterlib
    from swarmlet.cli import certs, deploy, secrets, services, stack as stack_cli, top
    monkeypatch.setenv("SWARMLET_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir(mode=0o700)
    clusterlib.init(name="contract", home=tmp_path / "home")
    sent = []

    def fake_call(method, path, body=None):
        sent.append((method, path, body))
        return _answer(method, path)
    for mod in (services, deploy, top, secrets, certs, stack_cli):
        monkeypatch.setattr(mod, "call", fake_call)
    stack = tmp_path / "stack.yml"
    stack.write_text("name: shop\nservices:\n  web:\n    image: img:1\n")
    value = tmp_path / "value.txt"
    value.write_bytes(b"pw\n")
    from swarmlet.webcerts import self_signed
    pem, key = self_signed(["shop.example.com"])
    (tmp_path / "c.pem").write_bytes(pem)
    (tmp_path / "k.pem").write_bytes(key)
    argv, want = SENDS[name]
    result = CliRunner().invoke(cli, [a.replace("{stack}", str(stack)).replace("{value}", str(value))
                                      .replace("{cert}", str(tmp_path / "c.pem"))
                                      .replace("{key}", str(tmp_path / "k.pem")) for a in argv])
    want = [(m, p, {k: (key.decode() if v == "{key-pem}" else v) for k, v in (b or {}).items()}
             if b is not None else None) for m, p, b in want]
    assert result.exit_code == 0, (result.output, sent)
    for method, path, keys in want:
        hits = [b for m, p, b in sent if (m, p) == (method, path)]
        assert hits, f"{name}: no {method} {path} in {[(m, p) for m, p, _ in sent]}"
        if keys is not None:
            assert any(isinstance(b, dict) and all(b.get(k) == v for k, v in keys.items())
                       for b in hits), (name, hits)


def test_node_rm_is_leave(monkeypatch):
    from swarmlet.cli import cluster as cluster_cmds
    seen = []
    monkeypatch.setattr(cluster_cmds, "_do_leave", lambda *a: seen.append(a))
    assert CliRunner().invoke(cli, ["node", "rm", "n1", "--purge"]).exit_code == 0
    assert CliRunner().invoke(cli, ["leave", "n1", "--purge"]).exit_code == 0
    assert seen[0] == seen[1] and seen[0][:2] == ("n1", True)


def test_every_command_is_built():
    assert STUBS == []


def test_a_stub_says_not_implemented_and_exits_2():
    # The mechanism stays for commands added to the contract before they are built.
    root = type(cli)("swarmlet")
    root.add_command(stubs.stub("key rotate"))
    result = CliRunner().invoke(root, ["rotate", "some-arg", "--some-flag"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: swarmlet key rotate: not implemented yet"


def test_key_rotate_rotates_the_gossip_key(monkeypatch, tmp_path):
    """What the command does: the flags, and a clean error without a cluster (the rotation
    itself is tests/integration/test_key_rotate.py and, under load, tests/chaos)."""
    cmd = _resolve("key rotate")
    assert cmd.callback.__module__ == "swarmlet.cli.keys"
    opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
    assert {"--sync", "--grace", "--node", "-o"} <= opts
    help_text = CliRunner().invoke(cli, ["key", "rotate", "--help"]).output
    assert "no downtime" in help_text and "drop the old" in help_text
    monkeypatch.setenv("SWARMLET_HOME", str(tmp_path))
    result = CliRunner().invoke(cli, ["key", "rotate"])
    assert result.exit_code == 1 and result.output.startswith("error: no cluster in")
    result = CliRunner().invoke(cli, ["key", "rotate", "--node", "n1"])
    assert result.exit_code == 1 and "--node works with --sync only" in result.output


@pytest.mark.parametrize("name", READ_COMMANDS)
def test_read_commands_take_output_json(name):
    cmd = _resolve(name)
    assert cmd.callback.__module__ != stubs.__name__, f"{name} is a read command: it must be built"
    opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
    assert "-o" in opts


def test_get_nodes_is_an_alias():
    assert cli.commands["get"].commands["nodes"] is cli.commands["nodes"]


def test_user_error_is_one_line_without_traceback(monkeypatch, tmp_path):
    monkeypatch.setenv("SWARMLET_HOME", str(tmp_path))
    result = CliRunner().invoke(cli, ["lab", "up", "--nodes", "0"])
    assert result.exit_code == 1
    assert result.output.strip() == "error: --nodes must be at least 1"
    assert "Traceback" not in result.output
