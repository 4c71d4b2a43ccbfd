"""The detached master process: start, stop, status and logs.

The master is ``python3 -m swarmlet.master --home $SWARMLET_HOME``. ``start``
runs it in its own session (so closing the terminal does not kill it), with
stdout/stderr appended to ``master/master.log`` and its pid in
``master/master.pid``, then waits until it answers ``GET /v1/status`` over
mutual TLS or dies (its log's tail becomes the error). A pidfile whose process
is gone, or is not a swarmlet master (pid reuse), counts as not running.

If ``swarmlet.master`` is not importable in this install, ``start`` says so
plainly instead of pretending.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional

from .client import call_master
from .cluster import Cluster
from .shipped.exceptions import ConfigError, MasterError, SwarmletError

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class MasterStatus:
    running: bool
    pid: Optional[int]
    answering: bool
    url: str
    log: str
    detail: str = ""


def pidfile(cluster: Cluster) -> Path:
    return cluster.master_dir / "master.pid"


def logfile(cluster: Cluster) -> Path:
    return cluster.master_dir / "master.log"


def command(cluster: Cluster) -> List[str]:
    return [sys.executable, "-m", "swarmlet.master", "--home", str(cluster.home)]


def available() -> bool:
    try:
        # swarmlet.master is a package; `python -m` needs its __main__.
        return importlib.util.find_spec("swarmlet.master.__main__") is not None
    except (ImportError, ValueError):
        return False


def _read_pid(cluster: Cluster) -> Optional[int]:
    try:
        return int(pidfile(cluster).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _is_master(pid: int) -> bool:
    """The process exists and is a swarmlet master (guards against pid reuse)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc: trust kill(0)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[-1].split()[0] == "Z":
            return False  # a zombie child of ours that nobody reaped yet
    except OSError:
        pass
    return b"swarmlet.master" in cmdline


def running_pid(cluster: Cluster) -> Optional[int]:
    pid = _read_pid(cluster)
    return pid if pid is not None and _is_master(pid) else None


def master_running(cluster: Cluster) -> bool:
    return running_pid(cluster) is not None


async def _answers(cluster: Cluster, timeout: float = 2.0) -> bool:
    try:
        await call_master(cluster, "GET", "/v1/status", timeout=timeout)
        return True
    except SwarmletError:
        return False


def _log_tail(cluster: Cluster, lines: int = 5) -> str:
    try:
        text = logfile(cluster).read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return " | ".join(ln.strip() for ln in text.strip().splitlines()[-lines:])


async def start(cluster: Cluster, timeout: float = START_TIMEOUT) -> MasterStatus:
    """Start the master detached; return once it answers. Already running: a no-op."""
    pid = running_pid(cluster)
    if pid is not None:
        return await status(cluster)
    if not available():
        raise MasterError(
            "the master is not available in this install (no module swarmlet.master.__main__)",
            hint="update swarmlet; the cluster files are ready and 'swarmlet master start' will work then")
    cluster.master_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    log = open(logfile(cluster), "ab")
    try:
        proc = subprocess.Popen(
            command(cluster), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=str(cluster.home), close_fds=True)
    except OSError as exc:
        raise MasterError(f"cannot start the master: {exc.strerror}") from exc
    finally:
        log.close()
    pidfile(cluster).write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pidfile(cluster).unlink(missing_ok=True)
            raise MasterError(
                f"the master exited with status {proc.returncode} right after starting",
                hint=f"its log says: {_log_tail(cluster) or '(empty)'} (full log: {logfile(cluster)})")
        if await _answers(cluster, 1.0):
            return await status(cluster)
        await asyncio.sleep(0.2)
    raise MasterError(f"the master (pid {proc.pid}) did not answer within {timeout:.0f}s",
                      hint=f"see {logfile(cluster)}")


def stop(cluster: Cluster, timeout: float = STOP_TIMEOUT) -> Optional[int]:
    """SIGTERM the master, SIGKILL after ``timeout``; the pid stopped, or None if none ran."""
    pid = running_pid(cluster)
    if pid is None:
        pidfile(cluster).unlink(missing_ok=True)
        return None
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _is_master(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.1)
        if _is_master(pid):
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
        _reap(pid)
    except ProcessLookupError:
        pass
    except PermissionError as exc:
        raise MasterError(f"not allowed to stop the master (pid {pid})") from exc
    pidfile(cluster).unlink(missing_ok=True)
    return pid


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


async def status(cluster: Cluster) -> MasterStatus:
    pid = running_pid(cluster)
    answering = await _answers(cluster) if pid is not None else False
    detail = "" if pid is None or answering else "process runs but its API does not answer"
    return MasterStatus(pid is not None, pid, answering, cluster.master_url(), str(logfile(cluster)), detail)


def run_foreground(cluster: Cluster) -> int:
    """Run the master attached to this terminal (``init --foreground``); its exit code."""
    if not available():
        raise MasterError("the master is not available in this install (no module swarmlet.master.__main__)")
    proc = subprocess.Popen(command(cluster), cwd=str(cluster.home))
    pidfile(cluster).write_text(f"{proc.pid}\n")
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        return proc.wait()
    finally:
        pidfile(cluster).unlink(missing_ok=True)


def follow_log(cluster: Cluster, lines: int = 50, follow: bool = False,
               poll: float = 0.5) -> Iterator[str]:
    """The log's last ``lines`` lines, then (``follow``) new lines as they come."""
    path = logfile(cluster)
    if not path.exists():
        raise ConfigError(f"no master log yet at {path}", hint="start the master: swarmlet master start")
    with open(path, "r", errors="replace") as fh:
        tail = fh.readlines()[-lines:] if lines > 0 else []
        yield from tail
        while follow:
            line = fh.readline()
            if line:
                yield line
            else:
                time.sleep(poll)
