"""Peer identity checks and the denylist (tlsutil), pure: no sockets."""

from __future__ import annotations

import pytest

from swarmlet.shipped.tlsutil import Denylist, Expect, Revoked, check_peer, cert_serial

pytestmark = pytest.mark.unit


def cert(cn="node-1", ou="agent", sans=(("DNS", "node-1"), ("IP Address", "10.0.0.5")), serial="0AB1"):
    return {"subject": ((("organizationName", "swarmlet:c"),), (("organizationalUnitName", ou),),
                        (("commonName", cn),)),
            "subjectAltName": sans, "serialNumber": serial}


AGENT1 = Expect(role="agent", name="node-1", address="10.0.0.5")


def test_the_expected_node_is_accepted():
    assert check_peer(cert(), AGENT1) is None


def test_another_nodes_certificate_is_refused_by_name():
    why = check_peer(cert(cn="node-2"), AGENT1)
    assert why == "its certificate is agent 'node-2', expected agent 'node-1'"


def test_a_certificate_of_another_role_is_refused():
    assert "expected role 'agent'" in check_peer(cert(cn="node-1", ou="cli"), AGENT1)
    assert "expected role 'master'" in check_peer(cert(), Expect(role="master", address="10.0.0.5"))


def test_an_address_missing_from_the_sans_is_refused():
    why = check_peer(cert(), Expect(role="agent", name="node-1", address="10.0.0.9"))
    assert why.startswith("address 10.0.0.9 is not in the certificate of 'node-1'")


def test_addresses_compare_as_addresses():
    c = cert(sans=(("IP Address", "2001:DB8:0:0:0:0:0:1"), ("DNS", "Node-1.Example.")))
    assert check_peer(c, Expect(address="2001:db8::1")) is None
    assert check_peer(c, Expect(address="node-1.example")) is None


def test_revoked_serial_is_refused_even_without_expectations():
    d = Denylist(1, [Revoked(0xAB1, "node-1", "agent", 0)])
    assert "revoked (serial AB1)" in check_peer(cert(serial="0AB1"), None, d)
    assert check_peer(cert(serial="0AB2"), None, d) is None
    assert cert_serial(cert(serial="0AB1")) == 0xAB1


def test_no_certificate_is_refused_when_one_is_expected():
    assert check_peer(None, AGENT1) == "the peer sent no certificate"
    assert check_peer(None, None) is None


def test_denylist_versions_only_move_forward_and_notify():
    d = Denylist()
    seen = []
    d.subscribe(lambda dl: seen.append(dl.version))
    assert d.update(2, [Revoked(5, "a")]) and d.is_revoked(5) and d.is_revoked("05")
    assert not d.update(2, [])          # the same version again: no change
    assert not d.update(1, [])          # an older one: ignored
    assert d.is_revoked(5) and seen == [2]
    assert d.update(3, [Revoked(6, "b")]) and not d.is_revoked(5) and d.names() == ["b"]


def test_denylist_prune_drops_expired_entries_only():
    d = Denylist(1, [Revoked(1, "a", not_after=100.0), Revoked(2, "b", not_after=300.0)])
    assert d.prune(now=200.0) == 1
    assert not d.is_revoked(1) and d.is_revoked(2)


def test_denylist_wire_round_trip_and_bad_input():
    d = Denylist(4, [Revoked(0xFF, "n", "agent", 12.5)])
    version, entries = Denylist.parse_wire(d.to_wire())
    assert version == 4 and entries == d.entries()
    for bad in (None, [], {"version": -1, "revoked": []}, {"version": True, "revoked": []},
                {"version": 1, "revoked": {}}, {"version": 1, "revoked": [{"serial": 5}]},
                {"version": 1, "revoked": [{"serial": "x" * 41}]},
                {"version": 1, "revoked": [{"serial": "zz"}]}):
        with pytest.raises(ValueError):
            Denylist.parse_wire(bad)
