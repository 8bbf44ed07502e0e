"""The runtime protocol: what the control plane needs from any place bots can run.

The local backend (``runtime/local``) forks bots from per-agent template processes; a Ray
backend implements the same protocol with actors. The scheduler only talks to this.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from voxfleet.observability.turns import TurnBreakdown
from voxfleet.runtime.streams import RelayStream

LOCAL_REGION = "local"

IceServersFor = Callable[[str], list[dict[str, Any]]]  # session id -> RTCIceServer-shaped dicts minted for it


def no_ice_servers(_session_id: str) -> list[dict[str, Any]]:
    return []


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
    node: str = "local"  # the node's address (a Ray node: its IP)
    region: str = LOCAL_REGION
    warmup_ms: float | None = None
    events: dict[str, float] = field(default_factory=dict)  # name -> epoch seconds
    turns: list[TurnBreakdown] = field(default_factory=list)  # voice-to-voice per turn, by stage
    transcript: list[dict[str, Any]] = field(default_factory=list)  # {role, text, at}
    ttfb_s: dict[str, list[float]] = field(default_factory=dict)  # service -> TTFB per request
    model_loads: list[dict[str, Any]] = field(default_factory=list)  # runtime.model_preload reports
    preloaded: int | None = None  # models a warm bot built for its session before it had one


@dataclass(frozen=True)
class NodeInfo:
    """A machine of a cluster backend that can run bots, and what it offers them."""

    node_id: str
    region: str
    address: str
    cpu_millis: int
    mem_mb: int
    kbps: int


class BotHandle(Protocol):
    """One bot process; it hosts one session (a warm bot: not yet assigned)."""

    bot_id: str
    agent: str
    session_id: str | None
    info: BotInfo
    stream: RelayStream | None  # its media WebSocket, once open_stream was called

    async def assign(self, session_id: str, body: Any, timeout: float) -> None:
        """Hand a warm bot its session."""

    async def offer(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Relay a SmallWebRTC offer ({sdp, type, pc_id, restart_pc, request_data}); return the answer."""

    async def add_ice_candidates(self, pc_id: str, candidates: list[dict[str, Any]], timeout: float) -> None:
        """Relay trickled ICE candidates ({candidate, sdp_mid, sdp_mline_index})."""

    async def open_stream(self, request: dict[str, Any], timeout: float) -> RelayStream:
        """Run the session's bot on a media WebSocket relayed through the control plane
        ({transport: "twilio"|"websocket", path, headers, client}); frames then go through the
        returned stream (``runtime.streams``)."""

    def memory_mb(self) -> float | None:
        """The bot's memory use (PSS, MiB), or None if unknown."""

    async def wait_exit(self) -> BotExit:
        """Wait until the bot process is gone; tell how it ended."""

    async def stop(self, reason: str, grace: float = 2.0) -> None:
        """Ask the bot to end the session; kill it if it has not exited after `grace` seconds."""


class Backend(Protocol):
    """A place where bots run."""

    on_nodes_changed: Callable[[], None]  # set by the scheduler; called when nodes() changes

    async def start(self) -> None:
        """Prepare (templates, connections); return once ready or raise."""

    def ready(self) -> bool:
        """True when every agent can be served right now."""

    def agent_ready(self, agent: str) -> bool:
        """True when `agent`'s bots can be started right now (one agent's template restarting
        does not hold up the others)."""

    def status(self) -> dict[str, Any]:
        """Per-agent readiness and figures for health and operator views."""

    def nodes(self) -> list[NodeInfo] | None:
        """The nodes bots can run on now, or None for one machine whose capacity is configured."""

    async def launch(self, agent: str, bot_id: str, session_id: str | None = None, body: Any = None,
                     node_id: str | None = None) -> BotHandle:
        """Start a fresh bot of `agent` on `node_id` (where its reservation is): for `session_id`
        (cold start), or warm (no session) and return once it is ready to be assigned one."""

    async def aclose(self) -> None:
        """Stop every bot and template."""
