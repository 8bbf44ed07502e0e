"""An outbound phone call's progress, as its carrier reports it (pure: no I/O, no clock).

A carrier reports a call it places in status callbacks: queued, initiated, ringing, answered
(Twilio and Plivo: ``in-progress``), then completed, or busy / no-answer / failed / canceled when nobody
answered. Callbacks can arrive late, twice or out of order (each is an HTTP request of its own,
retried by the carrier), so :class:`CallProgress` keeps every report in the timeline but moves the
call's status forward only, and says once, at the first final report of a call never answered,
how its session ends (:class:`CallEnded`): its reserved bot must be released, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from voxfleet.end_reasons import EndReason

# The normalised statuses, in the order a call goes through them; the last five are final.
STATUSES = ("dialing", "queued", "initiated", "ringing", "answered", "completed", "busy", "no-answer", "failed",
            "canceled")
FINAL = frozenset(STATUSES[5:])
RANK = {status: rank for rank, status in enumerate(STATUSES)}

# Twilio's CallStatus values (its status callbacks and REST resources) -> ours.
TWILIO_STATUS = {"queued": "queued", "initiated": "initiated", "ringing": "ringing", "in-progress": "answered",
                 "completed": "completed", "busy": "busy", "no-answer": "no-answer", "failed": "failed",
                 "canceled": "canceled"}

# Telnyx's TeXML CallStatus values (its status callbacks: texml-call-initiated / -ringing / -answered /
# -completed; the initiate response says "queued"): TwiML's names, so the same mapping, kept apart
# because it is Telnyx's documented list, not Twilio's.
TELNYX_STATUS = {"queued": "queued", "initiated": "initiated", "ringing": "ringing", "in-progress": "answered",
                 "completed": "completed", "busy": "busy", "no-answer": "no-answer", "failed": "failed",
                 "canceled": "canceled"}

# Plivo's CallStatus values (its ring and hang-up callbacks, the answer URL) -> ours. Plivo's
# "timeout" is a failure to connect (a carrier or network problem), not a callee who never
# answered ("no-answer"); "cancel" is a call its caller (voxfleet) canceled before the answer.
PLIVO_STATUS = {"queued": "queued", "ringing": "ringing", "in-progress": "answered", "completed": "completed",
                "busy": "busy", "no-answer": "no-answer", "failed": "failed", "timeout": "failed",
                "cancel": "canceled"}


@dataclass(frozen=True)
class CallEnded:
    """The call ended without being answered: its session ends with `reason`."""

    reason: EndReason
    detail: str


def _unanswered(status: str, detail: str) -> CallEnded:
    if status == "busy":
        return CallEnded(EndReason.CALLEE_BUSY, detail or "the callee was busy")
    if status == "canceled":
        return CallEnded(EndReason.CANCELED, detail or "canceled before it was answered")
    if status == "failed":
        return CallEnded(EndReason.DIAL_FAILED, detail or "the carrier could not place the call")
    return CallEnded(EndReason.NO_ANSWER, detail or "nobody answered")  # no-answer, or completed unanswered


@dataclass
class CallProgress:
    """One outbound call's status and timeline (``[{status, at, ...detail}]``, in arrival order)."""

    status: str = "dialing"
    answered_at: float | None = None
    timeline: list[dict[str, Any]] = field(default_factory=list)
    ended: bool = False

    def report(self, status: str, at: float, detail: str = "", **data: Any) -> CallEnded | None:
        """A report of `status` (normalised: one of STATUSES) at `at`. Returns how the session
        ends when this is the first final report of a call that was never answered."""
        if status not in RANK:
            raise ValueError(f"unknown call status {status!r}; one of {', '.join(STATUSES)}")
        seen = any(entry["status"] == status for entry in self.timeline)
        if not seen:  # a retried callback is not a second event
            self.timeline.append({"status": status, "at": at, **({"detail": detail} if detail else {}),
                                  **{k: v for k, v in data.items() if v is not None}})
        if status == "answered" and self.answered_at is None:
            self.answered_at = at
        if self.status in FINAL or RANK[status] <= RANK[self.status]:
            return None  # late or out of order: the status only moves forward
        self.status = status
        if status in FINAL and not self.ended:
            self.ended = True
            if self.answered_at is None:
                return _unanswered(status, detail)
        return None

    def to_public(self) -> dict[str, Any]:
        return {"status": self.status, "answeredAt": self.answered_at, "timeline": [dict(e) for e in self.timeline]}
