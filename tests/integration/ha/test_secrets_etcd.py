"""Secrets on the HA store: a master on real etcd seals values, a migration from SQLite keeps
them sealed, and another master (a new leader, a restart) on the same etcd opens them with
the same vault key; etcd holds no value in clear, and a master without the key cannot open."""

from __future__ import annotations

import base64
import secrets as random
import uuid

import pytest

from swarmlet.client import Client
from swarmlet.ha import etcd as E
from swarmlet.master.daemon import Master
from swarmlet.master.store import SQLiteStore
from swarmlet.master.store.etcd import EtcdStore
from swarmlet.master.store.migrate import copy
from swarmlet.master.vault import META_KEY
from swarmlet.shipped.exceptions import ConfigError
from swarmlet.shipped.models import SecretRef, TaskSpec
from tests.integration.agent.conftest import pki_files  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration
KEK = bytes(range(32))


def _client(pki_files):
    return Client(pki_files["master"] + ".crt", pki_files["master"] + ".key", pki_files["ca"])


def _task(name, version):
    return TaskSpec("web.1.a", "web", 1, 1, "img:1", secrets=(SecretRef(name, name, version),))


async def _master(store, pki_files, key=KEK):
    m = Master(store, _client(pki_files), cluster={"id": "c1", "name": "t"}, vault_key=key)
    await m.start()
    return m


async def test_values_sealed_in_sqlite_migrate_to_etcd_and_open_on_another_master(
        tmp_path, etcd1, pki_files):
    value = ("pw-" + random.token_hex(16)).encode()
    src = SQLiteStore(tmp_path / "state.db")
    m = await _master(src, pki_files)
    await m.secretbook.create("secret", "db-password", value)
    await m.secretbook.rotate("secret", "db-password", value + b"-2")
    await m.close()
    prefix = f"/swarmlet/{uuid.uuid4().hex[:8]}"
    etcd = E.Etcd(etcd1.endpoints, etcd1.client)
    dst = EtcdStore(etcd, prefix)
    assert copy(src, dst).secrets == 2
    src.close()
    # etcd holds ciphertext and the wrapped data key only
    raw = b"".join(E.unb64(kv["value"]) for kv in etcd.range(prefix, E.prefix_end(prefix)).get("kvs", []))
    assert value not in raw and base64.b64encode(value) not in raw and b"db-password" in raw
    for leader in range(2):        # one term's master, then the next one's (a failover)
        m = await _master(dst, pki_files)
        vals = {v.version: base64.b64decode(v.data) for v in
                m.secretbook.values_for([_task("db-password", 1)]) +
                m.secretbook.values_for([_task("db-password", 2)])}
        assert vals == {1: value, 2: value + b"-2"}
        assert m.meta[META_KEY]["kek"]            # the data key is the one made at the start
        await m.close()
    with pytest.raises(ConfigError, match="does not open the cluster's data key"):
        await _master(dst, pki_files, key=bytes(32))
    m = Master(dst, _client(pki_files), cluster={"id": "c1"})        # no vault.key at all
    await m.start()
    assert m.secretbook.values_for([_task("db-password", 2)]) == ()
    assert m.secretbook.rows("secret")[0]["version"] == 2              # metadata still reads
    await m.close()
    dst.close()
