"""The one exception tree of voxfleet.

Every error voxfleet raises on purpose derives from :class:`VoxfleetError`. Exceptions keep
their fields and build their message in ``__str__``; the edge (``control/errors.py``) is the
only place that maps them to HTTP status codes.

    VoxfleetError
    ├── ConfigError                  bad settings / agent definition (at start)
    │   └── ExtraNotInstalled        a feature needs an optional extra (voxfleet[ray], voxfleet[plots])
    ├── InvalidRequest               a request field has a bad value            -> 400
    ├── RequestTooLarge              body over the configured limit              -> 413
    ├── Unauthorized                 no API key, or not a live key of ours       -> 401
    ├── Forbidden                    the key's scope does not allow this         -> 403
    ├── NotFound
    │   ├── AgentNotFound                                                        -> 404
    │   ├── SessionNotFound                                                      -> 404
    │   ├── PeerNotFound             a pc_id that is not the session's peer connection -> 404
    │   ├── CallNotFound             no phone call with that id                  -> 404
    │   └── RecordingNotFound        a session without a recording to serve, and why -> 404
    ├── SessionConflict              operation not valid in the session's state  -> 409
    ├── NotReady                     nothing can serve a session yet (or draining) -> 503
    ├── AtCapacity                   no capacity and the queue is full / wait over -> 429
    │   └── ClientLimited            one client over its rate, its sessions not yet
    │                                connected, or its share of capacity or queue  -> 429
    ├── Unplaceable                  no node could ever run it (region, size), or the
    │                                cluster did not place it within the bound     -> 422
    ├── BotError                     the bot process failed us                   -> 502
    │   └── BotStartFailed
    ├── SignalingTimeout             the bot did not answer signaling in time    -> 504
    ├── MediaPortsExhausted          every UDP port of `media_ports` is in use   -> 503
    ├── TurnCheckFailed              a TURN server refused us (start-up check)
    ├── TelephonySignatureInvalid    a telephony webhook not signed by the provider -> 403
    ├── CarrierNotConfigured         a carrier's REST API is needed but has no credentials -> 409
    ├── CarrierError                 a carrier's REST API failed us (unreachable, 5xx) -> 502
    └── StreamRejected               a media WebSocket we close          -> WS close code + reason
        ├── StreamTokenInvalid       missing, forged, expired or reused stream token  (4003)
        │   └── StreamCredentialsInvalid  a carrier's stream handshake without its credentials (4003)
        └── StreamProtocolError      a frame that breaks the provider's protocol      (1007/1008)
"""

from __future__ import annotations

from typing import Any


def field_problem(field: str, value: Any, reason: str, width: int) -> str:
    """``field: reason (got value)``, the value's repr cut to `width` characters."""
    shown = repr(value)
    if len(shown) > width:
        shown = shown[: width - 3] + "..."
    return f"{field}: {reason} (got {shown})"


class VoxfleetError(Exception):
    """Root of every error voxfleet raises on purpose."""

    code = "INTERNAL"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self.detail = detail

    def __str__(self) -> str:
        return self.detail


class ConfigError(VoxfleetError):
    code = "CONFIG_ERROR"


class ExtraNotInstalled(ConfigError):
    """`feature` needs `module`, which comes with the optional extra ``voxfleet[extra]``."""

    def __init__(self, feature: str, module: str, extra: str) -> None:
        super().__init__()
        self.feature, self.module, self.extra = feature, module, extra

    def __str__(self) -> str:
        return (f"{self.feature} needs {self.module}, which is not installed: install the {self.extra!r} extra "
                f"(pip install 'voxfleet[{self.extra}]'; from a clone: pip install -e '.[{self.extra}]')")


class NamesField:
    """Mixin for errors about one field's value: the message names the field and the value
    (its repr cut to `shown_width` characters)."""

    shown_width = 80

    def __init__(self, field: str, value: Any, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(str(self))  # type: ignore[call-arg]  # VoxfleetError's detail

    def __str__(self) -> str:
        return field_problem(self.field, self.value, self.reason, width=self.shown_width)


class InvalidRequest(NamesField, VoxfleetError):
    """A request field has a value we cannot accept. Names the field and the value."""

    code = "INVALID_REQUEST"


class RequestTooLarge(VoxfleetError):
    code = "REQUEST_TOO_LARGE"

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"request body is {self.size} bytes, over the limit of {self.limit} bytes"


class Unauthorized(VoxfleetError):
    code = "UNAUTHORIZED"


class Forbidden(VoxfleetError):
    code = "FORBIDDEN"


class NotFound(VoxfleetError):
    code = "NOT_FOUND"


class AgentNotFound(NotFound):
    code = "AGENT_NOT_FOUND"

    def __init__(self, agent: str, known: list[str]) -> None:
        self.agent = agent
        self.known = known
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"agent: no agent named {self.agent!r} (configured: {', '.join(self.known) or 'none'})"


class SessionNotFound(NotFound):
    code = "SESSION_NOT_FOUND"

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"sessionId: no session {self.session_id!r}"


class PeerNotFound(NotFound):
    code = "PEER_NOT_FOUND"

    def __init__(self, session_id: str, pc_id: str) -> None:
        self.session_id = session_id
        self.pc_id = pc_id
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"pc_id: session {self.session_id} has no peer connection {self.pc_id[:80]!r}"


class CallNotFound(NotFound):
    code = "CALL_NOT_FOUND"

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        super().__init__(f"no phone call {call_id!r} (a call's id is its session id)")


class RecordingNotFound(NotFound):
    """A session's recording cannot be served; `why` names the reason (its code: RECORDING_<WHY>)."""

    REASONS = {
        "off": "agent {agent!r} does not record its sessions (record = false)",
        "not_ready": "the session has not ended yet, or its recording is being finished; try again shortly",
        "empty": "the session's bot never had audio to record",
        "expired": "the recording was deleted after recordings.retention_days",
        "missing": "the recording's file is gone from the recordings directory",
    }

    def __init__(self, session_id: str, why: str, agent: str = "") -> None:
        if why not in self.REASONS:
            raise ValueError(f"why: one of {', '.join(self.REASONS)} (got {why!r})")
        self.session_id, self.why, self.agent = session_id, why, agent
        self.code = f"RECORDING_{why.upper()}"
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"session {self.session_id}: no recording: {self.REASONS[self.why].format(agent=self.agent)}"


class SessionConflict(VoxfleetError):
    code = "SESSION_CONFLICT"

    def __init__(self, session_id: str, state: str, action: str) -> None:
        self.session_id = session_id
        self.state = state
        self.action = action
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"cannot {self.action}: session {self.session_id} is {self.state}"


class NotReady(VoxfleetError):
    code = "NOT_READY"


class AtCapacity(VoxfleetError):
    """No capacity now and no room (or time) left in the queue. Carries a Retry-After hint."""

    code = "AT_CAPACITY"

    def __init__(self, detail: str, retry_after_s: int) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(detail)


class ClientLimited(AtCapacity):
    """One client (an API key, else a source address) is over a per-client bound; others are
    still served. ``code`` names the bound: RATE_LIMITED, TOO_MANY_PENDING or CLIENT_SHARE."""

    code = "CLIENT_LIMITED"

    def __init__(self, detail: str, retry_after_s: int, code: str) -> None:
        super().__init__(detail, retry_after_s)
        self.code = code


class Unplaceable(VoxfleetError):
    """A bot that no node can run: an unknown region, a profile bigger than every node of the
    regions asked for, or a placement the cluster did not make within the configured bound."""

    code = "UNPLACEABLE"

    def __init__(self, detail: str, region: str | None = None) -> None:
        self.region = region
        super().__init__(detail)


class BotError(VoxfleetError):
    code = "BOT_ERROR"


class BotStartFailed(BotError):
    code = "BOT_START_FAILED"


class SignalingTimeout(VoxfleetError):
    code = "SIGNALING_TIMEOUT"

    def __init__(self, session_id: str, seconds: float) -> None:
        self.session_id = session_id
        self.seconds = seconds
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"bot for session {self.session_id} did not answer within {self.seconds:.1f}s"


class MediaPortsExhausted(VoxfleetError):
    """Every UDP port of the configured ``media_ports`` range is taken on `host`."""

    code = "MEDIA_PORTS_EXHAUSTED"

    def __init__(self, first: int, last: int, host: str) -> None:
        self.first = first
        self.last = last
        self.host = host
        super().__init__(str(self))

    def __str__(self) -> str:
        return (f"media_ports: all {self.last - self.first + 1} UDP ports of {self.first}-{self.last} are in use "
                f"on {self.host}; widen the range or admit fewer sessions")


class TurnCheckFailed(VoxfleetError):
    """A configured TURN server could not be used with the credentials voxfleet has for it."""

    code = "TURN_CHECK_FAILED"

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"ice_servers: TURN server {self.url}: {self.reason}"


class CarrierNotConfigured(VoxfleetError):
    """An action needs a carrier's REST API (dial out, transfer) but its credentials are not set."""

    code = "CARRIER_NOT_CONFIGURED"


class CarrierError(VoxfleetError):
    """A carrier's REST API could not do what was asked (unreachable, or it answered an error that
    is not about a field of the request)."""

    code = "CARRIER_ERROR"


class TelephonySignatureInvalid(Forbidden):
    """A telephony webhook whose signature does not verify (or cannot be checked)."""

    code = "SIGNATURE_INVALID"


class StreamRejected(VoxfleetError):
    """A media WebSocket voxfleet closes; ``control/errors.py`` maps it to a close code."""

    code = "STREAM_REJECTED"


class StreamTokenInvalid(StreamRejected):
    code = "STREAM_TOKEN_INVALID"


class StreamCredentialsInvalid(StreamTokenInvalid):
    """A carrier's media WebSocket whose handshake lacks the carrier's credentials (Exotel's Basic auth)."""

    code = "STREAM_CREDENTIALS_INVALID"


class StreamProtocolError(NamesField, StreamRejected):
    """A frame that breaks the stream's protocol. Names the field and the value, like InvalidRequest."""

    code = "STREAM_PROTOCOL_ERROR"
    shown_width = 40  # the message must fit a WebSocket close reason
