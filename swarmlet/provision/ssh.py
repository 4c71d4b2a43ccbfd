"""The SSH shell of provisioning: connect with host-key checks, run scripts, map errors.

Host keys are checked against a known_hosts file (the cluster's, or the
user's ``--known-hosts``), never skipped:

- a host with no recorded key is refused (``HostKeyUnknown``, with its
  fingerprint) unless ``accept_new`` is set, in which case its key is stored;
- a host whose recorded key differs from the one presented is always refused
  (``HostKeyChanged``), whatever the flags.

asyncssh calls ``validate_host_public_key`` only for a key that is not already
trusted, which is where we tell "unknown" from "changed". Every asyncssh and
socket error becomes one ``SSHError`` subclass with a one-line reason.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import asyncssh

from ..shipped.exceptions import (AuthenticationFailed, HostKeyChanged, HostKeyUnknown, HostUnreachable,
                          SSHError, UsageError)
from .plan import Target

CONNECT_TIMEOUT = 10.0


def _pattern(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def fingerprint(key: asyncssh.SSHKey) -> str:
    return key.get_fingerprint("sha256")


class KnownHosts:
    """A known_hosts file: look up a host's keys, append a newly accepted one."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def keys_for(self, host: str, port: int) -> List[asyncssh.SSHKey]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
        if not lines:
            return []
        kh = asyncssh.import_known_hosts("\n".join(lines) + "\n")
        return list(kh.match(_pattern(host, port), "", None)[0])

    def add(self, host: str, port: int, key: asyncssh.SSHKey) -> None:
        algo, blob = key.export_public_key("openssh").decode().split()[:2]
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Appends are one short write: concurrent joins in this process cannot interleave.
        with open(self.path, "a", encoding="ascii") as fh:
            fh.write(f"{_pattern(host, port)} {algo} {blob}\n")
        try:
            self.path.chmod(0o600)
        except OSError:
            pass


class _HostKeyCheck(asyncssh.SSHClient):
    """Decides on a key asyncssh did not find trusted, and remembers why."""

    def __init__(self, known: KnownHosts, target: Target, had_keys: bool, accept_new: bool) -> None:
        self.known = known
        self.target = target
        self.had_keys = had_keys
        self.accept_new = accept_new
        self.verdict: Optional[str] = None  # "changed" | "unknown" | "accepted"
        self.presented: Optional[asyncssh.SSHKey] = None

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        self.presented = key
        if self.had_keys:
            self.verdict = "changed"
            return False
        if not self.accept_new:
            self.verdict = "unknown"
            return False
        self.verdict = "accepted"
        return True


@dataclass
class Result:
    exit_status: int
    stdout: str
    stderr: str


class Session:
    """One connected host. ``run`` never raises for a non-zero exit; it returns it."""

    def __init__(self, conn: asyncssh.SSHClientConnection, target: Target,
                 new_key_fingerprint: Optional[str]) -> None:
        self.conn = conn
        self.target = target
        self.new_key_fingerprint = new_key_fingerprint

    @property
    def peer_address(self) -> str:
        """The address this host connected to: the admin's view of the target, not the server's."""
        peer = self.conn.get_extra_info("peername")
        addr = str(peer[0]) if peer else self.target.host
        return addr.split("%", 1)[0]   # an IPv6 scope id is local to this host

    async def run(self, command: str, input: Optional[bytes] = None, timeout: float = 120.0) -> Result:
        try:
            res = await self.conn.run(command, input=input, encoding=None, check=False, timeout=timeout)
        except asyncssh.TimeoutError as exc:
            raise SSHError(str(self.target), f"command timed out after {timeout:.0f}s") from exc
        except (asyncssh.Error, OSError) as exc:
            raise SSHError(str(self.target), f"connection lost: {_reason(exc)}") from exc
        status = res.exit_status if res.exit_status is not None else 255
        out = res.stdout.decode(errors="replace") if isinstance(res.stdout, bytes) else (res.stdout or "")
        err = res.stderr.decode(errors="replace") if isinstance(res.stderr, bytes) else (res.stderr or "")
        return Result(status, out, err)

    async def script(self, text: str, shell: str = "sh -s", timeout: float = 120.0) -> Result:
        """Run a shell script fed on stdin (so secrets in it never show on a command line)."""
        return await self.run(shell, input=text.encode(), timeout=timeout)

    async def close(self) -> None:
        self.conn.close()
        try:
            await asyncio.wait_for(self.conn.wait_closed(), 5)
        except (asyncio.TimeoutError, asyncssh.Error, OSError):
            pass


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
    return str(text).strip() or type(exc).__name__


async def connect(
    target: Target,
    known_hosts: Path,
    *,
    accept_new: bool = False,
    client_keys: Optional[Sequence[asyncssh.SSHKey]] = None,
    timeout: float = CONNECT_TIMEOUT,
) -> Session:
    """Open an SSH connection to ``target``, checking its host key; raise an ``SSHError``."""
    host = str(target)
    known = KnownHosts(known_hosts)
    trusted = known.keys_for(target.host, target.port)
    checker = _HostKeyCheck(known, target, bool(trusted), accept_new)
    opts = dict(
        username=target.user, port=target.port,
        known_hosts=(trusted, [], []),
        connect_timeout=timeout, login_timeout=timeout,
        client_factory=lambda: checker,
    )
    if client_keys is not None:
        opts.update(client_keys=list(client_keys), agent_path=None, password=None,
                    kbdint_auth=False, password_auth=False)
    try:
        conn = await asyncssh.connect(target.host, **opts)
    except asyncssh.HostKeyNotVerifiable as exc:
        fp = fingerprint(checker.presented) if checker.presented else "?"
        if checker.verdict == "changed":
            raise HostKeyChanged(
                host, f"host key has CHANGED (server now presents {fp}); refusing to connect",
                hint=f"if the server was really reinstalled, delete its line from {known_hosts} "
                     "and join again with --accept-new-host-key") from exc
        if checker.verdict == "unknown":
            raise HostKeyUnknown(
                host, f"unknown host key {fp}",
                hint="check the fingerprint, then rerun with --accept-new-host-key to trust it") from exc
        raise SSHError(host, f"host key not verifiable: {_reason(exc)}") from exc
    except asyncssh.PermissionDenied as exc:
        raise AuthenticationFailed(
            host, f"authentication failed for user {target.user}",
            hint="check the key given with -i and that it is in the user's authorized_keys") from exc
    except asyncssh.DisconnectError as exc:
        raise SSHError(host, f"SSH disconnected: {_reason(exc)}") from exc
    except asyncio.TimeoutError as exc:
        raise HostUnreachable(host, f"unreachable: no answer on port {target.port} within {timeout:.0f}s") from exc
    except socket.gaierror as exc:
        raise HostUnreachable(host, f"unreachable: cannot resolve {target.host} ({_reason(exc)})") from exc
    except ConnectionRefusedError as exc:
        raise HostUnreachable(host, f"unreachable: connection refused on port {target.port}") from exc
    except OSError as exc:
        # asyncio words these "Connect call failed (addr)"; the errno says why.
        why = os.strerror(exc.errno) if exc.errno else _reason(exc)
        raise HostUnreachable(host, f"unreachable: {why} (port {target.port})") from exc
    except asyncssh.Error as exc:
        raise SSHError(host, f"SSH failed: {_reason(exc)}") from exc
    new_fp = None
    if checker.verdict == "accepted" and checker.presented is not None:
        known.add(target.host, target.port, checker.presented)
        new_fp = fingerprint(checker.presented)
    return Session(conn, target, new_fp)


def load_identity(path: str) -> asyncssh.SSHKey:
    """Read a private key given with ``-i``; a clear error if it is missing or encrypted."""
    try:
        return asyncssh.read_private_key(path)
    except FileNotFoundError:
        raise UsageError(f"identity file {path} not found") from None
    except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError, OSError) as exc:
        raise UsageError(f"cannot load identity {path}: {_reason(exc)}",
                             hint="passphrase-protected keys: load them into ssh-agent and omit -i") from exc


def sh_quote(script: str) -> str:
    return shlex.quote(script)
