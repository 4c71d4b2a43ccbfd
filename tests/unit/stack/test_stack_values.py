"""Durations and sizes read the way Docker and Compose write them."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from swarmlet.shipped.exceptions import StackFileError
from swarmlet.stack.loader import Mark, Node
from swarmlet.stack.values import as_bytes, as_duration, parse_duration

pytestmark = pytest.mark.unit


def node(value):
    return Node(value, Mark("f", 1, 1), "x")


@pytest.mark.parametrize("text, seconds", [
    ("1m30s", 90.0), ("500ms", 0.5), ("10s", 10.0), ("1h", 3600.0), ("1.5s", 1.5), ("2h45m", 9900.0),
    ("250us", 0.00025), ("0", 0.0), (".5s", 0.5),
])
def test_durations(text, seconds):
    assert as_duration(node(text)) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["10", "1x", "s", "", "-1s", "1 m", True, [], -3])
def test_bad_durations(value):
    with pytest.raises(StackFileError):
        as_duration(node(value))


@given(h=st.integers(0, 99), m=st.integers(0, 59), s=st.integers(0, 59), ms=st.integers(0, 999))
def test_duration_parts_add_up(h, m, s, ms):
    text = f"{h}h{m}m{s}s{ms}ms"
    assert parse_duration(text) == pytest.approx(h * 3600 + m * 60 + s + ms / 1000)


@pytest.mark.parametrize("text, size", [
    ("512M", 512 * 2 ** 20), ("512m", 512 * 2 ** 20), ("1g", 2 ** 30), ("1GB", 2 ** 30), ("64k", 65536),
    ("100b", 100), ("100", 100), (4096, 4096), ("1.5g", 3 * 2 ** 29),
])
def test_sizes(text, size):
    assert as_bytes(node(text)) == size


@pytest.mark.parametrize("value", ["lots", "12X", "-1M", "0", 0, 1.5, False, "M"])
def test_bad_sizes(value):
    with pytest.raises(StackFileError):
        as_bytes(node(value))
