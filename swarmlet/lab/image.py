"""The lab node image: built once per machine, cached by content hash.

Where ``debian:bookworm-slim`` can be had (it is present locally, or
``SWARMLET_LAB_PULL=1`` allows pulling it) the image is built from
``Dockerfile``. Elsewhere, as on machines that reach no container registry,
it is built from an mmdebstrap'ed rootfs (``build-node-image.sh``) and
``docker import``ed. Both run the same ``node-setup.sh``. The tag carries a
hash of the recipe, so a changed recipe rebuilds and an unchanged one is reused.
We never try a pull unasked: on a closed network it only hangs or fails.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import docker
import docker.errors

from ..shipped.exceptions import LabError

HERE = Path(__file__).parent
SCRIPT = HERE / "build-node-image.sh"
RECIPE = (SCRIPT, HERE / "node-setup.sh", HERE / "Dockerfile")
REPO = "swarmlet-lab-node"
BASE = "debian:bookworm-slim"


def image_tag() -> str:
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in RECIPE)).hexdigest()[:12]
    return f"{REPO}:{digest}"


def _base_available(client: docker.DockerClient) -> bool:
    try:
        client.images.get(BASE)
        return True
    except docker.errors.ImageNotFound:
        return os.environ.get("SWARMLET_LAB_PULL") == "1"


def _build_from_dockerfile(client: docker.DockerClient, tag: str) -> None:
    try:
        client.images.build(path=str(HERE), tag=tag, rm=True,
                            pull=os.environ.get("SWARMLET_LAB_PULL") == "1")
    except (docker.errors.BuildError, docker.errors.APIError) as exc:
        raise LabError(f"building the lab node image from its Dockerfile failed: {exc}") from exc


def ensure_image(client: docker.DockerClient, mirror: str = "http://deb.debian.org/debian",
                 echo=print) -> str:
    """The node image's tag, building it first if this machine lacks it."""
    tag = image_tag()
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    if _base_available(client):
        echo(f"building lab node image {tag} from {BASE}")
        _build_from_dockerfile(client, tag)
        return tag
    if shutil.which("mmdebstrap") is None:
        raise LabError("the lab node image needs mmdebstrap to build",
                       hint="apt-get install -y mmdebstrap")
    echo(f"building lab node image {tag} with mmdebstrap (about 30 s, once per machine)")
    proc = subprocess.run(["bash", str(SCRIPT), tag, mirror], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise LabError("building the lab node image failed: " + " | ".join(tail))
    return tag
