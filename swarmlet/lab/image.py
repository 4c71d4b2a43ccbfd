"""The lab node image: built once per machine, cached by content hash.

On a machine that can pull ``debian:bookworm-slim`` the image would come from a
Dockerfile; these machines reach no registry, so the image is always built
from a debootstrap'ed rootfs (``build-node-image.sh``) and ``docker import``ed.
The tag carries a hash of the build script, so a changed recipe rebuilds and
an unchanged one is reused.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import docker
import docker.errors

from ..exceptions import LabError

SCRIPT = Path(__file__).with_name("build-node-image.sh")
REPO = "swarmlet-lab-node"


def image_tag() -> str:
    digest = hashlib.sha256(SCRIPT.read_bytes()).hexdigest()[:12]
    return f"{REPO}:{digest}"


def ensure_image(client: docker.DockerClient, mirror: str = "http://deb.debian.org/debian",
                 echo=print) -> str:
    """The node image's tag, building it first if this machine lacks it."""
    tag = image_tag()
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    if shutil.which("debootstrap") is None:
        raise LabError("the lab node image needs debootstrap to build",
                       hint="apt-get install -y debootstrap")
    echo(f"building lab node image {tag} with debootstrap (about a minute, once per machine)")
    proc = subprocess.run(["bash", str(SCRIPT), tag, mirror], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise LabError("building the lab node image failed: " + " | ".join(tail))
    return tag
