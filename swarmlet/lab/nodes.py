"""Lab nodes: create, list, stop and remove "bare servers" as containers.

Each node runs systemd as PID 1 with sshd and dockerd as units, on the lab's
own bridge network, with its /var/lib/docker on a named volume (so the inner
dockerd gets overlay2, not vfs). Everything the lab makes carries the label
``io.swarmlet.lab=<lab name>``, which is how ``down`` finds it all.

Docker-in-Docker wants ``--privileged``. Where the host's root lacks
CAP_SYS_RESOURCE that fails ("unable to apply caps"), and we fall back to
all capabilities but that one, with seccomp and AppArmor unconfined.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import json
import os
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import docker
import docker.errors

from .. import home
from ..shipped.exceptions import DockerUnavailable, LabError
from .image import ensure_image

LABEL = "io.swarmlet.lab"
SSH_PORT = 22


@dataclass(frozen=True)
class LabNode:
    name: str
    address: str
    ssh: str
    key: str
    status: str


def lab_name() -> str:
    return os.environ.get("SWARMLET_LAB", "swarmlet-lab")


def client() -> docker.DockerClient:
    try:
        c = docker.from_env(timeout=120)
        c.ping()
        return c
    except docker.errors.DockerException as exc:
        raise DockerUnavailable(
            "cannot reach the local Docker engine", hint="start dockerd, or run scripts/bootstrap.sh"
        ) from exc


def lab_dir() -> Path:
    return home.subdir("lab")


def ensure_ssh_key() -> Path:
    """The lab's SSH key pair (ed25519, private key 0600), made once."""
    key = lab_dir() / "id_ed25519"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "swarmlet-lab",
                        "-f", str(key)], check=True)
    os.chmod(key, 0o600)
    auth = lab_dir() / "authorized_keys"
    home.write_atomic(auth, (key.with_suffix(".pub")).read_bytes(), 0o600)
    return key


def _node_name(i: int) -> str:
    return f"{lab_name()}-node-{i}"


PINNED = "io.swarmlet.lab.pinned"      # on a lab network whose subnet is ours: nodes keep addresses


def _ensure_network(c: docker.DockerClient):
    """The lab's network, with a subnet of its own so that every node keeps its address
    across restarts, as a server does (docker gives a restarted container the next free
    address otherwise: a stopped node's, and etcd's peer URLs then point at the wrong node).
    Docker picks a free subnet; the network is then made again with it as its own."""
    name = lab_name()
    try:
        return c.networks.get(name)
    except docker.errors.NotFound:
        pass
    probe = c.networks.create(name, driver="bridge", labels={LABEL: name})
    probe.reload()
    pool = (probe.attrs.get("IPAM", {}).get("Config") or [{}])[0]
    probe.remove()
    if not pool.get("Subnet"):
        return c.networks.create(name, driver="bridge", labels={LABEL: name})
    ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(
        subnet=pool["Subnet"], gateway=pool.get("Gateway"))])
    return c.networks.create(name, driver="bridge", ipam=ipam, labels={LABEL: name, PINNED: "1"})


def _pinned_address(c: docker.DockerClient, name: str) -> Optional[str]:
    """Node i's fixed address on a pinned lab network: the subnet's (i + 1)th host."""
    net = c.networks.get(lab_name())
    if net.attrs.get("Labels", {}).get(PINNED) != "1":
        return None
    subnet = ipaddress.ip_network(net.attrs["IPAM"]["Config"][0]["Subnet"])
    return str(subnet.network_address + 1 + _index(name))


def _run_kwargs(name: str, image: str, privileged: bool, address: Optional[str] = None) -> dict:
    kw = dict(
        image=image, name=name, hostname=name, detach=True,
        labels={LABEL: lab_name()},
        network=lab_name(),
        tmpfs={"/run": "", "/run/lock": "", "/tmp": ""},
        volumes={
            "/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"},
            f"{name}-docker": {"bind": "/var/lib/docker", "mode": "rw"},
            str(lab_dir() / "authorized_keys"): {"bind": "/root/.ssh/authorized_keys", "mode": "ro"},
        },
        cgroupns="host",
        environment={"container": "docker"},
        stop_signal="SIGRTMIN+3",  # systemd halts cleanly on it
    )
    if address is not None:
        kw["networking_config"] = {lab_name(): docker.types.EndpointConfig(
            docker.constants.DEFAULT_DOCKER_API_VERSION, ipv4_address=address)}
    if privileged:
        kw["privileged"] = True
    else:
        kw.update(cap_add=["ALL"], cap_drop=["SYS_RESOURCE"],
                  security_opt=["seccomp=unconfined", "apparmor=unconfined"])
    return kw


def _state_file() -> Path:
    return lab_dir() / "state.json"


def _load_state() -> dict:
    try:
        return json.loads(_state_file().read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _save_state(state: dict) -> None:
    home.write_atomic(_state_file(), json.dumps(state).encode(), 0o600)


def _create(c: docker.DockerClient, name: str, image: str) -> None:
    """Create and start one node, privileged first, falling back once."""
    state = _load_state()
    modes = [False] if state.get("privileged") is False else [True, False]
    for vol in (f"{name}-docker",):
        try:
            c.volumes.get(vol)
        except docker.errors.NotFound:
            c.volumes.create(vol, labels={LABEL: lab_name()})
    last: Optional[Exception] = None
    address = _pinned_address(c, name)
    for privileged in modes:
        try:
            c.containers.run(**_run_kwargs(name, image, privileged, address))
            if state.get("privileged") != privileged:
                state["privileged"] = privileged
                _save_state(state)
            return
        except docker.errors.APIError as exc:
            last = exc
            try:
                c.containers.get(name).remove(force=True)
            except docker.errors.NotFound:
                pass
    raise LabError(f"cannot start lab node {name}: {last}")


def _address(container) -> str:
    container.reload()
    nets = container.attrs["NetworkSettings"]["Networks"]
    net = nets.get(lab_name()) or {}
    return net.get("IPAddress", "")


def _wait_ready(c: docker.DockerClient, name: str, deadline: float) -> str:
    """Block until the node's sshd and dockerd answer; return its address."""
    container = c.containers.get(name)
    address = ""
    ssh_ok = docker_ok = False
    while time.monotonic() < deadline:
        address = address or _address(container)
        if address and not ssh_ok:
            try:
                with socket.create_connection((address, SSH_PORT), timeout=1) as s:
                    s.settimeout(1)
                    ssh_ok = s.recv(4).startswith(b"SSH-")
            except OSError:
                pass
        if not docker_ok:
            res = container.exec_run(["docker", "info", "--format", "{{.ServerVersion}}"])
            docker_ok = res.exit_code == 0
        if ssh_ok and docker_ok:
            return address
        time.sleep(0.2)
    container.reload()
    raise LabError(f"lab node {name} not ready in time (sshd: {ssh_ok}, dockerd: {docker_ok}, "
                   f"container: {container.status})")


def _lab_containers(c: docker.DockerClient) -> list:
    return c.containers.list(all=True, filters={"label": f"{LABEL}={lab_name()}"})


def _index(name: str) -> int:
    try:
        return int(name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return 0


def up(nodes: int, echo: Callable[[str], None] = print, timeout: float = 180.0) -> List[LabNode]:
    """Make the lab exactly ``nodes`` nodes, all running and ready. Idempotent."""
    if nodes < 1:
        raise LabError("--nodes must be at least 1")
    c = client()
    image = ensure_image(c, echo=echo)
    key = ensure_ssh_key()
    _ensure_network(c)
    wanted = {_node_name(i) for i in range(1, nodes + 1)}
    existing = {ct.name: ct for ct in _lab_containers(c)}
    for name, ct in existing.items():
        if name not in wanted:
            ct.remove(force=True)
            _remove_volume(c, f"{name}-docker")
        elif ct.status != "running" or ct.image.tags[:1] != [image]:
            if ct.image.tags[:1] != [image]:
                ct.remove(force=True)  # older recipe: replace the node
            else:
                ct.start()
    for name in sorted(wanted, key=_index):
        try:
            c.containers.get(name)
        except docker.errors.NotFound:
            _create(c, name, image)
    with concurrent.futures.ThreadPoolExecutor(max_workers=nodes) as pool:
        futs = {name: pool.submit(_ready_or_recreate, c, name, image, timeout) for name in wanted}
        for name, fut in futs.items():
            fut.result()
    return ls()


def _ready_or_recreate(c: docker.DockerClient, name: str, image: str, timeout: float) -> str:
    """Wait for a node; one that has not booted in half the time is made again once.

    A node normally boots in about a second. On a machine under heavy load,
    systemd in a fresh container has been seen to wedge with every boot job
    waiting; a new container boots normally, so retrying beats waiting longer.
    """
    try:
        return _wait_ready(c, name, time.monotonic() + timeout / 2)
    except LabError:
        try:
            c.containers.get(name).remove(force=True)
        except docker.errors.NotFound:
            pass
        _create(c, name, image)
        return _wait_ready(c, name, time.monotonic() + timeout / 2)


def ls() -> List[LabNode]:
    c = client()
    key = str(lab_dir() / "id_ed25519")
    out = []
    for ct in sorted(_lab_containers(c), key=lambda ct: _index(ct.name)):
        addr = _address(ct) if ct.status == "running" else ""
        out.append(LabNode(ct.name, addr, f"root@{addr}" if addr else "", key, ct.status))
    return out


def _remove_volume(c: docker.DockerClient, name: str) -> None:
    try:
        c.volumes.get(name).remove(force=True)
    except docker.errors.NotFound:
        pass


def down() -> Dict[str, int]:
    """Remove every container, volume and network of this lab."""
    c = client()
    removed = {"containers": 0, "volumes": 0, "networks": 0}
    flt = {"label": f"{LABEL}={lab_name()}"}
    for ct in c.containers.list(all=True, filters=flt):
        ct.remove(force=True, v=True)
        removed["containers"] += 1
    for vol in c.volumes.list(filters=flt):
        vol.remove(force=True)
        removed["volumes"] += 1
    for net in c.networks.list(filters=flt):
        net.remove()
        removed["networks"] += 1
    return removed


def stop_node(name: str) -> None:
    _get(name).stop(timeout=1)


def start_node(name: str) -> None:
    c = client()
    c.containers.get(name).start()
    _wait_ready(c, name, time.monotonic() + 60)


def _get(name: str):
    c = client()
    try:
        ct = c.containers.get(name)
    except docker.errors.NotFound as exc:
        raise LabError(f"no lab node named {name}") from exc
    if ct.labels.get(LABEL) != lab_name():
        raise LabError(f"{name} is not a node of lab {lab_name()}")
    return ct


def load(image: str, echo: Callable[[str], None] = print) -> List[str]:
    """Copy a local image into every running node (docker save | docker load)."""
    c = client()
    try:
        c.images.get(image)
    except docker.errors.ImageNotFound as exc:
        raise LabError(f"no local image {image}") from exc
    nodes = [n for n in ls() if n.status == "running"]
    if not nodes:
        raise LabError("the lab has no running node", hint="swarmlet lab up")
    tar = lab_dir() / "image-load.tar"
    subprocess.run(["docker", "save", "-o", str(tar), image], check=True)

    def _one(node: LabNode) -> str:
        with open(tar, "rb") as fh:
            proc = subprocess.run(["docker", "exec", "-i", node.name, "docker", "load", "-q"],
                                  stdin=fh, capture_output=True, text=True)
        if proc.returncode != 0:
            raise LabError(f"{node.name}: docker load failed: {proc.stderr.strip()}")
        echo(f"{node.name}: loaded {image}")
        return node.name

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(nodes)) as pool:
            return list(pool.map(_one, nodes))
    finally:
        tar.unlink(missing_ok=True)
