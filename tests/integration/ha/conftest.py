"""Fixtures for the HA tier: real etcd processes on loopback (``tests/tools/etcd.py``)."""

from __future__ import annotations

import pytest

from tests.tools.etcd import EtcdCluster


@pytest.fixture(scope="session")
def etcd1(tmp_path_factory):
    """One single-member etcd for the session: tests use their own key prefixes."""
    c = EtcdCluster(tmp_path_factory.mktemp("etcd1"), 1)
    c.start()
    yield c
    c.stop()


@pytest.fixture
def etcd3(tmp_path):
    """A fresh 3-member cluster per test: tests kill and pause its members."""
    c = EtcdCluster(tmp_path / "etcd3", 3)
    c.start()
    yield c
    c.stop()
