"""Histogram, req/s meter and Prometheus text, with a fake clock."""

from __future__ import annotations

import re

import pytest

from swarmlet.shipped.lb import Backend, LBConfig
from swarmlet.shipped.lb.metrics import Histogram, LBMetrics, RateMeter, render
from swarmlet.shipped.lb.routing import Router

pytestmark = pytest.mark.unit


def test_histogram_is_cumulative():
    h = Histogram((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 3.0):
        h.observe(v)
    assert h.cumulative() == [("0.1", 2), ("1.0", 3), ("+Inf", 4)]
    assert h.count == 4 and h.sum == pytest.approx(3.65)


def test_rate_meter_counts_complete_seconds_only():
    m = RateMeter(window=5)
    for i in range(40):
        m.add(100.0 + i * 0.1)          # 10 per second for 4 s
    assert m.rate(104.5) == pytest.approx(40 / 4)
    assert m.rate(200.0) == 0.0          # long quiet: window emptied


class FakeLB:
    def __init__(self, name):
        self.name = name
        self.metrics = LBMetrics()
        self.router = Router(LBConfig())
        self.router.set_backends([Backend("10.0.0.1", 80, name="web.1")], 0.0)


def test_render_merges_listeners_into_valid_text():
    a, b = FakeLB("0.0.0.0:80"), FakeLB("0.0.0.0:443")
    a.metrics.answered(200, 0.002, 1.0)
    b.metrics.answered(502, 0.3, 1.0)
    text = render([a, b], 2.0)
    assert text.count("# TYPE swarmlet_lb_requests_total counter") == 1
    assert 'swarmlet_lb_requests_total{listener="0.0.0.0:80",code="200"} 1' in text
    assert 'swarmlet_lb_requests_total{listener="0.0.0.0:443",code="502"} 1' in text
    assert ('swarmlet_lb_backend_up{listener="0.0.0.0:80",backend="10.0.0.1:80",'
            'name="web.1"} 1') in text
    sample = re.compile(r'^[a-z_]+\{[^}]*\} [0-9.e+-]+$')
    for line in text.splitlines():
        assert line.startswith("# ") or sample.match(line), line


def test_rate_meter_keeps_each_second_apart_across_gaps_and_a_clock_step_back():
    m = RateMeter(window=5)
    m.add(10.0)
    m.add(10.99, 2)                     # the same second
    m.add(11.0, 4)                      # the next one
    m.add(13.5, 8)                      # a gap: second 12 is empty
    assert m.buckets[10 % 5] == 3 and m.buckets[11 % 5] == 4 and m.buckets[12 % 5] == 0
    assert m.rate(14.2) == pytest.approx((3 + 4 + 0 + 8) / 4)
    m.add(13.2)                         # back into second 13, as before
    assert m.buckets[13 % 5] == 9
    m.add(100.0)                        # a window and more later: all cleared
    assert sum(m.buckets) == 1 and m.rate(100.5) == 0.0
