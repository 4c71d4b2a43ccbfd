"""The cluster CA issues role-bearing certificates that chain to it, and
secrets are written 0600 in a 0700 home."""

from __future__ import annotations

import os
import stat

import pytest
from cryptography import x509

from swarmlet import home, pki

pytestmark = pytest.mark.unit


def test_leaf_chains_to_ca_and_carries_role_and_sans():
    ca = pki.create_ca("c1")
    leaf = pki.issue(ca, "node-1", "agent", sans=["172.18.0.2", "node-1.local"])
    cert = x509.load_pem_x509_certificate(leaf.cert_pem)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    cert.verify_directly_issued_by(ca_cert)
    assert pki.cert_role(leaf.cert_pem) == "agent"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["172.18.0.2"]
    assert "node-1.local" in san.get_values_for_type(x509.DNSName)


def test_leaf_from_another_ca_does_not_verify():
    leaf = pki.issue(pki.create_ca("a"), "x", "cli")
    other = x509.load_pem_x509_certificate(pki.create_ca("b").cert_pem)
    with pytest.raises(Exception):
        x509.load_pem_x509_certificate(leaf.cert_pem).verify_directly_issued_by(other)


def test_unknown_role_is_refused():
    with pytest.raises(ValueError):
        pki.issue(pki.create_ca("a"), "x", "root")


def test_secrets_are_0600_in_a_0700_home(tmp_path, monkeypatch):
    monkeypatch.setenv("SWARMLET_HOME", str(tmp_path / "h"))
    target = home.home() / "ca.key"
    home.write_atomic(target, b"secret")
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(home.home()).st_mode) == 0o700
    assert target.read_bytes() == b"secret"
    assert [p.name for p in target.parent.iterdir()] == ["ca.key"]  # no temp file left
