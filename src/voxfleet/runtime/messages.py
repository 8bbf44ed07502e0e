"""Every message between the control plane, template processes and bots, typed, and their codec.

One frozen dataclass per message kind; its ``kind`` is the only place the kind's name is spelled.
``encode(message)`` gives one line of the control socket (``wire``: a JSON object whose ``"t"``
is the kind; fields that are None are left out); ``decode(line)`` checks the kind and every
field and raises :class:`wire.WireError` naming what is wrong. The Ray backend moves the same
objects (pickled by Ray) instead of lines, so both backends speak one vocabulary.

Who sends what:

- control -> template: :class:`Fork`, :class:`Shutdown`
- template -> control: :class:`TemplateReady`, :class:`Forked`, :class:`ForkFailed`, :class:`Exited`
- control -> bot: :class:`Assign`, :class:`Preload`, :class:`Offer`, :class:`Ice`,
  :class:`WsOpen`, :class:`WsIn`, :class:`WsClose`, :class:`Stop`
- bot -> control: :class:`BotHello`, :class:`BotResume`, :class:`WarmReady`, :class:`Preloaded`,
  :class:`ModelLoad`, the replies (:class:`Assigned`, :class:`Answer`, :class:`IceOk`,
  :class:`WsOpened`, :class:`Error`), the observations (:class:`Event`, :class:`Turn`,
  :class:`Transcript`, :class:`Ttfb`, :class:`Memory`), the relayed media WebSocket
  (:class:`WsOut`, :class:`WsClose`, :class:`RelayStats`) and :class:`Ended`.

:class:`SessionStart` (what a bot needs to take a session) travels whole inside :class:`Fork`
and :class:`Assign`; :class:`BotSpec` (an agent's bot settings, built once from ``Settings``)
is handed whole to each template and Ray actor.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

from voxfleet.runtime.wire import WireError
from voxfleet.runtime import wire


# -- what travels inside messages ---------------------------------------------------------------
@dataclass(frozen=True)
class SessionStart:
    """A session handed to a bot: its id, the client's body, the ICE servers minted for it."""

    session_id: str
    body: Any = None
    ice_servers: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class BotSpec:
    """One agent's bot settings, built once from ``Settings`` and given whole to every template
    (local backend) or bot actor (Ray backend) of the agent. Secrets (the bots' environment)
    are not part of it: a template gets its spec on its command line."""

    agent: str
    bot: str  # path of the bot file or a dotted module name
    log_level: str
    log_format: str  # text | journald | json (resolved, never "auto")
    idle_timeout_s: float  # no packet from the caller for this long ends the session
    reconnect_s: float  # a bot in a call tries this long to rejoin a restarted control plane
    memory_check_s: float  # how often a Ray bot samples its memory for the control plane
    warm_nice: int = 0  # a warm bot's nice value until it takes a session
    advertised_addresses: list[str] = field(default_factory=list)
    media_ports: tuple[int, int] | None = None
    recordings_dir: str | None = None  # the agent records: each session's audio goes here (recording_observer)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> BotSpec:
        try:
            fields = json.loads(text)
        except json.JSONDecodeError as exc:
            raise WireError(f"bot spec is not JSON: {exc.msg} at {exc.pos}") from None
        if not isinstance(fields, dict):
            raise WireError("bot spec must be a JSON object")
        return _build(cls, fields, "bot spec")


# -- control -> template ------------------------------------------------------------------------
@dataclass(frozen=True)
class Fork:
    """Fork a bot: for `start` (a cold start), or warm, pre-building the models of `preload`."""

    kind: ClassVar[str] = "fork"
    bot_id: str
    start: SessionStart | None = None
    preload: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class Shutdown:
    kind: ClassVar[str] = "shutdown"


# -- template -> control ------------------------------------------------------------------------
@dataclass(frozen=True)
class TemplateReady:
    kind: ClassVar[str] = "template_ready"
    agent: str
    pid: int
    import_s: float
    preload_s: float


@dataclass(frozen=True)
class Forked:
    kind: ClassVar[str] = "forked"
    bot_id: str
    pid: int


@dataclass(frozen=True)
class ForkFailed:
    """The template could not fork the bot: ``os.fork()`` raised (EAGAIN, ENOMEM)."""

    kind: ClassVar[str] = "fork_failed"
    bot_id: str
    error: str


@dataclass(frozen=True)
class Exited:
    """A child reaped: its exit code, or the signal that killed it."""

    kind: ClassVar[str] = "exited"
    pid: int
    bot_id: str | None = None  # None: a child the template did not know
    exit_code: int | None = None
    signal: int | None = None


# -- control -> bot -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Assign:
    kind: ClassVar[str] = "assign"
    id: int
    start: SessionStart


@dataclass(frozen=True)
class Preload:
    """A warm bot: the agent's bot builds these models now, build them too."""

    kind: ClassVar[str] = "preload"
    models: list[dict[str, Any]]


@dataclass(frozen=True)
class Offer:
    """A SmallWebRTC offer relayed to the bot."""

    kind: ClassVar[str] = "offer"
    id: int
    sdp: str
    type: str
    pc_id: str | None = None
    restart_pc: bool | None = None
    request_data: Any = None


@dataclass(frozen=True)
class Ice:
    """Trickled ICE candidates ({candidate, sdp_mid, sdp_mline_index})."""

    kind: ClassVar[str] = "ice"
    id: int
    pc_id: str
    candidates: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class WsOpen:
    """Run the session's bot on a media WebSocket relayed by the control plane."""

    kind: ClassVar[str] = "ws_open"
    id: int
    transport: str  # twilio | websocket
    path: str = "/"
    headers: list[tuple[str, str]] = field(default_factory=list)
    client: list[Any] | None = None  # [host, port]
    scheme: str = "ws"
    clock: str | None = None  # the control plane's clock (streams.clock_id)


@dataclass(frozen=True)
class WsIn:
    """A caller's frame: text, or bytes in base64; `at` is the sender's time.monotonic()."""

    kind: ClassVar[str] = "ws_in"
    text: str | None = None
    bytes: str | None = None
    at: float | None = None


@dataclass(frozen=True)
class WsClose:
    """A relayed media WebSocket closed (either way: the caller's, or the bot's)."""

    kind: ClassVar[str] = "ws_close"
    code: int = 1000
    reason: str = ""


@dataclass(frozen=True)
class Stop:
    kind: ClassVar[str] = "stop"
    reason: str = "hangup"


# -- bot -> control -----------------------------------------------------------------------------
@dataclass(frozen=True)
class BotHello:
    kind: ClassVar[str] = "bot_hello"
    bot_id: str
    pid: int
    at: float


@dataclass(frozen=True)
class BotResume:
    """A bot still in a call rejoins a (restarted) control plane."""

    kind: ClassVar[str] = "bot_resume"
    bot_id: str
    session_id: str
    agent: str
    pid: int
    at: float


@dataclass(frozen=True)
class WarmReady:
    kind: ClassVar[str] = "warm_ready"
    warmup_ms: float
    preloaded: int = 0
    preload_problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Preloaded:
    kind: ClassVar[str] = "preloaded"
    count: int


@dataclass(frozen=True)
class ModelLoad:
    """A model the bot built (runtime.model_preload's report of it)."""

    kind: ClassVar[str] = "model_load"
    model: dict[str, Any]
    in_session: bool = False


@dataclass(frozen=True)
class Assigned:
    kind: ClassVar[str] = "assigned"
    id: int
    session_id: str


@dataclass(frozen=True)
class Answer:
    kind: ClassVar[str] = "answer"
    id: int
    sdp: str | None = None  # None (with type and pc_id): Pipecat's handler answered nothing
    type: str | None = None
    pc_id: str | None = None


@dataclass(frozen=True)
class IceOk:
    kind: ClassVar[str] = "ice_ok"
    id: int


@dataclass(frozen=True)
class WsOpened:
    kind: ClassVar[str] = "ws_opened"
    id: int


@dataclass(frozen=True)
class Error:
    """A request failed; `code` and `media_ports` ([first, last, host]) for MediaPortsExhausted."""

    kind: ClassVar[str] = "error"
    id: int
    message: str
    code: str | None = None
    media_ports: list[Any] | None = None


@dataclass(frozen=True)
class Event:
    """A moment of the session (bot_started, client_connected, first_audio, ...)."""

    kind: ClassVar[str] = "event"
    name: str
    at: float


@dataclass(frozen=True)
class Turn:
    """One user turn, timed (observability.turns)."""

    kind: ClassVar[str] = "turn"
    v2v_ms: float
    stages_ms: dict[str, float]
    speech_end: float | None = None
    at: float | None = None


@dataclass(frozen=True)
class Transcript:
    kind: ClassVar[str] = "transcript"
    role: str  # user | bot
    text: str
    at: float


@dataclass(frozen=True)
class Ttfb:
    kind: ClassVar[str] = "ttfb"
    processor: str
    seconds: float


@dataclass(frozen=True)
class Memory:
    """The bot's memory use (PSS, MiB), sampled in a Ray bot for the control plane's limit."""

    kind: ClassVar[str] = "memory"
    mb: float
    at: float


@dataclass(frozen=True)
class WsOut:
    """A frame the bot sends its caller (text, or bytes in base64)."""

    kind: ClassVar[str] = "ws_out"
    text: str | None = None
    bytes: str | None = None
    at: float | None = None


@dataclass(frozen=True)
class RelayStats:
    """Inbound relay latency of a media WebSocket, ms (streams.LatencySamples.summary), and
    the caller frames dropped because the bot did not read them (ws_relay.MAX_INBOX)."""

    kind: ClassVar[str] = "relay_stats"
    frames: int
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    dropped: int | None = None

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Ended:
    """How the session ended, reported by the bot before it exits."""

    kind: ClassVar[str] = "ended"
    reason: str
    detail: str = ""


@dataclass(frozen=True)
class Heartbeat:
    """The bot's event loop runs (sent every few seconds): a bot that sends nothing for
    ``unresponsive_s`` is taken as hung and killed (runtime/liveness.py)."""

    kind: ClassVar[str] = "heartbeat"


Message = Union[
    Fork, Shutdown, TemplateReady, Forked, ForkFailed, Exited, Assign, Preload, Offer, Ice, WsOpen, WsIn, WsClose,
    Stop, BotHello, BotResume, WarmReady, Preloaded, ModelLoad, Assigned, Answer, IceOk, WsOpened, Error, Event,
    Turn, Transcript, Ttfb, Memory, WsOut, RelayStats, Ended, Heartbeat,
]
KINDS: dict[str, type] = {cls.kind: cls for cls in typing.get_args(Message)}
Request = Union[Assign, Offer, Ice, WsOpen]  # control -> bot, each answered by a Reply with its id
Reply = Union[Assigned, Answer, IceOk, WsOpened, Error]
REPLIES = typing.get_args(Reply)


# -- the codec ----------------------------------------------------------------------------------
def encode(message: Message) -> bytes:
    """One line of the control socket."""
    return wire.encode(message.kind, **_fields(message))


def decode(line: bytes) -> Message:
    """The message in one line; raises WireError naming the kind, field and value at fault."""
    fields = wire.decode(line)
    kind = fields.pop("t")
    cls = KINDS.get(kind)
    if cls is None:
        raise WireError(f"unknown message kind {kind!r}")
    return _build(cls, fields, f"{kind!r} message")


def _fields(message: Any) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(message).items() if v is not None}


def _build(cls: type, fields: dict[str, Any], what: str) -> Any:
    hints = _hints(cls)
    unknown = sorted(set(fields) - set(hints))
    if unknown:
        raise WireError(f"{what} has unknown field(s) {', '.join(map(repr, unknown))}")
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in fields:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise WireError(f"{what} lacks field {f.name!r}")
            continue
        values[f.name] = _check(fields[f.name], hints[f.name], f"{what} field {f.name!r}")
    return cls(**values)


def _check(value: Any, annotation: Any, where: str) -> Any:
    """`value` as `annotation` wants it, or WireError. Containers are checked one level deep."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return value
    if origin in (Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check(value, option, where)
            except WireError as exc:
                errors.append(exc)
        raise errors[0]
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise WireError(f"{where} must be an object, got {_shown(value)}")
        return _build(annotation, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(typing.get_args(annotation)):
            raise WireError(f"{where} must be a list of {len(typing.get_args(annotation))}, got {_shown(value)}")
        return tuple(_check(v, t, where) for v, t in zip(value, typing.get_args(annotation)))
    if origin is list:
        if not isinstance(value, list):
            raise WireError(f"{where} must be a list, got {_shown(value)}")
        (item,) = typing.get_args(annotation)
        return [_check(v, item, where) for v in value]
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise WireError(f"{where} must be an object, got {_shown(value)}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise WireError(f"{where} must be a number, got {_shown(value)}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise WireError(f"{where} must be an integer, got {_shown(value)}")
        return value
    if annotation in (str, bool):
        if not isinstance(value, annotation):
            raise WireError(f"{where} must be a {annotation.__name__}, got {_shown(value)}")
        return value
    raise TypeError(f"messages: no check for {annotation!r} ({where})")  # a field type this codec lacks


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = {k: v for k, v in typing.get_type_hints(cls).items()
                       if typing.get_origin(v) is not ClassVar}
    return _HINTS[cls]
