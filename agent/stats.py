"""Utilization: the node's CPU, memory and load, and each task's CPU and memory.

Read cheaply from files, not from Docker's stats API (which costs a request
and up to a second per container): ``/proc/stat``, ``/proc/meminfo``,
``/proc/loadavg`` for the node, and each container's cgroup files
(v1 cgroupfs or systemd driver, or v2). CPU percent needs two samples, so
``Sampler`` keeps the previous counters; the arithmetic is pure
(``cpu_percent``, ``parse_*``) and tested with fixed inputs. A task whose
cgroup files cannot be found is reported by the caller from Docker's one-shot
stats instead (``from_docker_stats``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

CGROUP_ROOT = "/sys/fs/cgroup"


@dataclass(frozen=True)
class CpuSample:
    busy: float       # CPU-seconds used (node: all CPUs; task: the cgroup's usage)
    at: float         # seconds (node: total jiffies / cpus; task: the agent's clock)


def parse_proc_stat(text: str, hz: int = 100) -> Tuple[float, float]:
    """(busy CPU-seconds, total CPU-seconds) over all CPUs from /proc/stat."""
    for line in text.splitlines():
        if line.startswith("cpu "):
            vals = [int(v) for v in line.split()[1:]]
            idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
            total = sum(vals[:8])  # guest time is already counted in user
            return (total - idle) / hz, total / hz
    raise ValueError("no cpu line in /proc/stat")


def parse_meminfo(text: str) -> Tuple[int, int]:
    """(used, total) bytes; used = total - available (what a new task could not get)."""
    vals: Dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            vals[key] = int(parts[0]) * 1024
    total = vals.get("MemTotal", 0)
    avail = vals.get("MemAvailable", vals.get("MemFree", 0))
    return total - avail, total


def parse_kv(text: str) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def cpu_percent(prev: Optional[CpuSample], cur: CpuSample, scale: float = 100.0) -> float:
    """Busy share between two samples, in percent of ``scale`` (100 = one CPU)."""
    if prev is None or cur.at <= prev.at:
        return 0.0
    return max(0.0, (cur.busy - prev.busy) / (cur.at - prev.at) * scale)


def _read(path: str) -> Optional[str]:
    try:
        with open(path, encoding="ascii") as fh:
            return fh.read()
    except OSError:
        return None


def cgroup_dirs(container_id: str, root: str = CGROUP_ROOT) -> Iterable[Tuple[str, str, str]]:
    """Candidate (kind, cpu dir, memory dir) for a container, most likely first."""
    for rel in (f"docker/{container_id}", f"system.slice/docker-{container_id}.scope"):
        yield "v2", f"{root}/{rel}", f"{root}/{rel}"
        yield "v1", f"{root}/cpuacct/{rel}", f"{root}/memory/{rel}"


def read_task(container_id: str, root: str = CGROUP_ROOT) -> Optional[Tuple[float, int]]:
    """(CPU-seconds used, memory bytes in use) from cgroup files, or None."""
    for kind, cpu_dir, mem_dir in cgroup_dirs(container_id, root):
        if kind == "v2":
            cpu = _read(f"{cpu_dir}/cpu.stat")
            mem = _read(f"{mem_dir}/memory.current")
            if cpu is None or mem is None:
                continue
            stat = parse_kv(_read(f"{mem_dir}/memory.stat") or "")
            used = int(mem) - stat.get("inactive_file", 0)
            return parse_kv(cpu).get("usage_usec", 0) / 1e6, max(0, used)
        usage = _read(f"{cpu_dir}/cpuacct.usage")
        mem = _read(f"{mem_dir}/memory.usage_in_bytes")
        if usage is None or mem is None:
            continue
        stat = parse_kv(_read(f"{mem_dir}/memory.stat") or "")
        used = int(mem) - stat.get("total_inactive_file", 0)  # as `docker stats` shows it
        return int(usage) / 1e9, max(0, used)
    return None


def from_docker_stats(s: dict) -> Tuple[float, int]:
    """(CPU-seconds used, memory bytes) from one Docker stats document."""
    cpu = (s.get("cpu_stats") or {}).get("cpu_usage", {}).get("total_usage", 0) / 1e9
    mem = s.get("memory_stats") or {}
    st = mem.get("stats") or {}
    used = mem.get("usage", 0) - st.get("total_inactive_file", st.get("inactive_file", 0))
    return cpu, max(0, int(used))


class Sampler:
    """Keeps previous counters to turn them into rates. Not thread-safe; one per agent."""

    def __init__(self, proc: str = "/proc", cgroup_root: str = CGROUP_ROOT) -> None:
        self.proc = proc
        self.cgroup_root = cgroup_root
        self.cpus = os.cpu_count() or 1
        self._node_prev: Optional[CpuSample] = None
        self._task_prev: Dict[str, CpuSample] = {}

    def node(self, tasks: int) -> Dict[str, float]:
        busy, total = parse_proc_stat(_read(f"{self.proc}/stat") or "")
        cur = CpuSample(busy, total)  # total CPU-seconds of all CPUs is the clock
        pct = cpu_percent(self._node_prev, cur)  # percent of the whole node
        self._node_prev = cur
        used, mem_total = parse_meminfo(_read(f"{self.proc}/meminfo") or "")
        load1 = float((_read(f"{self.proc}/loadavg") or "0").split()[0])
        return {"cpu_percent": round(pct, 2), "mem_used": used, "mem_total": mem_total,
                "load1": load1, "cpus": self.cpus, "tasks": tasks}

    def task(self, key: str, usage: Tuple[float, int], now: float) -> Dict[str, float]:
        """Rates for one task from its counters; ``now`` is the agent's clock (seconds)."""
        cur = CpuSample(usage[0], now)
        pct = cpu_percent(self._task_prev.get(key), cur)  # percent of one CPU, as docker stats
        self._task_prev[key] = cur
        return {"cpu_percent": round(pct, 2), "mem_used": usage[1]}

    def forget_except(self, keys: List[str]) -> None:
        keep = set(keys)
        for k in list(self._task_prev):
            if k not in keep:
                del self._task_prev[k]
