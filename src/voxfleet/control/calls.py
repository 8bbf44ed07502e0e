"""Phone calls, whatever the carrier: what a call's webhook should do, decided once.

Each carrier's webhook (Twilio, Telnyx, Plivo, ...) verifies its own signature, reads its own
fields and renders its own markup; what to do with the call is the same for all of them and is
decided here: connect it to a bot's media stream, have the caller hold (hearing ``busy_message``,
back in ``hold_check_s``) or say goodbye. A carrier's call id maps to one session, so a replayed
or retried webhook never starts a second one. Once a stream has ended, :func:`after_stream` says
whether the caller must hear ``lost_message`` (the bot failed) before the call ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Union
from urllib.parse import quote

from voxfleet.control.state import AppState
from voxfleet.end_reasons import EndReason
from voxfleet.exceptions import AtCapacity, NotReady, SessionNotFound, Unplaceable
from voxfleet.scheduler.sessions import ENDED, QUEUED

log = logging.getLogger(__name__)

MAX_CALLS_REMEMBERED = 10_000  # carrier call id -> session, so a replayed webhook starts no second session
ENDED_WAIT_S = 3.0  # how long a stream-ended request waits for the session's end


@dataclass(frozen=True)
class ConnectStream:
    """Answer with the carrier's stream markup for this session."""

    session_id: str


@dataclass(frozen=True)
class Hold:
    """Say `busy_message` (if `say`), pause hold_check_s, come back to the webhook with `query`."""

    say: bool
    query: str


@dataclass(frozen=True)
class Goodbye:
    """Say `message`, then hang up."""

    message: str


CallAnswer = Union[ConnectStream, Hold, Goodbye]


def max_hold_attempts(state: AppState) -> int:
    """How many times a held caller is redirected back before being told goodbye."""
    return max(1, int(state.settings.queue_wait_s // state.settings.telephony.hold_check_s))


async def admit_call(state: AppState, *, carrier: str, agent: str, call_id: str, call: dict[str, Any],
                     caller: str | None, attempt: int = 0, held: str | None = None,
                     region: str | None = None) -> CallAnswer:
    """A carrier's voice webhook for call `call_id` (its fields `call`, given to the bot as
    ``body["call"]``): admit it like any session, or hold, or goodbye. `held`: the session a
    held caller comes back for; `attempt`: how many times a caller without one came back."""
    tel = state.settings.telephony
    keep = f"&region={quote(region)}" if region else ""
    if held:
        return _check_held(state, held, keep)
    known = state.call_sessions.get(f"{carrier}:{call_id}")
    if known is not None:  # a replayed (or retried) webhook of a call that has its session
        return _answer_again(state, call_id, known)
    # one calling number is one client (unbounded with --dev)
    client = f"phone:{caller or 'unknown'}" if await state.auth.enabled() else None
    service = state.service
    busy_goodbye = f"{tel.busy_message.split('.')[0]}. {tel.goodbye_message}"
    try:
        if client is not None:
            service.check_rate(client)
        record = await service.start_session(agent, {"call": call}, transport=carrier, region=region, client=client)
    except Unplaceable as exc:  # no node could ever take it: a misconfigured number, not busy
        log.error("%s call %s for %s: %s", carrier, call_id, agent, exc)
        return Goodbye(tel.goodbye_message)
    except (AtCapacity, NotReady) as exc:
        log.warning("%s call %s for %s: %s", carrier, call_id, agent, exc)
        if tel.when_busy == "hold" and attempt < max_hold_attempts(state):
            return Hold(say=attempt == 0, query=f"attempt={attempt + 1}{keep}")
        return Goodbye(tel.goodbye_message if attempt else busy_goodbye)
    record.call = {"carrier": carrier, "direction": "inbound", "carrierCallId": call_id, "from": caller,
                   "to": call.get("To")}
    remember_call(state, carrier, call_id, record.session_id)
    if record.state != QUEUED:
        return ConnectStream(record.session_id)
    if tel.when_busy == "hangup":
        await service.hang_up(record.session_id, EndReason.BUSY)
        return Goodbye(busy_goodbye)
    return Hold(say=True, query=f"session={record.session_id}{keep}")


def remember_call(state: AppState, carrier: str, call_id: str, session_id: str) -> None:
    """Carrier call id -> session (the most recent MAX_CALLS_REMEMBERED)."""
    state.call_sessions[f"{carrier}:{call_id}"] = session_id
    while len(state.call_sessions) > MAX_CALLS_REMEMBERED:
        state.call_sessions.popitem(last=False)


def _answer_again(state: AppState, call_id: str, session_id: str) -> CallAnswer:
    """The same call again (a replayed or retried webhook): never a second session. A session
    still waiting for its stream is offered it again (one stream per session: the first to
    connect has it); a held one goes on holding; for one that is streaming or over, goodbye
    (which reaches only whoever replayed the webhook, not the live call)."""
    try:
        record = state.service.get(session_id)
    except SessionNotFound:
        return Goodbye(state.settings.telephony.goodbye_message)
    log.warning("call %s: webhook again for session %s (%s): no second session", call_id, session_id, record.state)
    if record.state == QUEUED:
        return Hold(say=False, query=f"session={session_id}")
    if record.state != ENDED and "stream_connected" not in record.timings_ms:
        return ConnectStream(session_id)
    return Goodbye(state.settings.telephony.goodbye_message)


def _check_held(state: AppState, session_id: str, keep: str) -> CallAnswer:
    tel = state.settings.telephony
    try:
        record = state.service.get(session_id)
    except SessionNotFound:
        return Goodbye(tel.goodbye_message)
    if record.state == QUEUED:
        return Hold(say=False, query=f"session={session_id}{keep}")
    if record.state == ENDED:
        return Goodbye(tel.goodbye_message)
    return ConnectStream(session_id)


async def after_stream(state: AppState, session_id: str) -> str | None:
    """A call's media stream ended with the call still up: the message its caller must hear
    before the call ends (``lost_message``: its bot failed), or None (just hang up)."""
    try:
        record = state.service.get(session_id)
    except SessionNotFound:
        return None
    deadline = time.monotonic() + ENDED_WAIT_S  # the stream closes a moment before the record ends
    while record.state != ENDED and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if record.end_reason is not None and EndReason(record.end_reason).failed:
        log.warning("session %s: its bot failed (%s); the caller is told", session_id, record.end_reason)
        return state.settings.telephony.lost_message
    return None
