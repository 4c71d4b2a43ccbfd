"""Drive two real CLI clients (``swarmlet scale`` and ``swarmlet update``) against HA masters
while the leader is killed every ``kill_every`` seconds; record the history (``history.Op``).

Used by ``tests/integration/ha/test_ha_history.py`` (short, in CI) and ``bench/ha/run``
(2 minutes, kills every 20 s, on the lab or loopback). Bounded in time and count.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from tests.tools.history import FAIL, OK, UNKNOWN, Op

SCALE_VALUES = (3, 4, 5, 6, 7)    # a 5-cycle: a stale repeat shows as a backward step


def classify(proc: subprocess.CompletedProcess) -> Tuple[str, str]:
    if proc.returncode == 0:
        return OK, ""
    err = (proc.stderr or "").strip().splitlines()
    line = err[-1] if err else f"exit {proc.returncode}"
    if "no quorum" in line or "nothing to change" in line:
        return FAIL, line
    return UNKNOWN, line


class Clients:
    def __init__(self, env: Dict[str, str], service: str, duration: float,
                 max_ops: int = 2000, timeout: float = 30.0) -> None:
        self.env, self.service, self.duration = env, service, duration
        self.max_ops, self.timeout = max_ops, timeout
        self.ops: List[Op] = []
        self._lock = threading.Lock()

    def _cli(self, *args: str) -> subprocess.CompletedProcess:
        try:
            return subprocess.run([sys.executable, "-m", "swarmlet.cli.main", *args], env=self.env,
                                  capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(args, 124, "", "timed out")

    def _loop(self, client: str, make: Callable[[int], Tuple[Any, List[str]]]) -> None:
        end = time.monotonic() + self.duration
        i = 0
        while time.monotonic() < end and i < self.max_ops:
            i += 1
            value, args = make(i)
            t0 = time.monotonic()
            proc = self._cli(*args)
            outcome, detail = classify(proc)
            with self._lock:
                self.ops.append(Op(client, i, value, outcome, t0, time.monotonic(), detail))

    def run(self) -> List[Op]:
        s = self.service
        scale = threading.Thread(target=self._loop, args=("scale", lambda i: (
            SCALE_VALUES[i % len(SCALE_VALUES)], ["scale", f"{s}={SCALE_VALUES[i % len(SCALE_VALUES)]}"])))
        update = threading.Thread(target=self._loop, args=("update", lambda i: (
            f"u{i}", ["update", s, "-e", f"MARK=u{i}", "--detach"])))
        scale.start()
        update.start()
        scale.join(self.duration + self.timeout + 10)
        update.join(self.duration + self.timeout + 10)
        return sorted(self.ops, key=lambda o: o.start)


def killer(kill: Callable[[], Optional[str]], restart: Callable[[str], None], every: float,
           duration: float, restart_after: float = 3.0) -> List[Tuple[float, str]]:
    """Kill the leader every ``every`` seconds (restarting it ``restart_after`` later)."""
    done: List[Tuple[float, str]] = []
    end = time.monotonic() + duration

    def go() -> None:
        while True:
            if end - time.monotonic() < every:
                return
            time.sleep(every)
            victim = kill()
            if victim:
                done.append((time.monotonic(), victim))
                time.sleep(restart_after)
                restart(victim)

    th = threading.Thread(target=go, daemon=True)
    th.start()
    done_event = th
    done_event.join(duration + 30)
    return done


def cli_env(home: str) -> Dict[str, str]:
    env = dict(os.environ)
    env["SWARMLET_HOME"] = home
    return env
