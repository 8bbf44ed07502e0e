"""The runtime protocol: what the control plane needs from any place bots can run.

The local backend (``runtime/local``) forks bots from per-agent template processes; a Ray
backend implements the same protocol with actors. The scheduler only talks to this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class BotExit:
    """How a bot ended, as observed by the runtime.

    reason: ``normal`` (bot returned), ``bot_error`` (bot raised), ``crashed`` (killed by a
    signal or exited without reporting), ``hangup`` (we asked it to stop), ``timeout``.
    """

    reason: str
    exit_code: int | None = None
    signal: int | None = None
    detail: str = ""


@dataclass
class BotInfo:
    """What the runtime knows of a live bot, for the session record."""

    pid: int | None = None
    node: str = "local"
    timings: dict[str, float] = field(default_factory=dict)


class BotHandle(Protocol):
    """One bot process hosting one session."""

    session_id: str
    info: BotInfo

    async def offer(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Relay a SmallWebRTC offer ({sdp, type, pc_id, restart_pc, request_data}); return the answer."""

    async def add_ice_candidates(self, pc_id: str, candidates: list[dict[str, Any]], timeout: float) -> None:
        """Relay trickled ICE candidates ({candidate, sdp_mid, sdp_mline_index})."""

    async def wait_exit(self) -> BotExit:
        """Wait until the bot process is gone; tell how it ended."""

    async def stop(self, reason: str, grace: float = 2.0) -> None:
        """Ask the bot to end the session; kill it if it has not exited after `grace` seconds."""


class Backend(Protocol):
    """A place where bots run."""

    async def start(self) -> None:
        """Prepare (templates, connections); return once ready or raise."""

    def ready(self) -> bool:
        """True when every agent can be served right now."""

    def status(self) -> dict[str, Any]:
        """Per-agent readiness and figures for health and operator views."""

    async def launch(self, agent: str, session_id: str, body: Any) -> BotHandle:
        """Start a fresh bot for one session of `agent`."""

    async def aclose(self) -> None:
        """Stop every bot and template."""
