"""Stacks on the lab (issue 16): namespaces and builds, as `docker stack deploy` reads them.

- Two stacks deployed from the same file, each with a service `db`: both run
  side by side (shop_db, blog_db), and each `web` reaches its own `db` by the
  short name, from every node. Commands take short names where unambiguous;
  `stack rm` removes one stack and leaves the other serving.
- A stack with a `build:` service: deployed (built on this host, FROM the
  locally built swarmlet-hello:1, pushed with no registry), then updated
  after a change to its context under counted load: only that service rolls,
  with 0 failed requests; a redeploy of an unchanged context rebuilds and
  repushes nothing.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Dict, List

import pytest

from tests.conftest import free_port
from tests.support import ssh
from tests.tools.loadgen import run_load

pytestmark = pytest.mark.e2e

TWO_SERVICES = """\
services:
  web:
    image: swarmlet-hello:1
    ports: ["${WEB_PORT}:8080"]
    deploy:
      replicas: 2
    x-swarmlet:
      health: /health
  db:
    image: swarmlet-hello:1
    expose: ["8080"]
    x-swarmlet:
      health: {path: /health, port: 8080}
"""


def http(url: str, timeout: float = 5.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_until(what: str, pred: Callable[[], Any], timeout: float = 120.0, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = pred()
            if last:
                return last
        except OSError as exc:
            last = exc
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def healthy(cli, service: str) -> List[dict]:
    return [r for r in cli.json("ps", service) if r["state"] == "running" and r["health"] == "healthy"]


@pytest.fixture(scope="module")
def two_stacks(cluster, tmp_path_factory):
    d = tmp_path_factory.mktemp("two") / "app"
    d.mkdir()
    f = d / "stack.yml"
    f.write_text(TWO_SERVICES)
    ports = {"shop": free_port(), "blog": free_port()}
    cli = cluster.cli
    for name, port in ports.items():
        cli.env = {**cli.env, "WEB_PORT": str(port)}
        r = cli("deploy", "-f", str(f), "--name", name, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
    yield cli, ports, f
    cli("stack", "rm", "shop", "blog", timeout=120)


def test_two_stacks_each_with_a_db_run_side_by_side_and_each_web_reaches_its_own(two_stacks, cluster):
    cli, ports, _ = two_stacks
    names = sorted(r["name"] for r in cli.json("services"))
    assert {"shop_web", "shop_db", "blog_web", "blog_db"} <= set(names), names
    for name in ports:
        wait_until(f"{name}: web and db healthy",
                   lambda: len(healthy(cli, f"{name}/web")) == 2 and len(healthy(cli, f"{name}/db")) == 1)
    for name, port in ports.items():
        url = f"http://127.0.0.1:{port}/call?host=db&port=8080&path=/"

        def call_db() -> Any:
            status, body = http(url)
            return body if status == 200 else None
        # Both web replicas (spread over nodes) are routed: the load balancer takes turns...
        wait_until(f"{name}: both web replicas routed", lambda: len(
            {json.loads(http(f"http://127.0.0.1:{port}/")[1])["task"] for _ in range(4)}) == 2, timeout=60)
        # ...so consecutive calls go through each of them, and each resolves the short name `db`
        # to its own stack's db.
        for _ in range(10):
            assert json.loads(wait_until(f"{name}: web calls db", call_db))["service"] == f"{name}_db"
        # And inside each web container, on its own node, `db` is this stack's db.
        nodes = {n["name"]: n for n in cluster.nodes}
        for row in healthy(cli, f"{name}_web"):
            r = ssh(nodes[row["node"]], f"docker exec {row['container_id']} wget -q -O- http://db:8080/")
            assert r.returncode == 0 and json.loads(r.stdout)["service"] == f"{name}_db", r.stdout + r.stderr


def test_full_names_work_from_another_stack(two_stacks):
    # blog was deployed after shop, so its containers know shop's services (names are in
    # /etc/hosts, written when a container is created).
    cli, ports, _ = two_stacks
    status, body = http(f"http://127.0.0.1:{ports['blog']}/call?host=shop_db&port=8080&path=/")
    assert status == 200 and '"shop_db"' in body, body


def test_commands_take_short_names_where_unambiguous(two_stacks):
    cli, ports, _ = two_stacks
    r = cli("ps", "db")
    assert r.returncode == 2 and "'db' is ambiguous: it is blog_db, shop_db" in r.stderr, r.stderr
    assert {row["service"] for row in cli.json("ps", "shop/db")} == {"shop_db"}
    assert [row["name"] for row in cli.json("services", "--stack", "blog")] == ["blog_db", "blog_web"]
    assert [row["name"] for row in cli.json("services", "blog_web")] == ["blog_web"]
    stacks = {row["name"]: row["services"] for row in cli.json("stack", "ls")}
    assert stacks["shop"] == 2 and stacks["blog"] == 2


def test_stack_rm_and_prune_touch_only_that_stack(two_stacks):
    cli, ports, f = two_stacks
    # --prune of a stack whose file lost `db`: only shop_db goes.
    smaller = f.parent / "smaller.yml"
    smaller.write_text(TWO_SERVICES.split("  db:")[0])
    cli.env = {**cli.env, "WEB_PORT": str(ports["shop"])}
    r = cli("deploy", "-f", str(smaller), "--name", "shop", "--prune", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "- remove     shop_db" in r.stdout and "blog" not in r.stdout
    r = cli("stack", "rm", "shop", timeout=120)
    assert r.returncode == 0 and "shop_web removed" in r.stdout, r.stdout + r.stderr
    left = {row["name"] for row in cli.json("services")}
    assert not {n for n in left if n.startswith("shop_")} and {"blog_web", "blog_db"} <= left
    status, body = http(f"http://127.0.0.1:{ports['blog']}/call?host=db&port=8080&path=/")
    assert status == 200 and '"blog_db"' in body, body


# --- build: ----------------------------------------------------------------------------------

BUILD_STACK = """\
name: {name}
services:
  web:
    build: ./app
    ports: ["{port}:8080"]
    deploy:
      replicas: 2
      update_config: {{parallelism: 1, monitor: 2s}}
    x-swarmlet:
      health: /health
  other:
    image: swarmlet-hello:1
    ports: ["{other}:8080"]
    x-swarmlet:
      health: /health
"""


class Load:
    """Counted load on one URL in a thread, until stopped (bounded in time and count)."""

    def __init__(self, url: str, subnet: str) -> None:
        self.url, self.subnet = url, subnet
        self.out: Dict[str, Any] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        async def main() -> None:
            ev = asyncio.Event()

            async def watch() -> None:
                while not self.stop.is_set():
                    await asyncio.sleep(0.05)
                ev.set()
            w = asyncio.create_task(watch())
            self.out["res"] = await run_load(self.url, concurrency=4, duration=300,
                                             max_requests=500_000, stop=ev)
            w.cancel()
        asyncio.run(main())

    def __enter__(self) -> "Load":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join(timeout=120)


def test_build_service_deploys_then_only_it_rolls_after_a_context_change(cluster, tmp_path, docker_client):
    name = f"bld{int(time.time()) % 100000}"
    port, other_port = free_port(), free_port()
    root = tmp_path / name
    app = root / "app"
    app.mkdir(parents=True)
    (app / "Dockerfile").write_text("FROM swarmlet-hello:1\nENV DATA_DIR=/kv\nCOPY version /kv/version\n")
    (app / "version").write_text("one")
    stack = root / "stack.yml"
    stack.write_text(BUILD_STACK.format(name=name, port=port, other=other_port))
    cli = cluster.cli
    try:
        r = cli("deploy", "-f", str(stack), timeout=400)
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"{name}_web: building {name}_web:" in r.stdout, r.stdout
        wait_until("web and other healthy", lambda: len(healthy(cli, f"{name}_web")) == 2
                   and len(healthy(cli, f"{name}_other")) == 1)
        wait_until("the built image serves", lambda: http(f"http://127.0.0.1:{port}/kv/version") == (200, "one"))
        before = {s["name"]: s for s in cli.json("services")}
        other_tasks = sorted(t["task"] for t in healthy(cli, f"{name}_other"))

        (app / "version").write_text("two")                      # a change to the context
        with Load(f"http://127.0.0.1:{port}/kv/version", cluster.subnet) as load:
            time.sleep(1.0)
            r = cli("deploy", "-f", str(stack), timeout=400)
            wait_until("every web replica on the new image",
                       lambda: http(f"http://127.0.0.1:{port}/kv/version") == (200, "two")
                       and len(healthy(cli, f"{name}_web")) == 2, timeout=120)
            time.sleep(1.0)
        res = load.out["res"]
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"~ update     {name}_web (rolling update)" in r.stdout, r.stdout
        assert f"= unchanged  {name}_other" in r.stdout, r.stdout
        assert res.failed == 0 and res.served > 100, res.summary()
        assert set(res.bodies) <= {"one", "two"} and "two" in res.bodies, res.bodies
        after = {s["name"]: s for s in cli.json("services")}
        assert after[f"{name}_web"]["image"] != before[f"{name}_web"]["image"]
        assert after[f"{name}_web"]["revision"] == before[f"{name}_web"]["revision"] + 1
        assert after[f"{name}_other"]["revision"] == before[f"{name}_other"]["revision"]
        assert sorted(t["task"] for t in healthy(cli, f"{name}_other")) == other_tasks

        # Unchanged context: nothing built, nothing pushed, nothing to do.
        r = cli("deploy", "-f", str(stack), timeout=120)
        assert r.returncode == 0 and "Nothing to do." in r.stdout, r.stdout + r.stderr
        assert "building" not in r.stdout and "uploading" not in r.stdout, r.stdout
    finally:
        cli("stack", "rm", name, timeout=120)
        for img in docker_client.images.list(name=f"{name}_web"):
            for tag in img.tags:
                docker_client.images.remove(tag, force=True)


def test_a_failed_build_applies_nothing(cluster, tmp_path):
    name = f"bad{int(time.time()) % 100000}"
    app = tmp_path / name / "app"
    app.mkdir(parents=True)
    (app / "Dockerfile").write_text("FROM swarmlet-hello:1\nRUN echo the build breaks here && exit 7\n")
    stack = tmp_path / name / "stack.yml"
    stack.write_text(f"name: {name}\nservices:\n  web:\n    build: ./app\n  other:\n    image: swarmlet-hello:1\n")
    cli = cluster.cli
    r = cli("deploy", "-f", str(stack), timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"error: {stack}:4:5: the build of {name}_web" in r.stderr, r.stderr
    assert "nothing was deployed" in r.stderr and "| the build breaks here" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not [s for s in cli.json("services") if s["name"].startswith(f"{name}_")]
