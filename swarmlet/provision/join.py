"""The join pipeline: connect → probe → upload → install → start → healthy, per host, concurrently.

Each host runs on its own; one failing never stops the others (each failure
is an ``SSHError``/``SwarmletError`` captured in that host's ``JoinResult``).
Progress is reported as ``Progress`` events through a callback; the CLI
renders them. Running join on a joined host rewrites its files, switches to
the new bundle (skipping the upload when the host already has it) and restarts
the agent in place; the agent's containers keep running.

The node's address is the admin's, never the server's: ``--address``, else
the address the SSH connection reached (what the target resolved to here).
A re-join that would move a joined node to another address is refused unless
``change_address`` is set. The new agent must then answer over mTLS with its
own certificate (role ``agent``, its name, that address in the SANs).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Set

from .. import cluster as clusterlib
from ..client import Client, agent_peer, call_masters, master_peers
from ..shipped.exceptions import BundleError, ProvisionError, SSHError, SwarmletError
from ..master_process import master_running
from . import plan, probes, ssh
from .bundle import BundleCache, read_bytes
from .healthy import wait_agent_healthy

STEPS = ("connect", "probe", "upload", "install", "start", "healthy")
HEALTHY_TIMEOUT = 45.0


@dataclass(frozen=True)
class Progress:
    target: str
    step: str
    state: str          # "start" | "ok" | "fail" | "note"
    detail: str = ""


@dataclass(frozen=True)
class JoinOptions:
    known_hosts: Path
    accept_new: bool = False
    identity: Optional[str] = None
    labels: Dict[str, str] = field(default_factory=dict)
    healthy_timeout: float = HEALTHY_TIMEOUT
    force_supervised: bool = False   # test hook: run without systemd even where it is PID 1
    parallel: int = 32               # hosts in flight at once (uploads share the admin's uplink)
    address: Optional[str] = None    # the node's address (one host only); default: the SSH peer's
    change_address: bool = False     # allow a re-join to move a joined node to a new address


@dataclass
class JoinResult:
    target: str
    ok: bool = False
    name: str = ""
    address: str = ""
    step: str = "connect"
    error: str = ""
    hint: str = ""
    seconds: float = 0.0
    init: str = ""
    bundle: str = ""
    upgraded: bool = False
    notes: List[str] = field(default_factory=list)
    timings: Dict[str, float] = field(default_factory=dict)   # step -> seconds


Emit = Callable[[Progress], None]


async def join_all(
    cluster: clusterlib.Cluster, targets: Sequence[plan.Target], opts: JoinOptions,
    emit: Emit = lambda p: None, cache: Optional[BundleCache] = None,
) -> List[JoinResult]:
    """Join every target concurrently; a result per target, in order."""
    cache = cache or BundleCache(cluster.bundles_dir)
    keys = [ssh.load_identity(opts.identity)] if opts.identity else None
    existing = clusterlib.nodes(cluster)
    reserved = {r.name: r.address for r in existing}
    gate = asyncio.Semaphore(max(1, opts.parallel))
    started: Set[str] = set()  # addresses in this batch whose agent has been started

    async with Client.for_cluster(cluster, timeout=5.0) as client:
        async def one(t: plan.Target) -> JoinResult:
            async with gate:
                return await _join_one(cluster, t, opts, emit, cache, keys, existing, targets,
                                       reserved, started, client)

        return list(await asyncio.gather(*(one(t) for t in targets)))


def node_address(target: plan.Target, peer_address: str, opts: JoinOptions,
                 existing: Sequence[clusterlib.NodeRecord]) -> "tuple[str, Optional[clusterlib.NodeRecord]]":
    """(the node's address, the joined node this target already is, if any). Pure.

    The address is ``--address``, else what the SSH connection reached. A target
    already joined at another address is refused unless ``change_address``.
    """
    address = opts.address or peer_address or target.host
    prior = next((r for r in existing if (r.ssh_host, r.ssh_port) == (target.host, target.port)), None)
    prior = prior or next((r for r in existing if r.address == address), None)
    if prior is not None and prior.address != address and not opts.change_address:
        raise ProvisionError(
            str(target), f"{prior.name} is joined at {prior.address}; this join would move it to "
                         f"{address}", hint="rerun with --change-address to move it")
    return address, prior


def _seeds(cluster: clusterlib.Cluster, me: plan.Target, existing: Sequence[clusterlib.NodeRecord],
           batch: Sequence[plan.Target], my_address: str) -> List[str]:
    out: List[str] = []
    for r in existing:
        if r.address != my_address:
            out.append(f"{r.address}:{r.gossip_port}")
    for t in batch:
        if t != me and t.host != my_address:
            out.append(f"{t.host}:{cluster.gossip_port}")
    return list(dict.fromkeys(out))


async def _join_one(
    cluster: clusterlib.Cluster, target: plan.Target, opts: JoinOptions, emit: Emit,
    cache: BundleCache, keys, existing, batch, reserved: Dict[str, str], started_batch: Set[str],
    client: Client,
) -> JoinResult:
    res = JoinResult(str(target))
    t0 = time.monotonic()
    session: Optional[ssh.Session] = None

    started = [t0]

    def step(name: str) -> None:
        res.step = name
        started[0] = time.monotonic()
        emit(Progress(res.target, name, "start"))

    def done(detail: str = "") -> None:
        res.timings[res.step] = round(time.monotonic() - started[0], 3)
        emit(Progress(res.target, res.step, "ok", detail))

    try:
        step("connect")
        session = await ssh.connect(target, opts.known_hosts, accept_new=opts.accept_new, client_keys=keys)
        if session.new_key_fingerprint:
            note = f"new host key {session.new_key_fingerprint} stored in {opts.known_hosts}"
            res.notes.append(note)
            emit(Progress(res.target, "connect", "note", note))
        done()

        step("probe")
        out = await session.run(probes.PROBE_SCRIPT, timeout=30)
        facts = probes.parse(out.stdout)
        plan.check(res.target, facts)
        platform, tags = plan.wheel_platforms(res.target, facts)
        res.address, prior = node_address(target, session.peer_address, opts, existing)
        # Names are reserved in memory (shared by this batch), so two hosts with the
        # same hostname get distinct names; nodes.json is written once a host has an agent.
        res.name = prior.name if prior is not None else plan.choose_name(facts.hostname, res.address,
                                                                         reserved)
        reserved[res.name] = res.address
        priv = plan.privilege(facts)
        layout = plan.layout_for(facts)
        user_mode = priv == "user"
        on_host = facts.user_bundles if user_mode else facts.bundles
        res.upgraded = bool(facts.user_current_bundle if user_mode else facts.current_bundle)
        # A re-join without --label keeps the labels the node has; with --label, they replace them.
        labels = dict(opts.labels) if opts.labels or prior is None else dict(prior.labels)
        res.init = "systemd" if plan.use_systemd(facts) and not opts.force_supervised else "supervised"
        done(f"{res.name}: {facts.os or facts.system} {facts.arch}, python {facts.python_str}, "
             f"docker {facts.docker_version or 'ok'}, {res.init}"
             + (", agent present (upgrade)" if res.upgraded else ""))

        step("upload")
        try:
            bundle = await cache.get(platform, plan.python_tag(facts), tags)
        except BundleError as exc:
            raise ProvisionError(res.target, f"cannot build the agent bundle: {exc}") from exc
        res.bundle = bundle.id
        if bundle.id in on_host:
            done(f"bundle {bundle.id} already on host")
        else:
            data = await asyncio.to_thread(read_bytes, bundle)
            sudo = "sudo -n " if priv == "sudo" else ""
            cmd = f"{sudo}sh -c {ssh.sh_quote(plan.unpack_script(bundle.id, layout))}"
            r = await session.run(cmd, input=data, timeout=300)
            if r.exit_status != 0:
                raise ProvisionError(res.target, f"upload failed: {upload_failure_reason(r.stderr, r.exit_status)}")
            done(f"bundle {bundle.id} ({bundle.size / 1e6:.1f} MB)")

        step("install")
        # SANs: what the admin gave and reached, never names the server chose for itself.
        kp = await asyncio.to_thread(cluster.issue_agent, res.name,
                                     list(dict.fromkeys([res.address, target.host])))
        config = plan.agent_config(
            name=res.name, address=res.address, cluster_id=cluster.id, labels=labels,
            seeds=_seeds(cluster, target, existing, batch, res.address),
            api_port=cluster.api_port, gossip_port=cluster.gossip_port, layout=layout)
        install = plan.install_script(
            bundle_id=bundle.id, config=config, cert_pem=kp.cert_pem, key_pem=kp.key_pem,
            ca_pem=cluster.path("ca.crt").read_bytes(), gossip_keys_json=cluster.gossip_keys_text(),
            layout=layout)
        r = await session.script(install, plan.shell_prefix(facts))
        if r.exit_status != 0:
            raise ProvisionError(res.target, f"install failed: {_last_line(r.stderr) or r.exit_status}")
        # From here the host has an agent: record it so `leave` can always remove it.
        clusterlib.save_node(cluster, _record(res, target, opts, facts, bundle.id, labels))
        done("certificate, key and gossip key written (0600)")

        step("start")
        r = await session.script(plan.start_script(res.init == "systemd", layout), plan.shell_prefix(facts))
        if r.exit_status != 0:
            raise ProvisionError(res.target, f"starting the agent failed: {_last_line(r.stderr) or r.exit_status}")
        if res.init == "supervised":
            why = (f"{facts.user} has no root or sudo: the agent runs as {facts.user} under {layout.root}"
                   if user_mode else "no systemd here")
            note = f"{why}; it runs supervised (setsid + restart loop) and will not survive a reboot"
            res.notes.append(note)
            emit(Progress(res.target, "start", "note", note))
        started_batch.add(res.address)
        done("systemd unit swarmlet-agent.service" if res.init == "systemd" else "supervised")

        step("healthy")
        # Expect to meet a peer only if one should be up: a node joined before, or a host
        # of this batch whose agent has started (a host that failed earlier never counts).
        others_before = any(r.address != res.address for r in existing)

        def want_peers() -> bool:
            return others_before or bool(started_batch - {res.address})

        try:
            info = await wait_agent_healthy(
                client, agent_peer(res.name, res.address, cluster.api_port), cluster.id, want_peers,
                timeout=opts.healthy_timeout)
        except SwarmletError as exc:
            logs = await _agent_log_tail(session, facts, res.init, layout)
            raise ProvisionError(res.target, f"{exc}" + (f"; agent log: {logs}" if logs else "")) from exc
        clusterlib.save_node(cluster, _record(res, target, opts, facts, bundle.id, labels))
        done(f"agent {info.get('version', '?')} answers over mTLS, {info.get('members', '?')} members alive")
        await _register(cluster, res, client, emit, opts.change_address)
        res.ok = True
    except SwarmletError as exc:
        res.error = exc.reason if isinstance(exc, SSHError) else str(exc)
        res.hint = exc.hint or ""
        emit(Progress(res.target, res.step, "fail", res.error))
    finally:
        res.seconds = time.monotonic() - t0
        if session is not None:
            await session.close()
    return res


def _record(res: JoinResult, target: plan.Target, opts: JoinOptions, facts: probes.HostFacts,
            bundle_id: str, labels: Dict[str, str]) -> clusterlib.NodeRecord:
    return clusterlib.NodeRecord(
        name=res.name, address=res.address, ssh_host=target.host, ssh_user=target.user,
        ssh_port=target.port, identity=str(Path(opts.identity).resolve()) if opts.identity else None,
        labels=dict(labels), init=res.init or ("systemd" if plan.use_systemd(facts) else "supervised"),
        privilege=plan.privilege(facts), agent_home=facts.home if plan.privilege(facts) == "user" else "",
        bundle=bundle_id, joined_at=time.time())


async def _register(cluster: clusterlib.Cluster, res: JoinResult, client: Client, emit: Emit,
                    change_address: bool) -> None:
    """Tell the master about the node; the master may not run, which is only a note.

    A master started later registers it from nodes.json (its seeds), never from gossip.
    """
    if not cluster.masters and not master_running(cluster):
        return   # no master on this host and no HA masters: it learns the node at start
    body = {"name": res.name, "address": res.address, "api_port": cluster.api_port,
            "labels": dict(_labels_of(cluster, res.name)), "change_address": change_address}
    try:
        await call_masters(client, master_peers(cluster), "POST", "/v1/nodes", body)
    except SwarmletError as exc:
        note = f"joined, but the master did not take the registration: {exc}"
        res.notes.append(note)
        emit(Progress(res.target, "healthy", "note", note))


def _labels_of(cluster: clusterlib.Cluster, name: str) -> Dict[str, str]:
    rec = clusterlib.find_node(cluster, name)
    return rec.labels if rec else {}


# errno texts worth surfacing as the whole reason (tar repeats them per file).
_REASONS = ("No space left on device", "Disk quota exceeded", "Read-only file system",
            "Permission denied", "Input/output error")


def upload_failure_reason(stderr: str, status: int) -> str:
    """One line for a failed unpack: the errno text if tar gave one, else its first complaint."""
    for reason in _REASONS:
        if reason in stderr:
            return reason
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and "Exiting with failure" not in ln]
    return lines[0] if lines else f"exit status {status}"


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


async def _agent_log_tail(session: ssh.Session, facts: probes.HostFacts, init: str,
                          layout: plan.Layout) -> str:
    cmd = ("journalctl -u swarmlet-agent.service -n 3 --no-pager -o cat" if init == "systemd"
           else f"tail -n 3 {layout.logfile}")
    if plan.privilege(facts) == "sudo":
        cmd = "sudo -n " + cmd
    try:
        r = await session.run(cmd, timeout=10)
    except SwarmletError:
        return ""
    return " | ".join(ln.strip() for ln in r.stdout.strip().splitlines()[-3:])
