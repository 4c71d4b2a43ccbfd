"""Pure parts of ``swarmlet logs``/``events``: timestamps, --since, merging, prefixes."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, strategies as st

from swarmlet.cli.logs import (LineMerger, Painter, LogLine, parse_since, parse_ts,
                             prefix, split_lines)
from swarmlet.cli.top import event_line
from swarmlet.shipped.exceptions import UsageError

pytestmark = pytest.mark.unit


def test_parse_ts_docker_nanoseconds():
    ts, rest = parse_ts("2024-05-01T12:00:00.123456789Z hello world")
    want = dt.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=dt.timezone.utc).timestamp()
    assert ts == pytest.approx(want, abs=1e-6) and rest == "hello world"


def test_parse_ts_offset_and_no_fraction():
    ts, rest = parse_ts("2024-05-01T14:00:00+02:00 x")
    assert ts == dt.datetime(2024, 5, 1, 12, tzinfo=dt.timezone.utc).timestamp() and rest == "x"


def test_parse_ts_without_timestamp_keeps_line():
    assert parse_ts("plain line") == (None, "plain line")


def test_parse_since_forms():
    now = 1_700_000_000.0
    assert parse_since("10m", now) == now - 600
    assert parse_since("2h", now) == now - 7200
    assert parse_since("1699999999.5", now) == 1699999999.5
    assert parse_since("2024-05-01T12:00:00Z", now) == dt.datetime(
        2024, 5, 1, 12, tzinfo=dt.timezone.utc).timestamp()
    with pytest.raises(UsageError):
        parse_since("yesterday", now)


def test_split_lines_keeps_partial_rest():
    lines, rest = split_lines(b"ab", b"c\nde\nf")
    assert lines == ["abc", "de"] and rest == b"f"
    lines, rest = split_lines(rest, b"\r\n")
    assert lines == ["f"] and rest == b""


def test_merger_holds_lines_so_a_late_earlier_line_sorts_first():
    m = LineMerger(hold=0.3)
    m.push(10.2, "web.1", "n1", "second", now=0.0)
    assert m.ready(0.1) == []                        # still held
    m.push(10.1, "web.2", "n2", "first", now=0.2)    # arrives later, happened earlier
    assert m.ready(0.35) == []                       # "second" waits behind the held "first"
    assert [ln.text for ln in m.ready(0.6)] == ["first", "second"]
    assert len(m) == 0


def test_merger_flush_releases_everything_in_order():
    m = LineMerger(hold=10)
    for i, ts in enumerate([3.0, 1.0, 2.0]):
        m.push(ts, f"t{i}", "n", str(ts), now=0.0)
    assert [ln.ts for ln in m.ready(0.0, flush=True)] == [1.0, 2.0, 3.0]


@given(st.lists(st.tuples(st.floats(0, 1000), st.floats(0, 4.9)), max_size=60))
def test_merger_output_is_sorted_when_arrivals_lag_less_than_hold(items):
    # A line arrives less than 5 s after its timestamp; with a hold of 5 s the output is in order
    # (strictly less: at exactly the hold, float rounding of ts + hold may release it early).
    m = LineMerger(hold=5.0)
    arrivals = sorted(((ts + lag, ts) for ts, lag in items))
    out = []
    for at, ts in arrivals:
        out += m.ready(at)
        m.push(ts, "t", "n", "", now=at)
    out += m.ready(1e9)
    assert [ln.ts for ln in out] == sorted(ts for _, ts in arrivals)


def test_prefix_and_colors_are_stable_per_task():
    assert prefix("web.1.ab", "node-1") == "web.1.ab@node-1 |"
    p = Painter(color=True)
    a1 = p.line(LogLine(1.0, 0, "web.1", "n1", "x"), timestamps=False)
    b = p.line(LogLine(2.0, 1, "web.2", "n2", "y"), timestamps=False)
    a2 = p.line(LogLine(3.0, 2, "web.1", "n1", "z"), timestamps=False)
    assert a1[:5] == a2[:5] != b[:5] and a1.startswith("\x1b[")
    plain = Painter(color=False).line(LogLine(0.5, 0, "web.1", "n1", "hi"), timestamps=True)
    assert plain == "web.1@n1 | 1970-01-01T00:00:00.500000Z hi"


def test_event_line_has_kind_subject_message():
    line = event_line({"id": 1, "ts": 0, "kind": "node", "subject": "n1", "message": "ready -> down"})
    assert "node" in line and "n1: ready -> down" in line


def test_top_frame_shows_bars_replicas_and_health():
    from swarmlet.cli.top import bar, frame_text, render_top
    doc = {"ts": 0, "cluster": {"name": "prod"},
           "nodes": [{"name": "n1", "status": "ready", "cpu_percent": 50.0, "mem_used": 1 << 30,
                      "mem_total": 4 << 30, "tasks": 2},
                     {"name": "n2", "status": "down", "cpu_percent": 0, "mem_used": 0,
                      "mem_total": 0, "tasks": 0}],
           "services": [{"name": "web", "replicas": 3, "running": 2, "health": "degraded",
                         "req_s": 12.5, "errors": 4, "cpu": 61.2, "ports": "8080:80/tcp",
                         "autoscale": {"min": 2, "max": 6, "cpu": 70}},
                        {"name": "api", "replicas": 1, "running": 1, "health": "ok",
                         "autoscale": {"min": 1, "max": 3, "cpu": 50, "down_window": 15.0}}],
           "events": [{"id": 1, "ts": 0, "kind": "node", "subject": "n2", "message": "ready -> down"}]}
    lines = render_top(doc, color=False, now=0)
    n1 = next(ln for ln in lines if ln.startswith("n1 "))
    assert bar(0.5) in n1 and "50.0%" in n1 and "1.0G/4.0G" in n1 and n1.rstrip().endswith("2")
    assert next(ln for ln in lines if ln.startswith("n2 ")).split()[1] == "down"
    web = next(ln for ln in lines if ln.startswith("web "))
    assert web.split()[1:6] == ["2/3", "degraded", "12.5", "4", "61%"] and "auto 2..6 @70%" in web
    assert "down after" not in web        # the master's window: nothing to say
    api = next(ln for ln in lines if ln.startswith("api "))
    assert api.rstrip().endswith("auto 1..3 @50% down after 15s"), api
    assert "n2: ready -> down" in lines[-1]
    colored = render_top(doc, color=True, now=0)
    assert "\x1b[31mdown" in next(ln for ln in colored if ln.startswith("n2 "))
    out = frame_text(["a", "b"])
    assert out == "\x1b[Ha\x1b[K\nb\x1b[K\n\x1b[J"
    assert bar(2.0, 4) == "[####]" and bar(-1, 4) == "[....]"
