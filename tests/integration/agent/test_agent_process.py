"""The agent as a real process (``python3 -m swarmlet_agent --config``), and its state file.

- killed with SIGKILL and started again, it adopts its containers (no duplicates);
- while it is gone the tasks keep running, and after SIGTERM too;
- a bad config exits 2 with one clean line;
- the stored assignment is written atomically and survives a reload.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swarmlet.shipped.models import Assignment, TaskState
from swarmlet.shipped.exceptions import StaleAssignment
from swarmlet_agent.state import AssignmentStore
from tests.integration.agent.conftest import Api, _cleanup, assignment, wait_for, web_task
from tests.conftest import free_port

pytestmark = pytest.mark.integration


def _spawn(cfg: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "swarmlet_agent", "--config", str(cfg)],
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT)


async def _wait_api(api: Api, proc: subprocess.Popen, log: Path) -> None:
    for _ in range(200):
        if proc.poll() is not None:
            raise AssertionError(f"agent exited {proc.returncode}: {log.read_text()}")
        try:
            if (await api.request("GET", "/v1/info"))[0] == 200:
                return
        except Exception:  # not listening yet
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"agent API never came up: {log.read_text()}")


async def test_killed_agent_process_adopts_its_containers(tmp_path, pki_files, agent_image,
                                                          docker_client):
    node = f"p-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    port = free_port()
    cfg = tmp_path / "agent.json"
    cfg.write_text(json.dumps({
        "name": node, "address": "127.0.0.1", "api_port": port, "api_bind": "127.0.0.1",
        "gossip": False, "state_dir": str(tmp_path / "state"), "cert": pki_files["agent"] + ".crt",
        "key": pki_files["agent"] + ".key", "ca": pki_files["ca"]}))
    log = tmp_path / "agent.log"
    api = Api(port, pki_files["master"], pki_files["ca"])
    procs = []
    try:
        procs.append(_spawn(cfg, log))
        await _wait_api(api, procs[-1], log)
        ts = [web_task(agent_image, slot=i) for i in (1, 2, 3)]
        await api.request("PUT", "/v1/assignment", json=assignment(node, 1, *ts))
        rows = await wait_for(api, lambda r: len(r) == 3 and all(
            v["state"] == TaskState.RUNNING for v in r.values()))
        ids = {k: v["container_id"] for k, v in rows.items()}

        procs[-1].send_signal(signal.SIGKILL)
        procs[-1].wait(10)
        # the data plane outlives the agent
        victim = ids[ts[0].task_id]
        assert docker_client.containers.get(victim).status == "running"
        docker_client.api.kill(victim)  # crashes while no agent is there

        procs.append(_spawn(cfg, log))
        await _wait_api(api, procs[-1], log)
        rows = await wait_for(api, lambda r: len(r) == 3 and all(
            v["state"] == TaskState.RUNNING and v["health"] != "unhealthy" for v in r.values()))
        assert {k: v["container_id"] for k, v in rows.items()} == ids  # adopted, not recreated
        assert docker_client.containers.get(victim).status == "running"
        mine = docker_client.containers.list(all=True, filters={"label": f"io.swarmlet.node={node}"})
        assert len(mine) == 3

        procs[-1].send_signal(signal.SIGTERM)
        assert procs[-1].wait(15) == 0
        assert all(docker_client.containers.get(c).status == "running" for c in ids.values())
    finally:
        await api.close()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        _cleanup(docker_client, node)


def test_bad_config_exits_2_with_one_line(tmp_path):
    cfg = tmp_path / "agent.json"
    cfg.write_text('{"address": "x"}')
    proc = subprocess.run([sys.executable, "-m", "swarmlet_agent", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "'name' is required" in proc.stderr


def test_assignment_store_is_atomic_and_versioned(tmp_path):
    d = tmp_path / "state"
    store = AssignmentStore(str(d))
    assert store.load() is None
    assert store.offer(Assignment("n", 3)) is True
    assert store.offer(Assignment("n", 3)) is False
    with pytest.raises(StaleAssignment) as err:
        store.offer(Assignment("n", 2))
    assert err.value.current == 3
    assert sorted(os.listdir(d)) == ["assignment.json"]  # no temporary file left behind
    assert oct(os.stat(d).st_mode & 0o777) == "0o700"
    assert AssignmentStore(str(d)).load() == Assignment("n", 3)


def test_corrupt_state_is_set_aside_not_trusted(tmp_path):
    d = tmp_path / "state"
    d.mkdir()
    (d / "assignment.json").write_text('{"node": "n", "vers')
    assert AssignmentStore(str(d)).load() is None
    assert (d / "assignment.json.corrupt").exists()
