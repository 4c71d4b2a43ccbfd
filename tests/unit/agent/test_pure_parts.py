"""Pure helpers of the agent: health tracking, stats arithmetic, config, status, labels."""

from __future__ import annotations

import pytest

from swarmlet.shipped import rfc3339
from swarmlet.shipped.exceptions import ConfigError
from swarmlet.shipped.models import Health, HealthCheck, TaskSpec, TaskState
from swarmlet_agent import config, runtime, stats
from swarmlet_agent import reconcile as rc
from swarmlet_agent.health import HealthTracker, from_docker
from swarmlet_agent.membership import member_wire
from swarmlet_agent.status import StatusBook

pytestmark = pytest.mark.unit

T = TaskSpec(task_id="t1", service="web", revision=3, slot=2, image="img:1", env={"A": "1",
             "SWARMLET_NODE": "spoof"}, labels={"x": "y", rc.NODE: "spoof"})


# -- health -------------------------------------------------------------------

def test_health_needs_consecutive_failures():
    tr = HealthTracker(HealthCheck(kind="http", retries=3), started_at=0.0)
    assert tr.status is Health.STARTING
    assert tr.observe(True, 1.0) is Health.HEALTHY
    assert tr.observe(False, 2.0) is Health.HEALTHY
    assert tr.observe(False, 3.0) is Health.HEALTHY
    assert tr.observe(True, 4.0) is Health.HEALTHY  # the streak resets
    for now in (5.0, 6.0):
        assert tr.observe(False, now) is Health.HEALTHY
    assert tr.observe(False, 7.0) is Health.UNHEALTHY
    assert tr.observe(True, 8.0) is Health.HEALTHY


def test_failures_in_start_period_do_not_count():
    tr = HealthTracker(HealthCheck(kind="http", retries=1, start_period=10.0), started_at=100.0)
    assert tr.observe(False, 105.0) is Health.STARTING
    assert tr.observe(False, 110.0) is Health.UNHEALTHY


def test_docker_health_mapping():
    assert from_docker("healthy") is Health.HEALTHY
    assert from_docker("unhealthy") is Health.UNHEALTHY
    assert from_docker("") is None


# -- stats ---------------------------------------------------------------------

def test_proc_stat_and_cpu_percent():
    a = stats.parse_proc_stat("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 2 3 4\n")
    b = stats.parse_proc_stat("cpu  200 0 150 850 0 0 0 0 0 0\n")
    assert a == (2.0, 10.0) and b == (3.5, 12.0)
    assert stats.cpu_percent(stats.CpuSample(*a), stats.CpuSample(*b)) == pytest.approx(75.0)
    assert stats.cpu_percent(None, stats.CpuSample(*b)) == 0.0


def test_task_cpu_percent_is_of_one_cpu():
    s = stats.Sampler()
    assert s.task("t", (10.0, 5), now=100.0) == {"cpu_percent": 0.0, "mem_used": 5}
    assert s.task("t", (11.5, 7), now=101.0)["cpu_percent"] == pytest.approx(150.0)


def test_meminfo_uses_available():
    used, total = stats.parse_meminfo("MemTotal: 1000 kB\nMemFree: 100 kB\nMemAvailable: 400 kB\n")
    assert (used, total) == (600 * 1024, 1000 * 1024)


def test_cgroup_v1_and_v2_files(tmp_path):
    v1 = tmp_path / "v1"
    (v1 / "cpuacct/docker/abc").mkdir(parents=True)
    (v1 / "memory/docker/abc").mkdir(parents=True)
    (v1 / "cpuacct/docker/abc/cpuacct.usage").write_text("2500000000\n")
    (v1 / "memory/docker/abc/memory.usage_in_bytes").write_text("1000\n")
    (v1 / "memory/docker/abc/memory.stat").write_text("cache 5\ntotal_inactive_file 200\n")
    assert stats.read_task("abc", str(v1)) == (2.5, 800)
    v2 = tmp_path / "v2"
    (v2 / "system.slice/docker-abc.scope").mkdir(parents=True)
    (v2 / "system.slice/docker-abc.scope/cpu.stat").write_text("usage_usec 3000000\nuser_usec 1\n")
    (v2 / "system.slice/docker-abc.scope/memory.current").write_text("4096\n")
    (v2 / "system.slice/docker-abc.scope/memory.stat").write_text("inactive_file 96\n")
    assert stats.read_task("abc", str(v2)) == (3.0, 4000)
    assert stats.read_task("nope", str(v2)) is None


def test_docker_stats_document():
    doc = {"cpu_stats": {"cpu_usage": {"total_usage": 2_000_000_000}},
           "memory_stats": {"usage": 1000, "stats": {"total_inactive_file": 100}}}
    assert stats.from_docker_stats(doc) == (2.0, 900)


# -- config --------------------------------------------------------------------

def test_config_contract_example():
    c = config.parse({"name": "node-1", "address": "172.18.0.2", "api_port": 7443,
                      "gossip_port": 7946, "cluster_id": "c", "labels": {"zone": "a"},
                      "seeds": ["172.18.0.3:7946", "10.0.0.9"], "state_dir": "/var/lib/swarmlet",
                      "cert": "/c", "key": "/k", "ca": "/ca", "gossip_keys": "/g", "future": 1})
    assert c.name == "node-1" and c.labels == {"zone": "a"}
    assert c.seed_addrs() == [("172.18.0.3", 7946), ("10.0.0.9", 7946)]
    assert (c.edge_max_handshakes, c.edge_max_handshakes_per_source) == (256, 64)
    assert config.parse({"name": "n", "address": "x",
                         "edge_max_handshakes_per_source": 8}).edge_max_handshakes_per_source == 8


@pytest.mark.parametrize("bad,key", [
    ({"address": "x"}, "name"), ({"name": "n", "address": "x", "api_port": "1"}, "api_port"),
    ({"name": "n", "address": "x", "labels": {"a": 1}}, "labels"),
    ({"name": "n", "address": "x", "seeds": "a:1"}, "seeds"), ([], "object"),
    ({"name": "n", "address": "x", "edge_max_handshakes_per_source": 0},
     "edge_max_handshakes_per_source"),
])
def test_config_errors_name_the_key(bad, key):
    with pytest.raises(ConfigError, match=key):
        config.parse(bad)


# -- status --------------------------------------------------------------------

def test_status_never_goes_backwards():
    b = StatusBook()
    b.update(T, 1.0, TaskState.RUNNING)
    row = b.update(T, 2.0, TaskState.STARTING, reason="exited with code 1; restarting")
    assert row.state is TaskState.RUNNING and "restarting" in row.reason
    b.update(T, 3.0, TaskState.FAILED, reason="gave up")
    assert b.update(T, 4.0, TaskState.STOPPED).state is TaskState.FAILED
    b.bump_restarts(T, 5.0)
    assert b.get("t1").restarts == 1
    b.retain([])
    assert b.rows() == []


@pytest.mark.parametrize("text,expect", [
    ("2024-01-02T03:04:05.5Z", 1704164645.5),
    ("2024-01-02T03:04:05.123456789Z", 1704164645.123456789),
    ("2024-01-02T05:04:05+02:00", 1704164645.0),
    ("0001-01-01T00:00:00Z", 0.0), ("", 0.0),
])
def test_parse_docker_time(text, expect):
    assert rfc3339.parse(text) == pytest.approx(expect)


def test_timestamp_prefix_of_a_log_line():
    ts, end = rfc3339.parse_prefix("2024-01-02T03:04:05.5Z hello")
    assert ts == pytest.approx(1704164645.5) and end == len("2024-01-02T03:04:05.5Z")
    assert rfc3339.parse_prefix("hello") is None
    assert rfc3339.parse("2024-01-02T03:04:05Z trailing") == 0.0   # a whole value must match


def test_observed_from_inspect():
    info = {"Id": "abc", "Created": "2024-01-02T03:04:05Z",
            "State": {"Status": "exited", "ExitCode": 137, "StartedAt": "2024-01-02T03:04:06Z",
                      "FinishedAt": "2024-01-02T03:04:09Z", "OOMKilled": True, "Error": "",
                      "Health": {"Status": "unhealthy"}},
            "Config": {"Labels": {rc.TASK: "t"}},
            "NetworkSettings": {"Ports": {"8080/tcp": [{"HostIp": "0.0.0.0", "HostPort": "32768"}],
                                          "9/udp": None},
                                "Networks": {"bridge": {"IPAddress": "172.17.0.5"}}}}
    o = runtime._observed(info)
    assert (o.status, o.exit_code, o.error, o.health) == ("exited", 137, "out of memory", "unhealthy")
    assert o.finished_at - o.started_at == pytest.approx(3.0)
    assert o.host_ports == {"8080/tcp": 32768} and o.ip == "172.17.0.5"


@pytest.mark.parametrize("image,expect", [
    ("busybox", ("busybox", "latest")), ("a/b:1", ("a/b", "1")),
    ("127.0.0.1:5000/x", ("127.0.0.1:5000/x", "latest")), ("127.0.0.1:5000/x:2", ("127.0.0.1:5000/x", "2")),
])
def test_split_image(image, expect):
    assert runtime._split_image(image) == expect


def test_member_wire_accepts_objects_and_pairs():
    class M:
        def __init__(self):
            self.name, self.address, self.state, self.incarnation, self.meta = \
                "n2", ("10.0.0.2", 7946), "alive", 3, {"api_port": 7443}
    w = member_wire(M())
    assert w == {"name": "n2", "address": "10.0.0.2", "port": 7946, "state": "alive",
                 "incarnation": 3, "meta": {"api_port": 7443}}
