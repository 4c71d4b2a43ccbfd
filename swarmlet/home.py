"""Where swarmlet keeps its state on the admin host, and how it writes secrets.

``$SWARMLET_HOME`` (default ``~/.swarmlet``) is a 0700 directory. Secrets
(private keys, the gossip key) are written 0600 atomically: written to a
temporary file in the same directory, fsynced, then renamed over the target, so
a crash never leaves a half-written key behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .shipped.exceptions import ConfigError


def home() -> Path:
    """The state directory, created 0700 if missing."""
    raw = os.environ.get("SWARMLET_HOME") or os.path.join(os.path.expanduser("~"), ".swarmlet")
    path = Path(raw)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create SWARMLET_HOME {path}: {exc.strerror}") from exc
    return path


def subdir(*parts: str) -> Path:
    path = home().joinpath(*parts)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically with ``mode`` (0600 by default)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
