"""The vault: AES-GCM under the cluster data key, bound to purpose, name and version; the
data key wrapped by the key-encrypting key; the size cap."""

from __future__ import annotations

import pytest

from swarmlet.master import vault as V
from swarmlet.shipped.exceptions import ConfigError, StoreError, UsageError

pytestmark = pytest.mark.unit
KEK = bytes(range(32))


def _vault(cluster="c1"):
    v, meta = V.Vault.unlock(KEK, None, cluster)
    return v, meta


def test_seal_and_open_round_trip_and_ciphertext_shows_nothing():
    v, _ = _vault()
    value = b"hunter2-" + bytes(range(256))
    sealed = v.seal("secret", "db-password", 3, value)
    assert v.open("secret", "db-password", 3, sealed) == value
    assert b"hunter2" not in sealed.encode() and "hunter2" not in sealed
    assert sealed.startswith("v1." + v.kid + ".")
    assert v.seal("secret", "db-password", 3, value) != sealed       # a fresh nonce each time


@pytest.mark.parametrize("where", [("secret", "other", 3), ("secret", "db-password", 4),
                                   ("config", "db-password", 3)])
def test_a_ciphertext_moved_to_another_name_version_or_kind_does_not_open(where):
    v, _ = _vault()
    sealed = v.seal("secret", "db-password", 3, b"pw")
    with pytest.raises(StoreError, match="does not open"):
        v.open(*where, sealed)


def test_a_tampered_ciphertext_does_not_open():
    v, _ = _vault()
    sealed = v.seal("secret", "x", 1, b"pw")
    head, body = sealed.rsplit(".", 1)
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    with pytest.raises(StoreError):
        v.open("secret", "x", 1, f"{head}.{flipped}")
    with pytest.raises(StoreError, match="malformed"):
        v.open("secret", "x", 1, "garbage")


def test_the_data_key_is_stored_only_wrapped_and_reopens_with_the_kek():
    v, meta = _vault()
    sealed = v.seal("secret", "x", 1, b"pw")
    assert set(meta) == {"kid", "kek", "cluster", "dek"} and meta["kid"] == v.kid
    again, nothing = V.Vault.unlock(KEK, meta, "c1")
    assert nothing is None and again.open("secret", "x", 1, sealed) == b"pw"
    # the cluster the key was made for is kept (init --force makes a new id)
    assert V.Vault.unlock(KEK, meta, "new-id")[0].open("secret", "x", 1, sealed) == b"pw"
    with pytest.raises(ConfigError, match="does not open the cluster's data key"):
        V.Vault.unlock(bytes(32), meta, "c1")


def test_another_clusters_vault_cannot_open_its_values():
    a, _ = _vault("c1")
    b, _ = _vault("c2")
    with pytest.raises(StoreError):
        b.open("secret", "x", 1, a.seal("secret", "x", 1, b"pw"))


def test_fingerprint_is_keyed():
    a, _ = _vault()
    b, _ = _vault()          # another data key
    assert a.fingerprint("secret", "x", b"pw") == a.fingerprint("secret", "x", b"pw")
    assert a.fingerprint("secret", "x", b"pw") != b.fingerprint("secret", "x", b"pw")
    assert a.fingerprint("secret", "x", b"pw") != a.fingerprint("secret", "y", b"pw")
    import hashlib
    assert a.fingerprint("secret", "x", b"pw") != hashlib.sha256(b"pw").hexdigest()


def test_size_cap():
    V.check_size("secret", "x", V.MAX_SIZE)
    with pytest.raises(UsageError, match=r"secret 'x' is 500.0 KiB|secret 'x' is 501 KiB|at most 500 KiB"):
        V.check_size("secret", "x", V.MAX_SIZE + 1024)


def test_load_key_makes_one_0600_and_reads_it_back(tmp_path):
    assert V.load_key(tmp_path) is None
    key = V.load_key(tmp_path, create=True)
    assert len(key) == 32 and V.load_key(tmp_path) == key
    assert (tmp_path / "vault.key").stat().st_mode & 0o777 == 0o600
    (tmp_path / "vault.key").write_text("bad")
    with pytest.raises(ConfigError, match="32-byte"):
        V.load_key(tmp_path)


def test_repr_never_shows_the_key():
    v, _ = _vault()
    assert "Vault(kid=" in repr(v) and str(KEK) not in repr(v)
