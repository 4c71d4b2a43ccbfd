"""The master's collector settings, and that its pauses are timed and the long ones logged."""

from __future__ import annotations

import gc
import logging

import pytest

from swarmlet.master import gctune

pytestmark = pytest.mark.unit


@pytest.fixture
def restore():
    before, callbacks = gc.get_threshold(), list(gc.callbacks)
    yield
    gc.set_threshold(*before)
    gc.callbacks[:] = callbacks


def test_install_sets_thresholds_once(restore):
    gctune.install()
    gctune.install()
    assert gc.get_threshold() == gctune.THRESHOLDS
    assert gc.callbacks.count(gctune._callback) == 1


def test_a_long_full_collection_is_counted_and_logged(restore, monkeypatch, caplog):
    gctune.install()
    monkeypatch.setattr(gctune, "LONG", 0.0)     # every pause counts as long here
    before = gctune.stats()
    with caplog.at_level(logging.WARNING, logger="swarmlet.master.gc"):
        gc.collect(2)
    after = gctune.stats()
    assert after["count"][2] == before["count"][2] + 1
    assert after["seconds"][2] >= before["seconds"][2]
    assert any("generation 2" in r.getMessage() for r in caplog.records)
