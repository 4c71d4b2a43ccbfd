"""The signer: lifetimes, CSR signing that ignores what the CSR asks for, the ledger, revocation."""

from __future__ import annotations

import os
import stat
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from swarmlet import cluster as clusterlib
from swarmlet import pki
from swarmlet.signer import LocalSigner

pytestmark = pytest.mark.unit


@pytest.fixture
def home(tmp_path):
    h = tmp_path / "home"
    h.mkdir(mode=0o700)
    clusterlib.init(name="t", home=h)
    return h


def _csr(cn: str, sans=()):
    key = ec.generate_private_key(ec.SECP256R1())
    b = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                   x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "master")]))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), False)
    return key, b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def test_leaf_lifetimes_are_short_and_per_role(home):
    s = LocalSigner(home)
    for role, days in (("agent", 30), ("master", 90), ("cli", 90)):
        info = pki.cert_info(s.issue("x", role).cert_pem)
        assert abs(info.lifetime - days * 86400) < 60, (role, info.lifetime)


def test_csr_gets_the_signers_identity_not_its_own(home):
    key, csr = _csr("master", sans=("127.0.0.1", "evil"))
    cert = x509.load_pem_x509_certificate(LocalSigner(home).sign_csr(csr, "node-1", "agent", ["10.0.0.5"]))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "node-1"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "agent"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["node-1"]
    assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    assert (cert.public_key().public_bytes(serialization.Encoding.DER, pub)
            == key.public_key().public_bytes(serialization.Encoding.DER, pub))


def test_a_forged_csr_is_refused(home):
    _, csr = _csr("n")
    bad = csr.replace(csr.splitlines()[3], csr.splitlines()[3][:-4] + b"AAAA")
    with pytest.raises(ValueError):
        LocalSigner(home).sign_csr(bad, "n", "agent")


def test_revoke_takes_every_live_cert_of_that_node_and_only_those(home):
    s = LocalSigner(home)
    a1, a2 = s.issue("node-1", "agent"), s.issue("node-1", "agent")
    other, cli = s.issue("node-2", "agent"), s.issue("node-1", "cli")
    before = s.denylist().version
    out = s.revoke("node-1")
    assert {r.serial for r in out} == {pki.cert_info(k.cert_pem).serial for k in (a1, a2)}
    d = s.denylist()
    assert d.version == before + 1
    assert d.is_revoked(pki.cert_info(a1.cert_pem).serial)
    assert not d.is_revoked(pki.cert_info(other.cert_pem).serial)
    assert not d.is_revoked(pki.cert_info(cli.cert_pem).serial)
    assert s.revoke("node-1") == [] and s.denylist().version == before + 1   # idempotent


def test_expired_entries_leave_the_denylist_and_the_ledger(home):
    now = [time.time()]
    s = LocalSigner(home, clock=lambda: now[0])
    kp = s.issue("node-1", "agent", days=1)
    s.revoke("node-1")
    assert len(s.denylist()) == 1
    now[0] += 2 * 86400          # expired: OpenSSL refuses it anyway
    assert len(s.denylist()) == 0
    s.issue("node-3", "agent")   # any write drops entries expired for over a day
    serial = f"{pki.cert_info(kp.cert_pem).serial:X}"
    assert serial not in (home / "ca.index.json").read_text()


def test_ledger_and_every_key_file_are_0600(home):
    c = clusterlib.load(home)
    c.issue_agent("node-1", ["10.0.0.5"])
    for name in ("ca.key", "master.key", "cli.key", "gossip.keys", "ca.index.json", "ca.index.lock",
                 "cluster.json", "known_hosts"):
        assert stat.S_IMODE(os.stat(home / name).st_mode) == 0o600, name
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700


def test_needs_renewal_at_half_life_and_for_overlong_certs():
    day = 86400.0
    assert not pki.needs_renewal(16 * day, 0.0, 30)
    assert pki.needs_renewal(14 * day, 0.0, 30)
    assert pki.needs_renewal(825 * day, 0.0, 30)    # an old long-lived cert is replaced


def test_local_master_and_cli_certs_renew_when_due(home):
    c = clusterlib.load(home)
    old = pki.cert_info(c.path("master.crt").read_bytes())
    assert c.renew_local_certs() == []
    assert c.renew_local_certs(now=time.time() + 50 * 86400) == ["master", "cli"]
    new = pki.cert_info(c.path("master.crt").read_bytes())
    assert new.serial != old.serial and set(new.sans) == set(old.sans)
    assert stat.S_IMODE(os.stat(home / "master.key").st_mode) == 0o600
