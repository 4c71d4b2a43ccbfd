"""Helpers for tests: the real CLI in a subprocess, and SSH into lab nodes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from typing import Dict, Optional


def interruptible() -> None:
    """``preexec_fn`` for a CLI the test stops with Ctrl-C (SIGINT).

    A test run started in the background by a non-interactive shell inherits SIGINT
    ignored, and Python keeps an ignored SIGINT ignored, so the child would never see
    the test's Ctrl-C. Give it the default disposition, as a terminal would.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class CLI:
    """The real CLI in a subprocess with its own environment."""

    def __init__(self, env: Dict[str, str]) -> None:
        self.env = env

    def __call__(self, *args: str, check: bool = False, timeout: float = 300,
                 input: Optional[str] = None) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "swarmlet.cli.main", *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout, input=input)
        if check and proc.returncode != 0:
            raise AssertionError(f"swarmlet {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def json(self, *args: str, timeout: float = 300):
        return json.loads(self(*args, "-o", "json", check=True, timeout=timeout).stdout)


def ssh(node: dict, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``command`` on a lab node over real SSH with the lab's key."""
    return subprocess.run(
        ["ssh", "-i", node["key"], "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5",
         node["ssh"], command],
        capture_output=True, text=True, timeout=timeout,
    )
