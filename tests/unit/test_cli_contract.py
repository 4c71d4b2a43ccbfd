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
    "status", "lab up", "lab ls", "lab down", "lab load", "image push",
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


def test_every_contract_command_is_built_or_a_stub():
    built = [n for n in stubs.CONTRACT if not _is_stub(n)]
    assert len(built) + len(STUBS) == len(stubs.CONTRACT)
    assert "init" in built and "deploy" in built


@pytest.mark.parametrize("name", STUBS)
def test_stub_says_not_implemented_and_exits_2(name):
    result = CliRunner().invoke(cli, [*name.split(), "some-arg", "--some-flag"])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: swarmlet {name}: not implemented yet"


@pytest.mark.parametrize("name", READ_COMMANDS)
def test_read_commands_take_output_json(name):
    cmd = _resolve(name)
    if cmd.callback.__module__ == stubs.__name__:
        pytest.skip(f"{name} is not built yet")
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
