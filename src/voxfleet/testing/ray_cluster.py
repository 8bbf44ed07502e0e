"""A real multi-node Ray cluster on this machine, for tests and ``voxfleet bench ray``.

Every node is a separate raylet on its own loopback address (127.0.0.2, .3, ...; Ray rewrites
127.0.0.1 to the host's address), started with ``ray.cluster_utils.Cluster``. The head node
offers no bot resources; bot nodes carry a ``region`` label and the ``bandwidth_kbps`` resource,
as docs/ray.md asks of a production cluster. Token authentication is on, as ``ray start`` has it
by default: the token file and ``RAY_AUTH_MODE`` / ``RAY_AUTH_TOKEN_PATH`` are set in this
process's environment (inherited by every node and by a ``voxfleet serve`` started from here)
and restored on ``shutdown()``.
"""

from __future__ import annotations

import os
import secrets
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voxfleet.extras import require_extra

MiB = 1024 * 1024
# Node deaths are noticed in ~3 s rather than Ray's default ~15 s (period 3 s x 5 misses).
FAST_HEALTH_CHECK = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}


@dataclass(frozen=True)
class BotNode:
    address: str  # 127.0.0.x
    region: str
    cpus: float
    mem_mb: int
    kbps: int = 1000


class LocalRayCluster:
    def __init__(self, nodes: list[BotNode], head_address: str = "127.0.0.2") -> None:
        self.spec = nodes
        self.head_address = head_address
        self.token_dir = tempfile.mkdtemp(prefix="voxfleet-ray-")
        self._saved_env: dict[str, str | None] = {}
        self.cluster: Any = None
        self.nodes: dict[str, Any] = {}  # address -> ray node
        self.started_s = 0.0

    def env(self) -> dict[str, str]:
        """For every node and driver: token auth, and this very voxfleet on the workers' path."""
        import voxfleet

        source = str(Path(voxfleet.__file__).resolve().parents[1])
        path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH", "")) if p)
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(Path(self.token_dir) / "auth_token"),
                "PYTHONPATH": path}

    def start(self) -> "LocalRayCluster":
        require_extra("ray", "a local Ray cluster")
        token = Path(self.token_dir) / "auth_token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        for name, value in self.env().items():
            self._saved_env[name] = os.environ.get(name)
            os.environ[name] = value
        from ray.cluster_utils import Cluster  # Ray reads RAY_AUTH_* when first imported

        started = time.monotonic()
        self.cluster = Cluster(initialize_head=True, head_node_args={
            "node_ip_address": self.head_address, "num_cpus": 0, "include_dashboard": False,
            "_system_config": FAST_HEALTH_CHECK,
        })
        for node in self.spec:
            self.add(node)
        self.started_s = time.monotonic() - started
        return self

    @property
    def address(self) -> str:
        return self.cluster.address

    def add(self, node: BotNode) -> None:
        self.nodes[node.address] = self.cluster.add_node(
            node_ip_address=node.address, num_cpus=node.cpus, memory=node.mem_mb * MiB,
            resources={"bandwidth_kbps": node.kbps}, labels={"region": node.region})

    def remove(self, address: str) -> None:
        """Kill a node's raylet and its workers at once, as a crashed machine would go."""
        self._remove(self.nodes.pop(address))

    def _remove(self, node: Any) -> None:
        # The node's agents outlive a killed raylet for a while: end every process it started.
        started = _descendants([p.process.pid for procs in node.all_processes.values() for p in procs])
        self.cluster.remove_node(node, allow_graceful=False)
        for pid in started:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def shutdown(self) -> None:
        if self.cluster is not None:
            for address in list(self.nodes):
                self.remove(address)
            self._remove(self.cluster.head_node)
            self.cluster = None
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _descendants(roots: list[int]) -> list[int]:
    """`roots` and every process below them, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found
