"""Leader election and fencing on a real 3-member etcd cluster (loopback, TLS)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from swarmlet.ha import etcd as E
from swarmlet.ha.election import Elector, current, leader_key
from swarmlet.shipped.exceptions import NoQuorum

REPO = Path(__file__).resolve().parents[3]
PREFIX = "/swarmlet/test"


def _wait(pred, timeout: float, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError(f"not within {timeout}s")


@pytest.fixture
def electors(etcd3):
    made = []

    def make(name: str) -> Elector:
        el = Elector(E.Etcd(etcd3.endpoints, etcd3.client), PREFIX, {"name": name})
        th = threading.Thread(target=el.run, daemon=True)
        th.start()
        made.append((el, th))
        return el

    yield make
    for el, th in made:
        el.stop()
    for el, th in made:
        th.join(10)


def fenced_put(client: E.Etcd, term: int, key: str, value: str) -> bool:
    out = client.txn([E.create_revision_is(leader_key(PREFIX), term)], [E.put(key, value)])
    return bool(out.get("succeeded"))


def test_one_leader_and_the_rest_follow(electors, etcd3):
    els = [electors(f"c{i}") for i in range(3)]
    _wait(lambda: any(e.is_leader() for e in els), 10)
    time.sleep(1.0)   # a few keepalive rounds: still exactly one
    leaders = [e for e in els if e.is_leader()]
    assert len(leaders) == 1
    term = leaders[0].state.term
    assert term > 0
    for e in els:
        if e is not leaders[0]:
            _wait(lambda: e.state.holder is not None, 5)
            assert e.state.term == term and e.state.holder == leaders[0].me


def test_resign_hands_over_at_once_with_a_higher_term(electors, etcd3):
    a = electors("a")
    _wait(a.is_leader, 10)
    b = electors("b")
    _wait(lambda: b.state.holder is not None, 5)
    t1 = a.state.term
    t0 = time.monotonic()
    a.resign()
    _wait(b.is_leader, 5)
    assert time.monotonic() - t0 < 1.5       # deleted key: no lease expiry to wait for
    assert b.state.term > t1
    client = E.Etcd(etcd3.endpoints, etcd3.client)
    assert not fenced_put(client, t1, "/x", "old leader")   # the deposed term is fenced out
    assert fenced_put(client, b.state.term, "/x", "new leader")


def _spawn(name: str, etcd3) -> subprocess.Popen:
    tls = etcd3.client
    return subprocess.Popen([sys.executable, "-m", "tests.tools.elector_proc", name, PREFIX,
                             tls.ca, tls.cert, tls.key, *etcd3.endpoints],
                            stdout=subprocess.PIPE, text=True, cwd=str(REPO),
                            env={**os.environ, "PYTHONPATH": str(REPO)})


def _read_until_leader(proc: subprocess.Popen, timeout: float) -> dict:
    got = {}

    def reader():
        for line in proc.stdout:
            st = json.loads(line)
            if st["leader"]:
                got.update(st)
                return

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    th.join(timeout)
    assert got, "the candidate process never became leader"
    return got


def test_a_killed_leader_is_replaced_within_its_ttl(electors, etcd3):
    proc = _spawn("doomed", etcd3)
    try:
        first = _read_until_leader(proc, 15)
        follower = electors("heir")
        _wait(lambda: follower.state.holder is not None, 5)
        os.kill(proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        _wait(follower.is_leader, 6)
        took = time.monotonic() - killed
        assert took <= follower.ttl + 1.5, took
        assert follower.state.term > first["term"]
    finally:
        proc.kill()
        proc.wait(5)


def test_a_paused_leader_steps_down_by_itself_and_cannot_write(electors, etcd3):
    """SIGSTOP the leader past its TTL (a paused VM, a long GC); on SIGCONT it must find
    itself deposed before it acts, and a write with its old term fails."""
    proc = _spawn("paused", etcd3)
    lines = []
    try:
        first = _read_until_leader(proc, 15)
        heir = electors("heir")
        _wait(lambda: heir.state.holder is not None, 5)
        os.kill(proc.pid, signal.SIGSTOP)
        _wait(heir.is_leader, 6)
        os.kill(proc.pid, signal.SIGCONT)
        th = threading.Thread(target=lambda: lines.append(json.loads(proc.stdout.readline())),
                              daemon=True)
        th.start()
        th.join(5)
        assert lines and lines[0]["leader"] is False and lines[0]["term"] == first["term"]
        client = E.Etcd(etcd3.endpoints, etcd3.client)
        assert not fenced_put(client, first["term"], "/y", "from the paused leader")
        assert heir.is_leader()
    finally:
        proc.kill()
        proc.wait(5)


def test_quorum_loss_deposes_the_leader_within_its_ttl_and_reads_fail_fast(electors, etcd3):
    a = electors("a")
    _wait(a.is_leader, 10)
    etcd3.kill("m1")
    etcd3.kill("m2")
    lost = time.monotonic()
    _wait(lambda: not a.is_leader(), a.ttl + 0.5)
    assert time.monotonic() - lost <= a.ttl + 0.5
    client = E.Etcd(etcd3.endpoints, etcd3.client, timeout=1.0)
    t0 = time.monotonic()
    with pytest.raises(NoQuorum, match=r"no quorum: 1 of 3 masters reachable"):
        current(client, PREFIX)
    assert time.monotonic() - t0 < 3.0
    etcd3.start("m1")
    _wait(a.is_leader, 15)     # a majority again: someone leads (here: the only candidate)


def test_the_leading_master_moves_etcds_raft_leader_off_its_own_machine(etcd3):
    """``ha/apart.step`` for the member named like the master: if it leads raft, leadership
    goes to another member that answers (one kill then costs one election, not two)."""
    from swarmlet.ha import apart
    client = E.Etcd(etcd3.endpoints, etcd3.client)
    names = {str(m["ID"]): m["name"] for m in client.members()}

    def raft_leader() -> str:
        return names[str(client.status(0)["leader"])]

    lead = raft_leader()
    other = next(n for n in names.values() if n != lead)
    assert apart.step(client, other) is None and raft_leader() == lead   # not ours: left alone
    moved = apart.step(client, lead)
    assert moved is not None and names[moved] != lead
    _wait(lambda: raft_leader() == names[moved], 5)
    assert apart.step(client, lead) is None                           # now apart: nothing to do
    client.close()
