"""``swarmlet master ha NODE...`` and ``swarmlet master single``: move the control plane.

``enable`` (one master on this host -> 3 or 5 on the servers):

1. checks: not already HA (a second ``master ha`` changes nothing), 3 or 5 joined nodes,
   root or sudo, python >= 3.10, the etcd binary's architecture (``plan``);
2. over SSH (the host keys ``join`` stored): upload the etcd binary and the master bundle,
   write the master's home (certificates made here: the etcd CA's member and client
   certificates, and a ``master`` certificate of the cluster CA naming the node's address;
   no CA key leaves this host);
3. start the etcd members and wait until the cluster is healthy (from this host, with this
   host's etcd client certificate);
4. stop the local master, copy its SQLite state into etcd and verify it
   (``master.store.migrate``: every revision, task, node, event, meta);
5. start the masters, list them in ``cluster.json`` (``masters``) and wait for a leader.

A failure before step 5 removes what was installed and restarts the local master: the
SQLite state was never changed. ``disable`` is the way back: stop the masters, copy etcd
into a fresh ``state.db`` (the old one is kept aside) with a term floor above the last
leader's (agents accept the single master's assignments), remove etcd and the masters from
the servers, and start the local master.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

from .. import cluster as clusterlib
from .. import home as homedir
from .. import master_process, pki
from ..master.store import SQLiteStore
from ..master.store.base import Batch
from ..master.store.etcd import EtcdStore
from ..master.store.migrate import copy as copy_store
from ..master import vault
from ..client import Client, call_masters, master_at
from ..provision import probes, ssh
from ..provision import plan as pplan
from ..provision.bundle import MASTER, BundleCache, read_bytes
from ..shipped.exceptions import (ConfigError, ProvisionError, SSHError, StoreError, SwarmletError,
                                  UsageError)
from . import config as haconfig
from . import etcd as E
from . import etcdconf, etcdpki
from . import plan
from .election import current

Say = Callable[[str], None]
CLIENT = ("etcd-client.crt", "etcd-client.key")   # this host's etcd client certificate
HEALTHY_TIMEOUT = 60.0


@dataclass
class Host:
    rec: clusterlib.NodeRecord
    session: Optional[ssh.Session] = None
    facts: Optional[probes.HostFacts] = None
    systemd: bool = False
    prefix: str = "sh -s"


@dataclass
class Done:
    masters: List[Dict[str, str]] = field(default_factory=list)
    leader: str = ""
    migrated: str = ""
    seconds: float = 0.0


def prefix(c: clusterlib.Cluster) -> str:
    return f"/swarmlet/{c.id}"


def admin_etcd(c: clusterlib.Cluster, endpoints: List[str]) -> E.Etcd:
    return E.Etcd(endpoints, etcdconf.TLSFiles(str(c.path(etcdpki.CA_CERT)), str(c.path(CLIENT[0])),
                                              str(c.path(CLIENT[1]))))


def _etcd_binary() -> Path:
    path = shutil.which("etcd")
    if path is None:
        raise ConfigError("no etcd binary on this host to upload to the masters",
                          hint="install Debian's etcd-server (scripts/bootstrap.sh does)")
    return Path(path)


async def _connect(c: clusterlib.Cluster, h: Host, identity: Optional[str]) -> None:
    r = h.rec
    key = identity or r.identity
    keys = [ssh.load_identity(key)] if key else None
    h.session = await ssh.connect(pplan.Target(r.ssh_user, r.ssh_host, r.ssh_port), c.known_hosts,
                                  client_keys=keys)
    out = await h.session.run(probes.PROBE_SCRIPT, timeout=30)
    h.facts = probes.parse(out.stdout)
    h.systemd = pplan.use_systemd(h.facts)
    h.prefix = pplan.shell_prefix(h.facts)


async def _run(h: Host, script: str, what: str, input: Optional[bytes] = None,
               timeout: float = 300) -> str:
    assert h.session is not None
    if input is None:
        r = await h.session.script(script, h.prefix, timeout=timeout)
    else:
        sudo = "sudo -n " if h.prefix.startswith("sudo") else ""
        r = await h.session.run(f"{sudo}sh -c {ssh.sh_quote(script)}", input=input, timeout=timeout)
    if r.exit_status != 0:
        reason = (r.stderr.strip().splitlines() or [f"exit status {r.exit_status}"])[-1]
        raise ProvisionError(h.rec.name, f"{what} failed: {reason}")
    return r.stdout


def _members(hosts: List[Host]) -> List[etcdconf.Member]:
    return [etcdconf.Member(h.rec.name, h.rec.address) for h in hosts]


def _ha_json(c: clusterlib.Cluster, h: Host, hosts: List[Host], ttl: int) -> str:
    home = Path(plan.LAYOUT.home)
    masters = [{"name": x.rec.name, "url": _url(x.rec.address, c.master_port)} for x in hosts]
    cfg = haconfig.HAConfig(
        name=h.rec.name, url=_url(h.rec.address, c.master_port),
        endpoints=[m.client_url for m in _members(hosts)],
        etcd_tls=etcdconf.TLSFiles(str(home / "etcd/ca.crt"), str(home / "etcd/client.crt"),
                                   str(home / "etcd/client.key")),
        prefix=prefix(c), bind="0.0.0.0", port=c.master_port, ttl=ttl, masters=masters)
    return json.dumps(cfg.to_json(home), indent=2)


def _url(address: str, port: int) -> str:
    return f"https://{'[' + address + ']' if ':' in address else address}:{port}"


def _files(c: clusterlib.Cluster, h: Host, hosts: List[Host], ttl: int, eca: pki.KeyPair,
           token: str) -> List[tuple]:
    r = h.rec
    member = etcdpki.member_cert(eca, r.name, [r.address, r.ssh_host])
    client = etcdpki.client_cert(eca, r.name)
    master = pki.issue(c.ca(), "master", "master", [r.address, r.name, "127.0.0.1", "localhost"])
    argv = etcdconf.member_args(
        etcdconf.Member(r.name, r.address), _members(hosts), plan.LAYOUT.data,
        etcdconf.TLSFiles(f"{plan.LAYOUT.home}/etcd/ca.crt", f"{plan.LAYOUT.home}/etcd/member.crt",
                          f"{plan.LAYOUT.home}/etcd/member.key"),
        token, state="new", binary=plan.LAYOUT.etcd)
    meta = json.loads(c.path("cluster.json").read_text())
    meta.pop("masters", None)
    return [
        ("cluster.json", json.dumps(meta, indent=2), "600"),
        ("ca.crt", c.path("ca.crt").read_text(), "644"),
        ("master.crt", master.cert_pem.decode(), "644"),
        ("master.key", master.key_pem.decode(), "600"),
        ("gossip.keys", c.gossip_keys_text(), "600"),
        # the KEK that unwraps the data key of the secrets in etcd (master/vault.py)
        ("vault.key", _vault_key(c), "600"),
        ("ha.json", _ha_json(c, h, hosts, ttl), "600"),
        ("etcd/ca.crt", eca.cert_pem.decode(), "644"),
        ("etcd/member.crt", member.cert_pem.decode(), "644"),
        ("etcd/member.key", member.key_pem.decode(), "600"),
        ("etcd/client.crt", client.cert_pem.decode(), "644"),
        ("etcd/client.key", client.key_pem.decode(), "600"),
        ("etcd/argv", "\n".join(argv), "600"),
    ]


def _vault_key(c: clusterlib.Cluster) -> str:
    """The admin host's vault key (made now for a cluster from before secrets): every HA
    master must unwrap the same data key the migrated store holds."""
    vault.load_key(c.home, create=True)
    return c.path(vault.KEY_FILE).read_text()


def _argv(files: List[tuple]) -> List[str]:
    return next(t for rel, t, _ in files if rel == "etcd/argv").split("\n")


async def _wait_etcd(etcd: E.Etcd, n: int, timeout: float = HEALTHY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            members = await asyncio.to_thread(etcd.members)
            await asyncio.to_thread(etcd.range, "/swarmlet-health")
            if len(members) == n and all(m.get("name") for m in members):
                return
            last = f"{len([m for m in members if m.get('name')])} of {n} members started"
        except StoreError as exc:
            last = str(exc)
        await asyncio.sleep(0.5)
    raise ProvisionError("etcd", f"the etcd cluster did not form within {timeout:.0f}s: {last}",
                         hint="a member that cannot join: check its log "
                              f"({plan.LAYOUT.etcd_log} or journalctl -u {plan.ETCD_UNIT})")


async def _wait_leader(c: clusterlib.Cluster, urls: List[str], timeout: float = 60.0) -> str:
    """Until every master answers and one of them leads; the leader's name."""
    deadline = time.monotonic() + timeout
    peers = [master_at(u, c.master_port) for u in urls]
    answered: Dict[str, str] = {}
    leader = ""
    last: Dict[str, str] = {}
    while time.monotonic() < deadline:
        async with Client.for_cluster(c, timeout=3.0) as client:
            for p in peers:
                try:
                    view = await client.call(p, "GET", "/v1/ha")
                    answered[p.base] = str(view.get("name"))
                    leader = leader or str(view.get("leader") or "")
                except SwarmletError as exc:
                    last[p.base] = str(exc)
            if leader and len(answered) == len(peers):
                await call_masters(client, peers, "GET", "/v1/status", timeout=5.0)
                return leader
        await asyncio.sleep(0.5)
    missing = [p.base for p in peers if p.base not in answered]
    if missing:
        raise ProvisionError("masters", f"{', '.join(missing)} did not answer within {timeout:.0f}s: "
                             f"{last.get(missing[0], '')}",
                             hint=f"see {plan.LAYOUT.master_log} or journalctl -u {plan.MASTER_UNIT} there")
    raise ProvisionError("masters", f"no master was elected within {timeout:.0f}s")


async def enable(c: clusterlib.Cluster, names: List[str], say: Say = lambda m: None,
                 identity: Optional[str] = None, ttl: int = 2) -> Done:
    t0 = time.monotonic()
    if c.masters:
        raise UsageError(f"HA is already on (masters: {', '.join(_names(c))}); nothing changed",
                         hint="to change the set of masters: 'swarmlet master single' first")
    joined = {r.name: r for r in clusterlib.nodes(c)}
    plan.check_choice(names, list(joined))
    binary = _etcd_binary()
    arch = plan.elf_machine(binary.read_bytes()[:20])
    hosts = [Host(joined[n]) for n in names]
    try:
        await asyncio.gather(*(_connect(c, h, identity) for h in hosts))
        for h in hosts:
            assert h.facts is not None
            plan.check_host(h.rec.name, h.facts, arch, pplan.privilege(h.facts))
        say(f"checked {', '.join(names)}: {arch}, python "
            f"{', '.join(sorted({h.facts.python_str for h in hosts if h.facts}))}")
        eca = etcdpki.ensure_ca(c.home, c.id, c.name)
        cl = etcdpki.client_cert(eca, "admin")
        homedir.write_atomic(c.path(CLIENT[0]), cl.cert_pem, 0o644)
        homedir.write_atomic(c.path(CLIENT[1]), cl.key_pem, 0o600)
        etcd_bytes = await asyncio.to_thread(binary.read_bytes)
        cache = BundleCache(c.bundles_dir, kind=MASTER)
        token = f"{c.id}-{int(time.time())}"

        async def install(h: Host) -> List[tuple]:
            assert h.facts is not None
            platform, tags = pplan.wheel_platforms(h.rec.name, h.facts)
            bundle = await cache.get(platform, pplan.python_tag(h.facts), tags)
            data = await asyncio.to_thread(read_bytes, bundle)
            await _run(h, plan.upload_script(plan.LAYOUT.etcd), "uploading etcd", etcd_bytes)
            await _run(h, plan.unpack_script(bundle.id), "uploading the master bundle", data)
            files = _files(c, h, hosts, ttl, eca, token)
            await _run(h, plan.install_script(bundle_id=bundle.id, files=files, wipe_data=True),
                       "installing the master")
            return files

        files = await asyncio.gather(*(install(h) for h in hosts))
        say(f"etcd ({len(etcd_bytes) / 1e6:.0f} MB) and the master bundle on {len(hosts)} nodes")
        await asyncio.gather(*(_run(h, plan.start_script([plan.ETCD_UNIT], h.systemd, _argv(f)),
                                    "starting etcd") for h, f in zip(hosts, files)))
        etcd = admin_etcd(c, [m.client_url for m in _members(hosts)])
        await _wait_etcd(etcd, len(hosts))
        say(f"etcd cluster of {len(hosts)} members healthy (TLS from the etcd CA)")
        stopped = master_process.stop(c)
        try:
            src = SQLiteStore(c.master_dir / "state.db")
            dst = await asyncio.to_thread(EtcdStore, etcd, prefix(c))
            try:
                n = await asyncio.to_thread(copy_store, src, dst)
            finally:
                src.close()
                await asyncio.to_thread(dst.close)
        except BaseException:
            if stopped:
                await master_process.start(c)
            raise
        migrated = (f"{n.services} services ({n.revisions} revisions), {n.tasks} tasks, "
                    f"{n.nodes} nodes, {n.events} events, {n.meta} settings")
        say(f"state moved to etcd and verified: {migrated}")
        await asyncio.gather(*(_run(h, plan.start_script([plan.MASTER_UNIT], h.systemd, _argv(f)),
                                    "starting the master") for h, f in zip(hosts, files)))
        masters = [{"name": h.rec.name, "url": _url(h.rec.address, c.master_port)} for h in hosts]
        _set_masters(c, masters)
        c2 = clusterlib.load(c.home)
        leader = await _wait_leader(c2, c2.master_urls())
        return Done(masters, leader, migrated, time.monotonic() - t0)
    except BaseException:
        if not clusterlib.load(c.home).masters:   # not switched: leave the servers as they were
            await asyncio.gather(*(_undo(h) for h in hosts if h.session is not None),
                                 return_exceptions=True)
            if not master_process.master_running(c):
                try:
                    await master_process.start(c)
                except SwarmletError:
                    pass
        raise
    finally:
        for h in hosts:
            if h.session is not None:
                await h.session.close()


async def _undo(h: Host) -> None:
    try:
        await _run(h, plan.uninstall_script(), "removing the HA parts", timeout=120)
    except SwarmletError:
        pass


def _meta(etcd: E.Etcd, c: clusterlib.Cluster) -> Dict[str, object]:
    st = EtcdStore(etcd, prefix(c))
    try:
        return st.load().meta
    finally:
        st.close()


def _names(c: clusterlib.Cluster) -> List[str]:
    meta = json.loads(c.path("cluster.json").read_text())
    return [str(m.get("name")) for m in meta.get("masters") or []]


def _set_masters(c: clusterlib.Cluster, masters: Optional[List[Dict[str, str]]]) -> None:
    meta = json.loads(c.path("cluster.json").read_text())
    if masters:
        meta["masters"] = masters
    else:
        meta.pop("masters", None)
    homedir.write_atomic(c.path("cluster.json"), json.dumps(meta, indent=2).encode(), 0o600)


async def disable(c: clusterlib.Cluster, say: Say = lambda m: None,
                  identity: Optional[str] = None) -> Done:
    """Back to one master on this host, with everything the HA masters held."""
    t0 = time.monotonic()
    if not c.masters:
        raise UsageError("HA is not on: the master already runs on this host")
    names = _names(c)
    joined = {r.name: r for r in clusterlib.nodes(c)}
    hosts = [Host(joined[n]) for n in names if n in joined]
    eps = [etcdconf.Member(h.rec.name, h.rec.address).client_url for h in hosts]
    etcd = admin_etcd(c, eps)
    try:
        await asyncio.gather(*(_connect(c, h, identity) for h in hosts))
        leading = await asyncio.to_thread(current, etcd, prefix(c))     # NoQuorum: one line
        floor = int((await asyncio.to_thread(_meta, etcd, c)).get("term_floor", 0))
        await asyncio.gather(*(_run(h, plan.stop_script([plan.MASTER_UNIT]), "stopping the master")
                               for h in hosts))
        say(f"masters stopped on {', '.join(names)} (last leader term {leading.term})")
        db = c.master_dir / "state.db"
        if db.exists():
            aside = db.with_name(f"state.db.before-single-{int(time.time())}")
            for suffix in ("", "-wal", "-shm"):
                p = Path(str(db) + suffix)
                if p.exists():
                    p.rename(str(aside) + suffix)
        src = await asyncio.to_thread(EtcdStore, etcd, prefix(c))
        dst = SQLiteStore(db)
        try:
            n = await asyncio.to_thread(copy_store, src, dst)
            # The single master must out-rank the last HA leader at every agent.
            dst.commit(Batch.of(meta={"term_floor": floor + leading.term + 1}))
        finally:
            await asyncio.to_thread(src.close)
            dst.close()
        migrated = (f"{n.services} services ({n.revisions} revisions), {n.tasks} tasks, "
                    f"{n.nodes} nodes, {n.events} events, {n.meta} settings")
        say(f"state moved back to {db} and verified: {migrated}")
        await asyncio.gather(*(_run(h, plan.uninstall_script(), "removing etcd and the master")
                               for h in hosts))
        _set_masters(c, None)
        st = await master_process.start(clusterlib.load(c.home))
        return Done([], f"this host (pid {st.pid})", migrated, time.monotonic() - t0)
    finally:
        for h in hosts:
            if h.session is not None:
                await h.session.close()
