"""Secret and config values on this node: in memory (tmpfs), never on its disk.

Owns ``secrets_dir`` (agent.json; default ``/run/swarmlet/secrets``, and ``/run``
is a tmpfs on systemd hosts). It is touched only once a value arrives (or if a
previous agent left it). ``prepare`` makes sure the folder is on a tmpfs
(or ramfs): if it is not, it mounts one there (``mode=0700``), and if that fails
no value is ever written (tasks that mount one fail, saying why). Layout, all
root-only:

    values/<kind>/<name>@<version>     a value as the master sent it (0400)
    tasks/<task id>/<kind>-<n>         the file task mounts, with its uid, gid, mode

Values arrive inside an assignment (``Assignment.secrets``, over mutual TLS):
``absorb`` writes them here and the agent stores the assignment without them
(``agent/state.py`` never sees a value). ``materialize`` writes a task's files just
before its container is created; ``containerspec.secret_mounts`` binds each one
read-only at ``/run/secrets/<target>`` (a config at its target), so Docker holds
only the path. ``retain`` removes what no task here uses any more: a value no
assigned task mounts, the files of a task that is neither assigned nor has a
container. Values survive an agent restart (the tmpfs does), not a reboot: then
``missing`` is reported in ``GET /v1/tasks`` and the master sends them again.

Nothing here logs a value; errors name the kind, name and version.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import shutil
import subprocess
from typing import Dict, Iterable, List, Sequence, Set, Tuple

from swarmlet.shipped import secretrefs
from swarmlet.shipped.exceptions import ConfigError
from swarmlet.shipped.models import SecretValue, TaskSpec

from .containerspec import task_secret_file

log = logging.getLogger("swarmlet.agent")
MEMORY_FS = ("tmpfs", "ramfs")
_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,200}")
Key = Tuple[str, str, int]


def _unescape(path: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)


def fs_type(path: str, mountinfo: str = "/proc/self/mountinfo") -> str:
    """The file system type of the mount holding ``path`` ("" if unknown)."""
    path = os.path.realpath(path)
    best, kind = "", ""
    try:
        with open(mountinfo, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return ""
    for line in lines:
        left, _, right = line.partition(" - ")
        parts = left.split()
        if len(parts) < 5 or not right:
            continue
        point = _unescape(parts[4])
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, right.split()[0]
    return kind


class SecretFiles:
    def __init__(self, root: str) -> None:
        self.root = root
        self.values_dir = os.path.join(root, "values")
        self.tasks_dir = os.path.join(root, "tasks")
        self.why_not = "not prepared yet"     # "" once the folder is on a memory file system
        self.prepared = False
        self.held: Set[Key] = set()

    # --- setup -------------------------------------------------------------------------

    def start(self) -> None:
        """At agent start: take over the values a previous agent left (the folder exists);
        otherwise nothing is made until the first value arrives (blocking)."""
        if os.path.isdir(self.root):
            self.prepare()

    def ensure(self) -> None:
        if not self.prepared:
            self.prepare()

    def prepare(self) -> None:
        """Make ``root`` a memory-backed folder (blocking; run it in a thread)."""
        self.prepared = True
        try:
            os.makedirs(self.root, mode=0o700, exist_ok=True)
            if fs_type(self.root) not in MEMORY_FS:
                subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0700,nosuid,nodev,noexec",
                                "tmpfs", self.root], check=False, capture_output=True, timeout=10)
            kind = fs_type(self.root)
            if kind not in MEMORY_FS:
                self.why_not = (f"{self.root} is on {kind or 'an unknown file system'}, not tmpfs, "
                                "and a tmpfs could not be mounted there")
                log.warning("secrets disabled: %s", self.why_not)
                return
            os.chmod(self.root, 0o700)
            for d in (self.values_dir, self.tasks_dir):
                os.makedirs(d, mode=0o700, exist_ok=True)
        except (OSError, subprocess.SubprocessError) as exc:
            self.why_not = f"cannot prepare {self.root}: {exc}"
            log.warning("secrets disabled: %s", self.why_not)
            return
        self.why_not = ""
        self.held = set(self._scan())

    def _scan(self) -> Iterable[Key]:
        for kind in secretrefs.KINDS:
            folder = os.path.join(self.values_dir, kind)
            try:
                names = os.listdir(folder)
            except FileNotFoundError:
                continue
            for entry in names:
                name, _, version = entry.rpartition("@")
                if name and version.isdigit():
                    yield (kind, name, int(version))

    def _value_path(self, key: Key) -> str:
        kind, name, version = key
        return os.path.join(self.values_dir, kind, f"{name}@{version}")

    # --- values --------------------------------------------------------------------------

    def absorb(self, values: Sequence[SecretValue]) -> int:
        """Keep the values of an assignment (blocking). Returns how many were new."""
        new = 0
        if values:
            self.ensure()
        for v in values:
            key = (v.kind, v.name, int(v.version))
            if key in self.held:
                continue
            if self.why_not:
                continue          # never on disk: the tasks fail with why_not instead
            if v.kind not in secretrefs.KINDS or not secretrefs.NAME.fullmatch(v.name):
                log.warning("ignored a %s value with a bad name", v.kind[:16])
                continue
            try:
                data = base64.b64decode(v.data, validate=True)
            except ValueError:
                log.warning("ignored %s %s version %d: not base64", v.kind, v.name, v.version)
                continue
            os.makedirs(os.path.join(self.values_dir, v.kind), mode=0o700, exist_ok=True)
            _write(self._value_path(key), data, 0o400)
            self.held.add(key)
            new += 1
        return new

    def missing(self, tasks: Iterable[TaskSpec]) -> List[Key]:
        want = {(k, r.source, r.version) for t in tasks for k, r in secretrefs.refs(t)}
        return sorted(want - self.held)

    # --- a task's files ---------------------------------------------------------------------

    def materialize(self, task: TaskSpec) -> None:
        """Write ``task``'s files (blocking); ``ConfigError`` naming what is missing."""
        refs = secretrefs.refs(task)
        if not refs:
            return
        self.ensure()
        if self.why_not:
            raise ConfigError(f"secrets: {self.why_not}")
        if not _TASK_ID.fullmatch(task.task_id):
            raise ConfigError(f"secrets: task id {task.task_id[:40]!r} cannot name a folder")
        lacking = [f"{k} {r.source} version {r.version}" for k, r in refs
                   if (k, r.source, r.version) not in self.held]
        if lacking:
            raise ConfigError(f"secrets: {', '.join(lacking)} not on this node (yet)")
        folder = os.path.join(self.tasks_dir, task.task_id)
        os.makedirs(folder, mode=0o700, exist_ok=True)
        for i, (kind, ref) in enumerate(refs):
            with open(self._value_path((kind, ref.source, ref.version)), "rb") as fh:
                data = fh.read()
            path = task_secret_file(self.root, task.task_id, kind, i)
            _write(path, data, 0o600)
            os.chown(path, int(ref.uid), int(ref.gid))
            os.chmod(path, ref.mode)

    # --- removal ------------------------------------------------------------------------------

    def retain(self, desired: Dict[str, TaskSpec], live: Set[str]) -> None:
        """Remove values no assigned task mounts, and files of tasks neither assigned nor with a
        container (blocking)."""
        if not self.prepared or self.why_not:
            return
        want = {(k, r.source, r.version) for t in desired.values() for k, r in secretrefs.refs(t)}
        for key in sorted(self.held - want):
            try:
                os.unlink(self._value_path(key))
            except FileNotFoundError:
                pass
            self.held.discard(key)
        try:
            folders = os.listdir(self.tasks_dir)
        except FileNotFoundError:
            return
        for tid in folders:
            if tid not in desired and tid not in live:
                shutil.rmtree(os.path.join(self.tasks_dir, tid), ignore_errors=True)


def _write(path: str, data: bytes, mode: int) -> None:
    """Write ``path`` whole (a temporary name, then rename: never a torn value)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
