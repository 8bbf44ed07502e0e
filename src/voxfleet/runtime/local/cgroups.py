"""CPU shares for bot processes through cgroups, where this host lets us write them.

Modes, tried in order at start:
- ``cgroup2``: a ``voxfleet/<bot>`` group under our cgroup v2 with ``cpu.weight`` from the profile;
- ``cgroup1``: the same under the v1 ``cpu`` controller with ``cpu.shares``;
- ``none``: nothing is writable (an unprivileged container); CPU is then reserved in the ledger
  only, not enforced. ``GET /healthz`` reports which mode is in force.

A share, not a quota: under contention each bot gets CPU in proportion to its profile (a 2x bot
twice a 1x bot, and together never less than their reservations, since admission never
reserves beyond capacity); when the machine is idle a bot may burst. A hard quota of 0.5 vCPU
measured here doubled Whisper's time per turn for no gain to anyone.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)



def _own_v2_group() -> Path | None:
    root = Path("/sys/fs/cgroup")
    if not (root / "cgroup.controllers").exists():
        return None
    try:
        line = next(l for l in Path("/proc/self/cgroup").read_text().splitlines() if l.startswith("0::"))
    except (OSError, StopIteration):
        return None
    return root / line[3:].lstrip("/")


class CpuLimiter:
    def __init__(self, enabled: bool = True) -> None:
        self.mode = "none"
        self.base: Path | None = None
        if not enabled:
            log.info("bot CPU limits: off (by configuration)")
            return
        candidates = []
        v2 = _own_v2_group()
        if v2 is not None:
            candidates.append(("cgroup2", v2.parent / "voxfleet" if v2.name else v2 / "voxfleet"))
        candidates.append(("cgroup1", Path("/sys/fs/cgroup/cpu/voxfleet")))
        for mode, base in candidates:
            try:
                base.mkdir(exist_ok=True)
                if mode == "cgroup2":
                    (base / "cgroup.subtree_control").write_text("+cpu")
                elif not (base / "cpu.shares").exists():
                    continue
            except OSError:
                continue
            self.mode, self.base = mode, base
            for stale in base.iterdir():  # groups of bots from an earlier run
                if stale.is_dir():
                    try:
                        os.rmdir(stale)
                    except OSError:
                        pass
            break
        log.info("bot CPU limits: %s%s", self.mode, f" ({self.base})" if self.base else "")

    def limit(self, bot_id: str, pid: int, cpu_millis: int) -> None:
        """Put `pid` in its own group with the share of `cpu_millis` (0: background, the least
        share there is, for a warm bot still initialising beside live calls)."""
        if self.base is None:
            return
        group = self.base / bot_id
        try:
            group.mkdir(exist_ok=True)
            self._set_share(group, cpu_millis)
            (group / "cgroup.procs").write_text(str(pid))
        except OSError as exc:
            log.warning("bot %s: could not apply CPU limit: %s", bot_id, exc)

    def set_share(self, bot_id: str, cpu_millis: int) -> None:
        if self.base is None:
            return
        try:
            self._set_share(self.base / bot_id, cpu_millis)
        except OSError as exc:
            log.warning("bot %s: could not change CPU share: %s", bot_id, exc)

    def _set_share(self, group: Path, cpu_millis: int) -> None:
        if self.mode == "cgroup2":
            (group / "cpu.weight").write_text(str(max(1, min(10000, cpu_millis // 10))))
        else:
            (group / "cpu.shares").write_text(str(max(2, cpu_millis * 1024 // 1000)))

    def forget(self, bot_id: str) -> None:
        if self.base is None:
            return
        try:
            os.rmdir(self.base / bot_id)
        except OSError:
            pass
