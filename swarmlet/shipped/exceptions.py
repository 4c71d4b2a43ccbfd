"""The one error tree of swarmlet.

Every error a user can cause or meet is a ``SwarmletError``. Low-level errors
(asyncssh, docker, aiohttp, OSError) are caught in the I/O shells and re-raised
as one of these with ``raise ... from exc``, so the CLI can print one clean line
and exit non-zero. A bare traceback means a bug in swarmlet, never a user error.

    SwarmletError
    ├── UsageError            bad flags or arguments                    (exit 2)
    ├── NotImplementedYet     a command that is not built yet           (exit 2)
    ├── ConfigError           missing/invalid cluster config or home
    ├── StackFileError        malformed stack file (file:line:col)
    ├── DockerError           the local or remote Docker engine failed
    │   ├── DockerUnavailable no daemon, or no permission to use it
    │   ├── NoSuchContainer   the container is gone
    │   └── NoSpace           a node's disk is full (image upload)
    ├── LabError              the local lab could not be built or run
    ├── BundleError           the agent bundle could not be built
    ├── MasterError           the master process could not be started or stopped
    ├── LoadBalancerError     a load balancer could not start (port taken, bad config)
    ├── SSHError              one host's SSH step failed
    │   ├── HostUnreachable
    │   ├── AuthenticationFailed
    │   ├── HostKeyUnknown    needs --accept-new-host-key
    │   └── HostKeyChanged    always refused
    ├── ProvisionError        a host lacks what the agent needs
    ├── APIError              the master or an agent answered with an error
    │   ├── Unreachable       could not reach the master or an agent
    │   │   └── PeerRefused   its certificate is not the expected peer's (or is revoked)
    │   ├── StaleAssignment   an assignment older than the agent's (409)
    │   └── StaleRoutes       a routes update the agent cannot apply (409: send the whole table)
    │       └── StaleEdge     an edge or challenges update older than the agent's (409)
    ├── Refusal               an HTTP message the load balancer refuses (answered, then closed)
    ├── SchedulingError       a task cannot be placed (with an explanation)
    ├── StoreError            the master's state store failed
    │   ├── FencedOut         a write guarded by a fence no longer holding (deposed leader)
    │   └── NoQuorum          etcd has no quorum: writes fail at once (HA masters)
    └── ProtocolError         a wire message is malformed (dropped, counted)
        ├── AuthError         a packet failed authentication
        └── GarbledUpload     an image upload is not a gzip-compressed tar
"""

from __future__ import annotations


class SwarmletError(Exception):
    """Root of every error swarmlet raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(SwarmletError):
    exit_code = 2


class NotImplementedYet(SwarmletError):
    """A command exists in the CLI contract but is not built yet."""

    exit_code = 2

    def __init__(self, what: str) -> None:
        super().__init__(f"{what}: not implemented yet")


class ConfigError(SwarmletError):
    pass


class StackFileError(SwarmletError):
    """A stack file is invalid; ``location`` is ``file:line:col`` of the first problem.

    ``problems`` holds every ``(location, message)`` found in the file, in
    reading order; the text is one ``file:line:col: expected …`` line each.
    """

    def __init__(self, location: str, message: str,
                 problems: "tuple[tuple[str, str], ...] | None" = None) -> None:
        self.problems = tuple(problems) if problems else ((location, message),)
        super().__init__("\n".join(f"{loc}: {msg}" for loc, msg in self.problems))
        self.location = location
        self.reason = message

    @classmethod
    def combine(cls, errors: "list[StackFileError]") -> "StackFileError":
        """One error carrying every problem of ``errors`` (each once, order kept)."""
        seen: "dict[tuple[str, str], None]" = {}
        for e in errors:
            for p in e.problems:
                seen.setdefault(p, None)
        problems = tuple(seen)
        return cls(problems[0][0], problems[0][1], problems)


class DockerError(SwarmletError):
    pass


class DockerUnavailable(DockerError):
    pass


class NoSuchContainer(DockerError):
    """The container is gone (removed behind our back or never existed)."""


class NoSpace(DockerError):
    """The node's disk (spool dir or Docker's root) is full."""


class LabError(SwarmletError):
    pass


class BundleError(SwarmletError):
    """The bundle could not be built (pip download failed, sources missing)."""


class MasterError(SwarmletError):
    """The master process could not be started or stopped."""


class LoadBalancerError(SwarmletError):
    """The load balancer could not start (port taken, bad config...)."""


class SSHError(SwarmletError):
    """An SSH step failed for one host; ``host`` names it."""

    def __init__(self, host: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"{host}: {message}", hint=hint)
        self.host = host
        self.reason = message


class HostUnreachable(SSHError):
    pass


class AuthenticationFailed(SSHError):
    pass


class HostKeyUnknown(SSHError):
    pass


class HostKeyChanged(SSHError):
    pass


class ProvisionError(SSHError):
    pass


class APIError(SwarmletError):
    """``message`` names the peer and the reason; ``reason`` is the reason alone; ``request``
    (e.g. ``POST https://…: 400``) is shown only under ``--debug``."""

    def __init__(self, message: str, *, status: int | None = None, request: str | None = None,
                 reason: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.request = request
        self.reason = reason if reason is not None else message


class Unreachable(APIError):
    """No answer. ``refused``: the host's kernel refused the connection, so the host is up
    and only nothing listens on the port (e.g. an agent between a crash and its restart)."""

    refused = False


class PeerRefused(Unreachable):
    """The TLS peer is not who it must be: another node's, role's or CA's certificate, or revoked."""


class StaleAssignment(APIError):
    """An assignment older than the one the agent holds (``current``) was offered (HTTP 409).

    The agent raises it with the ``offered`` version; the master's client raises it from a
    409 answer, where only ``current`` is known."""

    def __init__(self, current: int, offered: "int | None" = None, message: "str | None" = None,
                 term: int = 0) -> None:
        if message is None:
            message = (f"stale assignment version {offered}: current is {current}"
                       if offered is not None else f"stale assignment: current is {current}")
        super().__init__(message, status=409)
        self.current = current
        self.offered = offered
        self.term = term      # the newest leader term the agent has seen


class StaleRoutes(APIError):
    """A routes update older than the agent's table, or a delta against a table it does not
    hold (HTTP 409 with the agent's ``current`` version and ``epoch``): send the whole table."""

    def __init__(self, current: int, epoch: int, message: "str | None" = None, term: int = 0) -> None:
        super().__init__(message or f"stale routes: this node holds version {current} of epoch "
                                    f"{epoch}", status=409)
        self.current = current
        self.epoch = epoch
        self.term = term


class StaleEdge(StaleRoutes):
    """An edge or ACME challenges update older than what the agent holds (``PUT /v1/edge``,
    ``PUT /v1/challenges``; HTTP 409 with ``current``, ``epoch`` and ``term``)."""


class Refusal(SwarmletError):
    """An HTTP message the load balancer will not pass on: it answers ``status`` and closes
    (``lb/framing.py``). Not a ProtocolError: the proxy answers it, it is not a dropped packet."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class SchedulingError(SwarmletError):
    pass


class StoreError(SwarmletError):
    """The master's state store (SQLite) could not be read or written."""


class FencedOut(StoreError):
    """A commit's fence (``meta[key] == value``) no longer held: nothing was written."""


class NoQuorum(StoreError):
    """Too few etcd members answer for a write (``no quorum: 1 of 3 masters reachable``)."""


class ProtocolError(SwarmletError):
    """A wire message is malformed. Callers drop the packet and count it."""


class AuthError(ProtocolError):
    """A packet failed authentication (AES-GCM tag mismatch, unknown key)."""


class GarbledUpload(ProtocolError):
    """The upload is not a gzip-compressed tar (or was cut short)."""
