"""swarmlet top at 1,000 nodes (cli/topview.py, cli/top.py key_action): aggregates, sort, pages."""

from __future__ import annotations

from swarmlet.cli.top import key_action
from swarmlet.cli.topview import View, page_of, render_top, sort_nodes, summary


def _doc(n: int = 1000) -> dict:
    nodes = []
    for i in range(n):
        status = "down" if i in (7, 300) else "suspect" if i == 42 else "ready"
        nodes.append({"name": f"node-{i:04d}", "status": status, "cpu_percent": float(i % 100),
                      "mem_used": (i % 50) << 28, "mem_total": 16 << 30, "tasks": 10,
                      "serving": 9 if i == 500 else 10, "unhealthy": 1 if i == 500 else 0})
    services = [{"name": f"svc-{i:03d}", "replicas": 50, "running": 50, "health": "ok", "req_s": 1.5,
                 "errors": 0, "cpu": None, "ports": "8080/tcp", "autoscale": None} for i in range(200)]
    services[120] = {**services[120], "health": "degraded", "running": 49, "errors": 3}
    return {"ts": 0, "cluster": {"name": "big"}, "nodes": nodes, "services": services,
            "events": [{"id": 1, "ts": 0, "kind": "node", "subject": "node-0007", "message": "ready -> down"}]}


def test_the_summary_says_what_the_cluster_does():
    line1, line2 = summary(_doc())
    assert line1.startswith("NODES 1000: 2 down, 1 suspect, 997 ready")
    assert "cpu mean 50% p90 90% max 99%" in line1 and "10000 replicas (9999 serving, 1 unhealthy)" in line1
    assert line2 == "SERVICES 200: 1 degraded, 199 ok · 300.0 req/s · 3 errors"


def test_a_page_fits_the_terminal_and_says_where_it_is():
    lines = render_top(_doc(), now=0, view=View(sort="cpu"), rows=50)
    assert len(lines) <= 50
    rows = [ln for ln in lines if ln.startswith("node-")]
    assert 10 <= len(rows) < 50
    cpus = [float(r.split("%")[0].split()[-1]) for r in rows]
    assert cpus == sorted(cpus, reverse=True) and cpus[0] == 99.0     # the busiest first
    footer = next(ln for ln in lines if ln.startswith("nodes "))
    assert footer.startswith(f"nodes 1-{len(rows)} of 1000") and "sorted by cpu" in footer
    # the troubled service comes first, the rest is counted
    svc = [ln for ln in lines if ln.startswith("svc-")]
    assert svc[0].startswith("svc-120") and any("more services" in ln for ln in lines)


def test_pages_turn_and_clamp():
    view = View(per_page=100)
    lines = render_top(_doc(), now=0, view=view.turn(3))
    assert next(ln for ln in lines if ln.startswith("node-")).startswith("node-0300")
    assert "page 4/10" in next(ln for ln in lines if ln.startswith("nodes "))
    last = render_top(_doc(), now=0, view=view.turn(99))
    assert "page 10/10" in next(ln for ln in last if ln.startswith("nodes "))
    assert page_of(list(range(5)), -3, 2) == ([0, 1], 0, 3)
    assert page_of(list(range(5)), 0, None) == ([0, 1, 2, 3, 4], 0, 1)


def test_problems_only_and_status_order():
    lines = render_top(_doc(), now=0, view=View(problems=True, sort="status"))
    rows = [ln.split()[0] for ln in lines if ln.startswith("node-")]
    assert rows == ["node-0007", "node-0300", "node-0042", "node-0500"]
    assert "(1 unhealthy)" in next(ln for ln in lines if ln.startswith("node-0500"))
    assert [n["name"] for n in sort_nodes(_doc(3)["nodes"], "mem")] == ["node-0002", "node-0001", "node-0000"]


def test_without_rows_everything_is_printed():
    lines = render_top(_doc(), now=0)
    assert sum(1 for ln in lines if ln.startswith("node-")) == 1000
    assert sum(1 for ln in lines if ln.startswith("svc-")) == 200


def test_keys():
    v = View()
    assert key_action(v, b"q") is None and key_action(v, b"\x03") is None
    assert key_action(v, b"n").page == 1 and key_action(v, b"\x1b[6~").page == 1
    assert key_action(View(page=2), b"p").page == 1
    assert key_action(v, b"s").sort == "cpu" and key_action(View(sort="status"), b"s").sort == "name"
    assert key_action(View(page=4), b"f") == View(page=0, problems=True)
    assert key_action(View(page=4), b"g").page == 0
    assert key_action(v, b"x") == v
