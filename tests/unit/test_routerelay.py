"""The pure parts of relayed routes: who forwards to whom, and the signed envelope.

- ``relaytree``: the master's seeds cover every intended name in contiguous
  ranges; following ``children`` from the seeds reaches every name each
  forwarder knows exactly once, within ``MAX_HOPS``, whatever the fanout;
  a name missing from a forwarder's view is not reached (and nothing loops).
- ``relayenvelope``: an envelope the master sealed opens to the same update for
  any node; one with a flipped byte, another signature, a signer of role agent,
  from another CA, revoked, expired or unknown, or a whole table, is refused.
- ``relaypush.groups``: only groups of at least the threshold are relayed.
"""

from __future__ import annotations

import base64
import json
from typing import Dict, List, Tuple

import pytest
from hypothesis import given, settings, strategies as st

from swarmlet import pki
from swarmlet.master.relaypush import groups
from swarmlet.shipped.gossip.identity import Identity
from swarmlet.shipped.models import RouteBackend, RouteChange, RoutesUpdate, to_wire
from swarmlet.shipped.relayenvelope import MasterCerts, RelayRefused, seal
from swarmlet.shipped.relaytree import MAX_HOPS, children, chunks, relay_fields, seeds, view_of
from swarmlet.shipped.tlsutil import Denylist, Revoked

pytestmark = pytest.mark.unit


# --- the tree ----------------------------------------------------------------------------

def test_chunks_are_contiguous_and_even() -> None:
    assert chunks(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert chunks(2, 8) == [(0, 1), (1, 2)]
    assert chunks(0, 8) == []


def _walk(view: Dict[str, Tuple[str, int]], intended: List[str], k: int, fanout: int,
          views: Dict[str, Dict[str, Tuple[str, int]]] = None) -> Dict[str, int]:
    """name -> how many times it received the envelope, following the tree from the seeds."""
    got: Dict[str, int] = {}
    todo = [(s, lo, hi, 0) for s, lo, hi in seeds(intended, k)]
    while todo:
        me, lo, hi, hops = todo.pop()
        assert hops <= MAX_HOPS
        got[me] = got.get(me, 0) + 1
        mine = (views or {}).get(me, view)
        for (name, _a, _p), clo, chi in children(mine, me, lo, hi, fanout):
            assert lo <= clo <= chi <= hi and not clo <= me <= chi   # strictly inside, not me
            todo.append((name, clo, chi, hops + 1))
    return got


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 400), k=st.integers(1, 10), fanout=st.integers(2, 10))
def test_the_tree_reaches_every_node_once(n: int, k: int, fanout: int) -> None:
    names = [f"node-{i:04d}" for i in range(n)]
    view = {name: ("127.0.0.1", 7443) for name in names}
    got = _walk(view, names, k, fanout)
    assert got == {name: 1 for name in names}
    sorted_view = view_of([{"name": n, "state": "alive", "meta": {"address": "127.0.0.1",
                                                                 "api_port": 7443}} for n in names])
    assert _walk(sorted_view, names, k, fanout) == got      # bisect over the sorted names


def test_a_node_missing_from_a_forwarders_view_is_not_reached() -> None:
    names = [f"n{i:03d}" for i in range(100)]
    full = {name: ("127.0.0.1", 7443) for name in names}
    partial = {n: a for n, a in full.items() if n != "n050"}
    got = _walk(partial, names, 3, 4)        # seeds n000, n034, n067
    assert "n050" not in got and len(got) == 99 and set(got.values()) == {1}


def test_seeds_split_the_sorted_names() -> None:
    out = seeds(["c", "a", "b", "e", "d"], 2)
    assert out == [("a", "a", "c"), ("d", "d", "e")]


def test_view_takes_alive_members_with_an_api_address() -> None:
    members = [{"name": "a", "state": "alive", "meta": {"address": "10.0.0.1", "api_port": 7443}},
               {"name": "b", "state": "suspect", "meta": {"address": "10.0.0.2", "api_port": 7443}},
               {"name": "c", "state": "alive", "meta": {"address": "10.0.0.3"}},
               {"name": "d", "state": "alive", "meta": {"address": "10.0.0.4", "api_port": True}}]
    assert view_of(members) == {"a": ("10.0.0.1", 7443)}


@pytest.mark.parametrize("bad", [{"lo": "", "hi": "b"}, {"lo": "a", "hi": "b", "fanout": 0},
                                 {"lo": "a", "hi": "b", "budget": -1},
                                 {"lo": "a", "hi": "b", "hops": MAX_HOPS + 1},
                                 {"lo": "a", "hi": 3}, {"lo": "a", "hi": "b", "fanout": True}])
def test_malformed_relay_fields_are_refused(bad) -> None:
    with pytest.raises(RelayRefused) as e:
        relay_fields(bad)
    assert e.value.status == 400


# --- the envelope -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster():
    ca = pki.create_ca("relay")
    master = pki.issue(ca, "master", "master")
    agent = pki.issue(ca, "node-1", "agent")
    other = pki.create_ca("other")
    foreign = pki.issue(other, "master", "master")
    return ca, master, agent, foreign


def _ident(kp: pki.KeyPair) -> Identity:
    return Identity.from_pem(kp.cert_pem, kp.key_pem)


def _update() -> bytes:
    u = RoutesUpdate("", 8, epoch=3, base=7, changes=(RouteChange("web/8080/8080", add=(
        RouteBackend("web.1", "node-2", "10.0.0.2", 20001),)),), term=2)
    wire = to_wire(u)
    del wire["node"]
    return json.dumps(wire, separators=(",", ":")).encode()


def _certs(ca: pki.KeyPair, master: pki.KeyPair = None) -> MasterCerts:
    mc = MasterCerts(ca.cert_pem)
    if master is not None:
        assert mc.learn(_der(master)) is not None
    return mc


def _der(kp: pki.KeyPair) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    return x509.load_pem_x509_certificate(kp.cert_pem).public_bytes(serialization.Encoding.DER)


def test_a_sealed_update_opens_for_any_node(cluster) -> None:
    ca, master, _, _ = cluster
    env = seal(_update(), _ident(master))
    for node in ("node-1", "node-2"):
        u, raw = _certs(ca, master).open(env, node)
        assert raw == _update()
        assert u.node == node and u.version == 8 and u.base == 7 and u.term == 2
    # the certificate may ride along instead of being known already
    u, _ = _certs(ca).open(seal(_update(), _ident(master), with_cert=True), "node-1")
    assert u.version == 8


def _refused(mc: MasterCerts, env, status: int = 403) -> str:
    with pytest.raises(RelayRefused) as e:
        mc.open(env, "node-1")
    assert e.value.status == status, str(e.value)
    return str(e.value)


def test_forged_envelopes_are_refused(cluster) -> None:
    ca, master, agent, foreign = cluster
    mc = _certs(ca, master)
    env = seal(_update(), _ident(master))
    # a changed update (one byte) or another signature
    assert "signature" in _refused(mc, dict(env, update=env["update"].replace('"version":8',
                                                                                '"version":9')))
    sig = bytearray(base64.b64decode(env["sig"]))
    sig[5] ^= 1
    assert "signature" in _refused(mc, dict(env, sig=base64.b64encode(bytes(sig)).decode()))
    # signed by an agent: its certificate is never a master's
    by_agent = seal(_update(), _ident(agent))
    assert "knows" in _refused(mc, by_agent)
    assert "role" in _refused(mc, seal(_update(), _ident(agent), with_cert=True))
    assert mc.learn(_der(agent)) is None
    # signed by a master of another cluster
    assert "CA" in _refused(mc, seal(_update(), _ident(foreign), with_cert=True))
    # a cert that is not the signer's
    assert "match" in _refused(_certs(ca), dict(env, cert=base64.b64encode(_der(agent)).decode()))
    # garbled
    for bad in ("nope", [], {"update": 1, "sig": "", "signer": ""},
                dict(env, sig="***"), dict(env, signer="zz")):
        _refused(mc, bad, 400)


def test_a_whole_table_is_never_relayed(cluster) -> None:
    ca, master, _, _ = cluster
    wire = json.loads(_update())
    wire["base"] = 0
    env = seal(json.dumps(wire).encode(), _ident(master))
    assert "deltas" in _refused(_certs(ca, master), env, 400)


def test_a_revoked_or_expired_master_is_refused(cluster) -> None:
    ca, master, _, _ = cluster
    from swarmlet.pki import cert_info
    info = cert_info(master.cert_pem)
    mc = _certs(ca, master)
    deny = Denylist()
    mc.follow(deny)
    env = seal(_update(), _ident(master))
    mc.open(env, "node-1")
    deny.update(1, [Revoked(info.serial, "master", "master")])
    assert "knows" in _refused(mc, env)
    assert mc.learn(_der(master)) is None               # nor learnt again from a handshake
    assert "revoked" in _refused(mc, seal(_update(), _ident(master), with_cert=True))
    late = _certs(ca, master)
    with pytest.raises(RelayRefused, match="not valid now"):
        late.open(env, "node-1", now=info.not_after + 3600)


def test_groups_relay_only_at_the_threshold() -> None:
    bases = {f"n{i}": (1 if i < 40 else 2) for i in range(45)}
    relay, direct = groups(bases, 32)
    assert list(relay) == [1] and len(relay[1]) == 40 and len(direct) == 5
    assert groups(bases, 0) == ({}, sorted(bases))


def test_a_node_whose_polls_report_it_behind_its_ack_is_believed_on_the_second() -> None:
    """An agent that relays may claim a node holds what it does not: the node's own poll
    answers correct it (twice in a row: one answer may predate a push)."""
    from types import SimpleNamespace

    from swarmlet.master.pusher import Pusher, _Prepared
    fake = SimpleNamespace(epoch=5, _tables={3: None, 4: None, 7: None},
                           m=SimpleNamespace(counters={}))
    prep = _Prepared(routes_acked=7)
    Pusher._check_reported(fake, prep, {"version": 3, "epoch": 5})
    assert prep.routes_acked == 7                        # once: maybe an answer made before it
    Pusher._check_reported(fake, prep, {"version": 3, "epoch": 5})
    assert prep.routes_acked == 3 and fake.m.counters["routes_doubted"] == 1
    prep.routes_acked = 7
    for report in ({"version": 3, "epoch": 5}, {"version": 7, "epoch": 5},
                   {"version": 3, "epoch": 5}):     # not twice in a row
        Pusher._check_reported(fake, prep, report)
    assert prep.routes_acked == 7
    Pusher._check_reported(fake, prep, {"version": 3, "epoch": 6})   # another run: ignored
    Pusher._check_reported(fake, prep, {"version": 3, "epoch": 6})
    assert prep.routes_acked == 7
    prep.routes_acked = 7
    prep.routes_doubt = None
    for _ in range(2):
        Pusher._check_reported(fake, prep, {"version": 2, "epoch": 5})   # a table not kept
    assert prep.routes_acked is None                     # then the whole table
