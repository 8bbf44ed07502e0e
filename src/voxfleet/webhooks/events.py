"""Which lifecycle webhook a session change produces, and its payload (pure)."""

from __future__ import annotations

from typing import Any

from voxfleet.end_reasons import FAILED_REASONS


def event_for(session: dict[str, Any], started_sent: bool) -> tuple[str, dict[str, Any]] | None:
    """``session.started`` once the bot answered the caller; at the end ``session.failed`` when
    the bot failed the caller (couldn't start, raised, crashed, over memory, lost in a restart:
    :data:`voxfleet.end_reasons.FAILED_REASONS`), else ``session.ended``. `session` is the public
    session record; the payload's ``endReason`` is an :class:`~voxfleet.end_reasons.EndReason`
    value (docs/end-reasons.md)."""
    if session["state"] == "active" and not started_sent:
        return "session.started", {k: session[k] for k in ("sessionId", "agent", "transport", "createdAt",
                                                           "start", "botStartMs")}
    if session["state"] != "ended":
        return None
    latency = session.get("latency") or {}
    payload = {
        "sessionId": session["sessionId"], "agent": session["agent"], "transport": session["transport"],
        "createdAt": session["createdAt"], "endedAt": session["endedAt"],
        "durationS": round((session["endedAt"] or session["createdAt"]) - session["createdAt"], 3),
        "endReason": session["endReason"], "endDetail": session.get("endDetail"),
        "start": session.get("start"), "botStartMs": session.get("botStartMs"),
        "ttfwMs": latency.get("ttfwMs"), "turnsV2vMs": latency.get("turnsV2vMs", []),
        "v2vP50Ms": latency.get("v2vP50Ms"), "ttfbP50Ms": latency.get("ttfbP50Ms", {}),
        "turns": latency.get("turns", []),
        "transcript": session.get("transcript", []),
        **({"call": session["call"]} if session.get("call") else {}),
    }
    kind = "session.failed" if session["endReason"] in FAILED_REASONS else "session.ended"
    return kind, payload


RECORDING_READY = "recording.ready"


def recording_ready(session_id: str, agent: str, recording: dict[str, Any]) -> dict[str, Any]:
    """The payload of ``recording.ready``: the session's recording is finished and can be fetched
    (with a private key) from ``url``, relative to voxfleet's base URL."""
    return {"sessionId": session_id, "agent": agent, "url": f"/v1/sessions/{session_id}/recording",
            "recording": dict(recording)}
