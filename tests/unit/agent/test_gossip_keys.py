"""The agent's gossip key file: parsing what ``PUT /v1/gossip/keys`` sends, writing it
atomically 0600, and answers that carry fingerprints, never keys."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest

from swarmlet.shipped.exceptions import ConfigError, ProtocolError
from swarmlet_agent import gossipkeys
from swarmlet_agent.config import load_gossip_keys

pytestmark = pytest.mark.unit

K1, K2 = os.urandom(32), os.urandom(32)


def b64(k: bytes) -> str:
    return base64.b64encode(k).decode()


@pytest.mark.parametrize("body", [
    None, [], {}, {"keys": []}, {"keys": "x"}, {"keys": [b64(b"short")]}, {"keys": ["!!"]},
    {"keys": [1]}, {"keys": [b64(K1)] * 9},
])
def test_malformed_bodies_are_refused(body):
    with pytest.raises(ProtocolError):
        gossipkeys.parse(body)


def test_parse_keeps_order_and_drops_duplicates():
    assert gossipkeys.parse({"keys": [b64(K2), b64(K1), b64(K2)]}) == [K2, K1]


def test_write_is_atomic_and_0600(tmp_path):
    path = tmp_path / "gossip.keys"
    path.write_text(json.dumps([b64(K1)]))
    os.chmod(path, 0o644)
    gossipkeys.write(str(path), [K2, K1])
    assert load_gossip_keys(str(path)) == [K2, K1]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["gossip.keys"]     # no temp file left
    with pytest.raises(ConfigError):
        gossipkeys.write(str(tmp_path / "missing-dir" / "gossip.keys"), [K1])


def test_summaries_name_fingerprints_only():
    s = gossipkeys.summary([K1, K2], live=True)
    assert s == {"keys": [gossipkeys.fingerprint(K1), gossipkeys.fingerprint(K2)],
                 "primary": gossipkeys.fingerprint(K1), "live": True}
    assert b64(K1) not in json.dumps(s) and K1.hex() not in json.dumps(s)
