"""Images without a registry, the agent side: presence check and a streamed ``docker load``.

Owns two routes of the agent API (registered by ``api.make_app``):

- ``GET /v1/images?name=IMG`` -> ``{"name", "present", "id"}`` (``id`` is the
  image id, ``sha256:…``, the same on every node that loaded the same save).
- ``POST /v1/images/load[?name=IMG]`` with a gzip-compressed ``docker save``
  tar as the body -> ``{"loaded": ["name:tag", …]}``.

The upload is never held in memory: it is spooled to ``<state_dir>/images/``
in ~1 MiB batches written from a worker thread, and checked on the way in (a
valid gzip stream that ends properly and starts with a tar header), so a
garbled or cut upload is a 400 before Docker sees it. Then the spooled file is
streamed into Docker's load API from a thread (Docker reads gzip itself).
Spooling, rather than piping the socket into Docker, keeps a slow or broken
upload from leaving Docker with half an image, and gives ENOSPC a clear place
to happen. ``?name=`` only names the image in error messages.

Errors: ENOSPC/EDQUOT while spooling, or Docker's own "no space left on
device" -> 507 ``{"error": "no space left on device on <node> while loading
IMAGE"}``; garbled upload (or Docker rejecting the archive) -> 400; Docker
unreachable -> 503; other Docker errors -> 502. The spool file is always
removed. Python 3.9: shipped with the agent.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import tarfile
import time
import uuid
import zlib
from typing import Any, Callable, Dict, List, Optional

import aiohttp
import docker.errors
import requests.exceptions
from aiohttp import web

from swarmlet.shipped.exceptions import DockerError, DockerUnavailable, GarbledUpload, NoSpace, ProtocolError

log = logging.getLogger("swarmlet.agent.images")

SPOOL_SUBDIR = "images"
BATCH = 1 << 20              # bytes handed to the writer thread at a time
_INFLATE_STEP = 1 << 20      # bound on inflated bytes held at once (gzip bombs)
DRAIN_LIMIT = 4 << 20       # bytes of a rejected upload read and dropped before answering
_STALE_AFTER = 3600.0        # spool files older than this are leftovers of a crash
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
# Docker's words for an archive that is not a docker-save tar.
_BAD_ARCHIVE = ("archive/tar", "invalid tar", "unexpected eof", "manifest.json", "repositories",
                "gzip: invalid", "invalid checksum", "invalid header")


class UploadCheck:
    """Incremental validity check of a gzip-compressed tar, without keeping it.

    ``feed`` every chunk in order, then ``finish``. Raises ``GarbledUpload``
    on the first sign of a bad stream. Concatenated gzip members are allowed
    (as gzip and Docker allow them).
    """

    def __init__(self) -> None:
        self._d = zlib.decompressobj(wbits=31)  # 31: gzip header and trailer
        self._head = b""
        self.raw = 0         # compressed bytes seen
        self.inflated = 0    # uncompressed bytes seen

    def feed(self, data: bytes) -> None:
        self.raw += len(data)
        while data:
            try:
                out = self._d.decompress(data, _INFLATE_STEP)
            except zlib.error as exc:
                raise GarbledUpload(f"not a gzip stream ({exc})") from exc
            self._take(out)
            if self._d.eof:
                data = self._d.unused_data
                if data:
                    self._d = zlib.decompressobj(wbits=31)  # the next gzip member
            else:
                data = self._d.unconsumed_tail

    def _take(self, out: bytes) -> None:
        self.inflated += len(out)
        if len(self._head) < tarfile.BLOCKSIZE:
            self._head += out[:tarfile.BLOCKSIZE - len(self._head)]
            if len(self._head) == tarfile.BLOCKSIZE:
                _check_tar_header(self._head)

    def finish(self) -> None:
        if self.raw == 0:
            raise GarbledUpload("empty upload")
        if not self._d.eof:
            raise GarbledUpload("the gzip stream is cut short (upload incomplete?)")
        if len(self._head) < tarfile.BLOCKSIZE:
            raise GarbledUpload("too short to be a tar archive")


def _check_tar_header(block: bytes) -> None:
    try:
        tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.HeaderError as exc:
        raise GarbledUpload(f"not a tar archive ({exc})") from exc


class Spool:
    """A spool file under ``directory`` plus the running ``UploadCheck``. Blocking: use in a thread."""

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        _sweep(directory)
        self.path = os.path.join(directory, f"upload-{uuid.uuid4().hex}.tar.gz.part")
        self._fh: Any = open(self.path, "wb", buffering=0)  # unbuffered: ENOSPC shows at write
        self.check = UploadCheck()

    def write(self, data: bytes) -> None:
        self.check.feed(data)
        view = memoryview(data)
        while view:
            n = self._fh.write(view)  # a raw write may be partial near a full disk
            view = view[n:]

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def remove(self) -> None:
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _sweep(directory: str) -> None:
    """Remove spool files a crashed agent left behind."""
    now = time.time()
    try:
        for entry in os.scandir(directory):
            if entry.name.endswith(".part") and now - entry.stat().st_mtime > _STALE_AFTER:
                os.unlink(entry.path)
    except OSError:  # best effort; the new upload still has its own file
        pass


def is_no_space(message: str) -> bool:
    return "no space left on device" in message.lower()


def is_bad_archive(message: str) -> bool:
    low = message.lower()
    return any(w in low for w in _BAD_ARCHIVE)


def loaded_names(messages: List[Dict[str, Any]]) -> List[str]:
    """``["name:tag", …]`` (or ``sha256:…`` for untagged) from Docker's load messages.

    Raises ``NoSpace``, ``GarbledUpload`` or ``DockerError`` for an error message.
    """
    out: List[str] = []
    for m in messages:
        err = m.get("error") or (m.get("errorDetail") or {}).get("message")
        if err:
            _raise_for(str(err))
        text = str(m.get("stream") or "").strip()
        for prefix in ("Loaded image: ", "Loaded image ID: "):
            if text.startswith(prefix):
                out.append(text[len(prefix):].strip())
    return out


def _raise_for(message: str, what: str = "docker load") -> None:
    if is_no_space(message):
        raise NoSpace(message)
    if is_bad_archive(message):
        raise GarbledUpload(f"Docker rejected the archive: {message}")
    raise DockerError(f"{what}: {message}")


def _docker(what: str, fn: Callable[[], Any]) -> Any:
    """Run a blocking docker SDK call (in a thread) with errors mapped."""
    try:
        return fn()
    except docker.errors.APIError as exc:
        try:
            _raise_for(str(exc.explanation or exc), what)
        except (DockerError, ProtocolError) as mapped:
            raise mapped from exc
    except (docker.errors.DockerException, requests.exceptions.ConnectionError) as exc:
        raise DockerUnavailable(f"{what}: Docker is not reachable: {exc}") from exc
    except OSError as exc:
        if exc.errno in _NO_SPACE:
            raise NoSpace(str(exc)) from exc
        raise DockerError(f"{what}: {exc}") from exc


def load_file(api: Any, path: str) -> List[str]:
    """Stream the spooled file into ``docker load``. Blocking: run in a thread."""
    def run() -> List[str]:
        with open(path, "rb") as fh:
            return loaded_names(list(api.load_image(fh)))
    return _docker("docker load", run)


def image_info(api: Any, name: str) -> Dict[str, Any]:
    """``{"name", "present", "id"}``. Blocking: run in a thread."""
    def run() -> Dict[str, Any]:
        try:
            return {"name": name, "present": True, "id": api.inspect_image(name).get("Id")}
        except docker.errors.NotFound:
            return {"name": name, "present": False, "id": None}
    return _docker(f"inspect image {name}", run)


# --- HTTP handlers ---------------------------------------------------------------

def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _receive(request: web.Request, spool: Spool) -> None:
    """Copy the body into the spool in batches, the writes off the loop."""
    buf: List[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        buf.append(chunk)
        size += len(chunk)
        if size >= BATCH:
            await asyncio.to_thread(spool.write, b"".join(buf))
            buf, size = [], 0
    if buf:
        await asyncio.to_thread(spool.write, b"".join(buf))
    await asyncio.to_thread(spool.check.finish)


async def _drain(request: web.Request, limit: int = DRAIN_LIMIT, seconds: float = 2.0) -> None:
    """Read and drop a little more of a rejected upload, so a client still writing sees our answer.

    Bounded: a client that keeps sending gets the answer and a closed connection
    (aiohttp clients read an early answer fine), not gigabytes read for nothing.
    """
    deadline = time.monotonic() + seconds
    seen = 0
    try:
        while seen < limit and time.monotonic() < deadline:
            chunk = await asyncio.wait_for(request.content.readany(), max(0.01, deadline - time.monotonic()))
            if not chunk:
                break
            seen += len(chunk)
    except Exception:  # timed out or the client went away: nothing more to do
        pass


def routes(agent_of: Callable[[web.Request], Any]) -> List[web.RouteDef]:
    """The image routes; ``agent_of(request)`` gives the ``Agent`` (runtime, config)."""

    async def get_image(request: web.Request) -> web.Response:
        name = request.query.get("name", "").strip()
        if not name:
            return _error(400, "give the image as ?name=IMAGE")
        try:
            info = await asyncio.to_thread(image_info, agent_of(request).runtime.api, name)
        except DockerUnavailable as exc:
            return _error(503, str(exc))
        except DockerError as exc:
            return _error(502, str(exc))
        return web.json_response(info)

    async def post_load(request: web.Request) -> web.Response:
        agent = agent_of(request)
        node = agent.config.name
        image = request.query.get("name", "").strip() or "the upload"
        no_space = f"no space left on device on {node} while loading {image}"
        t0 = time.monotonic()
        spool: Optional[Spool] = None
        try:
            spool = await asyncio.to_thread(
                Spool, os.path.join(agent.config.state_dir, SPOOL_SUBDIR))
            try:
                await _receive(request, spool)
            except (GarbledUpload, OSError):
                await _drain(request)
                raise
            except aiohttp.ClientPayloadError as exc:  # bad chunking, cut connection
                raise GarbledUpload(f"upload interrupted ({exc})") from exc
            await asyncio.to_thread(spool.close)
            loaded = await asyncio.to_thread(load_file, agent.runtime.api, spool.path)
        except GarbledUpload as exc:
            return _error(400, f"bad image upload to {node}: {exc}")
        except NoSpace as exc:
            log.warning("%s: %s", no_space, exc)
            return _error(507, no_space)
        except OSError as exc:
            if exc.errno in _NO_SPACE:
                log.warning("%s: %s", no_space, exc)
                return _error(507, no_space)
            if isinstance(exc, ConnectionError):
                return _error(400, f"upload to {node} interrupted: {exc}")
            return _error(500, f"spooling the upload on {node} failed: {exc}")
        except DockerUnavailable as exc:
            return _error(503, str(exc))
        except DockerError as exc:
            return _error(502, str(exc))
        finally:
            if spool is not None:
                await asyncio.to_thread(spool.remove)
        log.info("loaded %s on %s (%d bytes, %.2fs)", ", ".join(loaded) or "nothing", node,
                 spool.check.raw, time.monotonic() - t0)
        return web.json_response({"loaded": loaded, "bytes": spool.check.raw})

    return [web.get("/v1/images", get_image), web.post("/v1/images/load", post_load)]
