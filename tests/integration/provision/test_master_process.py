"""`swarmlet master start|status|stop|logs` on a real master process (own home, free port)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def sw(env, *args, timeout=60):
    return subprocess.run([sys.executable, "-m", "swarmlet.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def env(tmp_path):
    e = dict(os.environ, SWARMLET_HOME=str(tmp_path / "home"))
    yield e
    sw(e, "master", "stop")  # never leave a master behind, even when a test fails


def test_init_starts_the_master_then_stop_status_logs(env, tmp_path):
    port = free_port()
    r = sw(env, "init", "--master-port", str(port))
    assert r.returncode == 0, r.stderr
    assert "master running (pid " in r.stdout and f"https://127.0.0.1:{port}" in r.stdout
    pid = int((tmp_path / "home" / "master" / "master.pid").read_text())
    assert os.path.exists(f"/proc/{pid}")
    # The master runs in its own session: closing this terminal does not kill it.
    assert os.getsid(pid) == pid

    r = sw(env, "master", "status")
    assert r.returncode == 0 and f"master running (pid {pid})" in r.stdout
    r = sw(env, "master", "start")  # already running: a no-op with the same pid
    assert r.returncode == 0 and f"(pid {pid})" in r.stdout
    r = sw(env, "master", "logs", "-n", "5")
    assert r.returncode == 0 and r.stdout.strip()

    r = sw(env, "master", "stop")
    assert r.returncode == 0 and f"master stopped (pid {pid})" in r.stdout
    assert not (tmp_path / "home" / "master" / "master.pid").exists()
    r = sw(env, "master", "status")
    assert r.returncode == 1 and "master not running" in r.stdout
    r = sw(env, "init")
    assert r.returncode == 1 and "already exists" in r.stderr and "--force" in r.stderr


def test_a_master_that_cannot_start_is_reported_with_its_log(env):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    try:
        r = sw(env, "init", "--master-port", str(port))
    finally:
        blocker.close()
    assert r.returncode == 1 and "Traceback" not in r.stderr.split("hint:")[0]
    assert r.stderr.startswith("error: the master exited with status")
    assert "hint: its log says:" in r.stderr
    r = sw(env, "master", "status")
    assert r.returncode == 1
