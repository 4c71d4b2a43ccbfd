"""The action executor: carries out the reconciler's actions against Docker, one task each.

Owns the in-flight side of reconciling: every ``Create``/``Start``/``Remove``
runs as its own asyncio task (a slow ``docker stop`` never delays a restart),
its key is marked busy in the ledger while it runs, and the reconcile loop is
woken when it ends. A definite Docker failure (a bad image, a port taken)
marks the task failed for its revision, with the reason; an unavailable Docker
is left to the next pass. Status rows move forward as steps complete.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Set

from swarmlet.shipped.exceptions import ConfigError, DockerError, DockerUnavailable
from swarmlet.shipped.models import TaskSpec, TaskState

from . import reconcile as rc
from .ledger import TaskLedger
from .status import StatusBook

log = logging.getLogger("swarmlet.agent")

NOT_ASSIGNED = "not assigned to this node"


class Executor:
    def __init__(self, runtime: Any, book: StatusBook, ledger: TaskLedger,
                 clock: Callable[[], float], wake: Callable[[], None], counters: dict,
                 stop_timeout: int, drain_delay: float, secret_files: Any = None) -> None:
        self.runtime = runtime
        self.secret_files = secret_files     # secretfiles.SecretFiles: a task's files on tmpfs
        self.book = book
        self.ledger = ledger
        self.clock = clock
        self.wake = wake
        self.counters = counters
        self.stop_timeout = stop_timeout
        self.drain_delay = drain_delay
        self._running: Set["asyncio.Task[Any]"] = set()

    def launch(self, action: rc.Action) -> None:
        key = action.key if isinstance(action, rc.Remove) else action.task.task_id
        self.ledger.start_action(key)
        self.counters["actions"] += 1
        t = asyncio.get_running_loop().create_task(self._run(action, key))
        self._running.add(t)
        t.add_done_callback(self._running.discard)

    def tasks(self) -> Set["asyncio.Task[Any]"]:
        return set(self._running)

    async def _run(self, action: rc.Action, key: str) -> None:
        try:
            if isinstance(action, rc.Create):
                await self._create(action.task)
            elif isinstance(action, rc.Start):
                if action.restart:
                    self.counters["restarts"] += 1
                    self.book.bump_restarts(action.task, self.clock())
                # a node that rebooted lost its tmpfs: the task's files are written again first
                await self._secret_files(action.task)
                await self._guard(action.task, "start", self.runtime.start(action.container_id))
            elif isinstance(action, rc.Remove):
                if action.reason == NOT_ASSIGNED and self.drain_delay > 0:
                    # Load balancers stop routing to it as this assignment lands;
                    # give them and its in-flight requests a moment before SIGTERM.
                    await asyncio.sleep(self.drain_delay)
                log.info("removing %s (%s)", action.container_id[:12], action.reason)
                await self.runtime.remove(action.container_id, self.stop_timeout)
        except (DockerError, ConfigError) as exc:
            log.warning("%s failed: %s", type(action).__name__, exc)
        except Exception:  # a bug in one action must not kill the loop
            # Named by kind and task only: the action holds the task's env (secrets).
            log.exception("%s of %s crashed", type(action).__name__, _what(action))
        finally:
            self.ledger.end_action(key)
            self.wake()

    async def _create(self, task: TaskSpec) -> None:
        self.book.update(task, self.clock(), TaskState.PREPARING, reason="")
        await self._guard(task, "image", self.runtime.ensure_image(task.image))
        await self._guard(task, "volumes", self.runtime.ensure_volumes(task))
        await self._secret_files(task)
        cid = await self._guard(task, "create", self.runtime.create(task))
        self.book.update(task, self.clock(), TaskState.STARTING, container_id=cid)
        await self._guard(task, "start", self.runtime.start(cid))

    async def _secret_files(self, task: TaskSpec) -> None:
        """Write the task's secret and config files (tmpfs) before Docker binds them."""
        if self.secret_files is not None and (task.secrets or task.configs):
            await self._guard(task, "secrets", asyncio.to_thread(self.secret_files.materialize, task))

    async def _guard(self, task: TaskSpec, step: str, coro: Any) -> Any:
        """Run a Docker step; a definite failure makes the task failed, with its reason."""
        try:
            return await coro
        except DockerUnavailable:
            raise  # transient: the next pass tries again
        except (DockerError, ConfigError) as exc:      # ConfigError: a secret not here
            reason = str(exc) if step in ("image", "secrets") else f"{step}: {exc}"
            self.ledger.fail(task.task_id, reason, task.revision)
            self.book.update(task, self.clock(), TaskState.FAILED, reason=reason)
            raise


def _what(action: Any) -> str:
    """``task web.1.ab12 (revision 3)`` or ``container 1a2b3c4d5e6f``: never the spec itself."""
    task = getattr(action, "task", None)
    if task is not None:
        return f"task {task.task_id} (revision {task.revision})"
    return f"container {str(getattr(action, 'container_id', '?'))[:12]}"
