"""This machine's capacity and a process's memory, read from cgroups and /proc."""

from __future__ import annotations

import os
from pathlib import Path


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def cpu_millis() -> int:
    """CPUs available to this process: the cgroup quota (v2 cpu.max or v1 cfs quota) if set,
    else the CPUs in our affinity mask."""
    cpus = len(os.sched_getaffinity(0)) * 1000
    v2 = _read("/sys/fs/cgroup/cpu.max")
    if v2 and not v2.startswith("max"):
        quota, period = (int(x) for x in v2.split()[:2])
        cpus = min(cpus, quota * 1000 // period)
    quota, period = _read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), _read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
    if quota and period and int(quota) > 0:
        cpus = min(cpus, int(quota) * 1000 // int(period))
    return cpus


def memory_mb() -> int:
    """Memory available: the cgroup limit (v2 memory.max or v1) if lower than physical RAM."""
    total = 0
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            total = int(line.split()[1]) // 1024
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        value = _read(path)
        if value and value.isdigit():
            total = min(total, int(value) // (1024 * 1024))
    return total


def pss_mb(pid: int) -> float | None:
    """Proportional set size of `pid` in MiB: shared copy-on-write pages of forked bots are split
    between the processes sharing them, so the sum over bots is the real memory use."""
    text = _read(f"/proc/{pid}/smaps_rollup")
    if text is None:
        return None
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return None
