"""Fixtures for the HA tier: real etcd processes on loopback (``tests/tools/etcd.py``)."""

from __future__ import annotations

import pytest

from tests.tools.etcd import EtcdCluster


@pytest.fixture
def etcd1(tmp_path):
    c = EtcdCluster(tmp_path / "etcd1", 1)
    c.start()
    yield c
    c.stop()


@pytest.fixture
def etcd3(tmp_path):
    c = EtcdCluster(tmp_path / "etcd3", 3)
    c.start()
    yield c
    c.stop()
