"""How fast the live views and the autoscaler react (prints tables).

1. Node death -> live views: N rounds of: two in-process agents and a real master
   (HTTPS, real dockerd); an SSE client on ``/v1/overview?stream=1`` (what ``swarmlet top``
   reads) and one on the dashboard's ``/api/stream``; stop an agent; report the time from
   the master's status change (watched in-process) to each stream's first frame saying down.
2. Autoscale reaction: the default policy and default stats intervals (agent 5 s, master
   5 s), a ``swarmlet-hello:1`` replica burning one CPU via ``/burn``; time from the start of
   the load to the scale-up decision.

Usage: python bench/observe/bench_observe.py [--rounds 5] [--no-autoscale]
Needs dockerd and the swarmlet-hello:1 image (examples/hello/build).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import aiohttp  # noqa: E402
import docker  # noqa: E402

from swarmlet.master.daemon import MasterConfig  # noqa: E402
from swarmlet.shipped.models import AutoscaleSpec, NodeStatus, PortSpec, ServiceSpec, to_wire  # noqa: E402
from tests.integration.master.test_master_daemon import FAST, Env  # noqa: E402
from tests.integration.observe.test_observe import _env, _start  # noqa: E402
from swarmlet.cli.top import sse_events  # noqa: E402


async def watch(url: str, ssl, node: str, headers=None) -> float:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as s:
        async with s.get(url, ssl=ssl, headers=headers or {}) as r:
            async for ev, data in sse_events(r):
                doc = json.loads(data)
                if any(n["name"] == node and n["status"] == "down" for n in doc["nodes"]):
                    return time.monotonic()
    raise RuntimeError("stream ended")


async def death_round(tmp: Path, dc) -> tuple:
    tmp.mkdir(parents=True)
    env = await _env(tmp, dc)
    try:
        a, b = await _start(env, "a", "b")
        m = env.master.master
        info = await env.call("GET", "/v1/dashboard")
        while m.live[a.config.name].status != NodeStatus.READY:
            await asyncio.sleep(0.05)
        top = asyncio.create_task(watch(env.master.url + "/v1/overview?stream=1", env.ctx, a.config.name))
        dash = asyncio.create_task(watch(info["url"] + "api/stream", False, a.config.name,
                                         {"Authorization": f"Bearer {info['token']}"}))
        await asyncio.sleep(1.0)
        await a.stop()
        while m.live[a.config.name].status != NodeStatus.DOWN:
            await asyncio.sleep(0.002)
        t_master = time.monotonic()
        t_top, t_dash = await asyncio.wait_for(asyncio.gather(top, dash), 30)
        return t_top - t_master, t_dash - t_master
    finally:
        await env.close()


async def autoscale_round(tmp: Path, dc) -> float:
    import dataclasses
    tmp.mkdir(parents=True)
    cfg = dataclasses.replace(FAST, stats_interval=MasterConfig().stats_interval)
    env = await _env(tmp, dc, cfg)
    try:
        await _start(env, "a")
        for a in env.agents.values():   # the agent's default stats interval (5 s); read per loop
            a.config = dataclasses.replace(a.config, stats_interval=5.0)
        spec = ServiceSpec("burner", "swarmlet-hello:1", replicas=1, ports=(PortSpec(8080),),
                           autoscale=AutoscaleSpec(min=1, max=3, cpu=30))
        await env.call("POST", "/v1/services", to_wire(spec))
        rows = await env.wait("a burner", lambda r: len(r) == 1 and r[0]["state"] == "running")
        port = rows[0]["host_ports"]["8080/tcp"]
        await asyncio.sleep(12)   # idle figures first, as in life
        t0 = time.monotonic()
        burn = asyncio.create_task(asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/burn?seconds=45", timeout=90).read()))
        while (await env.call("GET", "/v1/services/burner"))["replicas"] < 2:
            if time.monotonic() - t0 > 60:
                return float("nan")
            await asyncio.sleep(0.2)
        dt = time.monotonic() - t0
        burn.cancel()
        return dt
    finally:
        await env.close()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-autoscale", action="store_true")
    args = ap.parse_args()
    dc = docker.from_env()
    tops, dashes = [], []
    with tempfile.TemporaryDirectory() as d:
        for i in range(args.rounds):
            t, s = await death_round(Path(d) / f"r{i}", dc)
            tops.append(t)
            dashes.append(s)
        print("node death -> live view, seconds after the master knew")
        print(f"{'stream':<28}{'rounds':>7}{'median':>9}{'max':>9}")
        for name, xs in (("top (/v1/overview SSE)", tops), ("dashboard (/api/stream)", dashes)):
            print(f"{name:<28}{len(xs):>7}{statistics.median(xs):>9.3f}{max(xs):>9.3f}")
        if not args.no_autoscale:
            r = await autoscale_round(Path(d) / "as", dc)
            print("\nautoscale reaction (default policy and stats intervals)")
            print(f"{'load start -> scale-up decision':<36}{r:>8.1f} s   (target: 30 s)")


if __name__ == "__main__":
    asyncio.run(main())
