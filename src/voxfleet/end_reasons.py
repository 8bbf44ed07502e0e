"""Why a session, or a bot, ended: the one list of end reasons (pure, imports nothing of ours).

Every layer names reasons (the runtime when a bot exits, the scheduler when it stops one, the
control plane for hang-ups, telephony and restarts), so the list lives here at the top of the
package, beside ``exceptions.py``, where any layer may import it without pointing upwards.

A reason is a ``str`` enum: a member equals, formats and JSON-encodes as its value, so session
records, the store's ``end_reason`` column, the ``voxfleet_sessions_ended{reason}`` metric and the
``endReason`` of webhook payloads carry the same plain strings as before. docs/end-reasons.md
holds the same table for readers; a unit test keeps the two in step.
"""

from __future__ import annotations

from enum import StrEnum


class EndReason(StrEnum):
    """How a session ended (``SessionRecord.end_reason``), or why a bot without one stopped."""

    HANGUP = "hangup"
    BOT_ENDED = "bot_ended"
    BOT_ERROR = "bot_error"
    CRASHED = "crashed"
    TIMEOUT = "timeout"
    MAX_DURATION = "max_duration"
    MEMORY_LIMIT = "memory_limit"
    IDLE_TIMEOUT = "idle_timeout"
    PROTOCOL_ERROR = "protocol_error"
    START_FAILED = "start_failed"
    UNPLACEABLE = "unplaceable"
    MEDIA_PORTS_EXHAUSTED = "media_ports_exhausted"
    QUEUE_TIMEOUT = "queue_timeout"
    BUSY = "busy"
    SHUTDOWN = "shutdown"
    CONTROL_LOST = "control_lost"
    CONTROL_RESTART = "control_restart"
    NODE_LOST = "node_lost"
    RETIRED = "retired"
    WARMUP_FAILED = "warmup_failed"
    NO_ANSWER = "no_answer"
    CALLEE_BUSY = "callee_busy"
    DIAL_FAILED = "dial_failed"
    CANCELED = "canceled"
    TRANSFERRED = "transferred"

    @property
    def meaning(self) -> str:
        """What happened, in a sentence (the table of docs/end-reasons.md)."""
        return MEANINGS[self]

    @property
    def failed(self) -> bool:
        """True if the platform or the bot failed the caller: the ``session.failed`` webhook."""
        return self in FAILED_REASONS


MEANINGS: dict[EndReason, str] = {
    EndReason.HANGUP: "the caller hung up: the client left, its media stream closed, or DELETE /v1/sessions/{id}",
    EndReason.BOT_ENDED: "the bot finished the session itself (its bot() returned, or it closed the media stream)",
    EndReason.BOT_ERROR: "the bot raised an exception",
    EndReason.CRASHED: "the bot's process (or Ray actor) died: a signal, or an exit without reporting",
    EndReason.TIMEOUT: "the caller did not connect in time: no WebRTC offer (or media stream) within "
                       "offer_timeout_s, or an outbound call's stream within its ring timeout",
    EndReason.MAX_DURATION: "the session reached max_session_s",
    EndReason.MEMORY_LIMIT: "the bot used more memory (PSS) than its profile reserves",
    EndReason.IDLE_TIMEOUT: "no packet from the caller for idle_timeout_s",
    EndReason.PROTOCOL_ERROR: "the caller's media stream sent a frame that breaks its protocol",
    EndReason.START_FAILED: "the bot could not be started, or did not report within bot_start_timeout_s",
    EndReason.UNPLACEABLE: "the cluster did not place the bot within placement_timeout_s (or no node could ever hold it)",
    EndReason.MEDIA_PORTS_EXHAUSTED: "every UDP port of media_ports was taken when the caller connected",
    EndReason.QUEUE_TIMEOUT: "no capacity freed up within queue_wait_s while the session was queued",
    EndReason.BUSY: "a phone call found no free agent and when_busy is hangup",
    EndReason.SHUTDOWN: "voxfleet was shutting down (drain), or the session's task was cancelled",
    EndReason.CONTROL_LOST: "the bot lost its link to the control plane and no new one took the session",
    EndReason.CONTROL_RESTART: "the control plane restarted and the session could not go on: its bot did not rejoin "
                               "within resume_window_s, or its media stream (a phone call's, a WebSocket client's) "
                               "was relayed by the control plane that stopped",
    EndReason.NODE_LOST: "the node running the bot left the cluster (crashed, stopped or unreachable)",
    EndReason.RETIRED: "a warm bot, holding no session, was stopped to free room for another agent's session",
    EndReason.WARMUP_FAILED: "a warm bot, holding no session, exited because its warmup() raised",
    EndReason.NO_ANSWER: "an outbound call was not answered within its ring timeout",
    EndReason.CALLEE_BUSY: "an outbound call's callee was busy",
    EndReason.DIAL_FAILED: "the carrier could not place an outbound call (its API refused it, or the call failed)",
    EndReason.CANCELED: "an outbound call was canceled before it was answered (DELETE /v1/calls/{id}, or at the "
                        "carrier)",
    EndReason.TRANSFERRED: "the call was handed to another number (POST /v1/sessions/{id}/transfer); the bot stopped",
}

# Ends that are the platform's or the bot's fault rather than the caller's or a limit's.
FAILED_REASONS: frozenset[EndReason] = frozenset({
    EndReason.START_FAILED, EndReason.BOT_ERROR, EndReason.CRASHED, EndReason.MEMORY_LIMIT,
    EndReason.CONTROL_RESTART, EndReason.CONTROL_LOST, EndReason.MEDIA_PORTS_EXHAUSTED, EndReason.NODE_LOST,
})


def failure_text(reason: str) -> str:
    """What a caller whose bot failed is told (an RTVI error, a WebSocket close reason): the
    reason only; the detail (an exception's message may name internals) stays in the record."""
    return f"the bot failed ({reason}); the session has ended"
