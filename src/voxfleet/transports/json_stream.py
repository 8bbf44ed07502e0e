"""The envelope every carrier's media stream shares (pure): one JSON object per text frame with
an ``event`` from a documented set, bounded in size and rate. Each carrier's codec
(``transports/<carrier>_media.py``) checks the rest of its own messages field by field."""

from __future__ import annotations

import json
from typing import Any

from voxfleet.exceptions import StreamProtocolError
from voxfleet.ratelimit import TokenBucket


def parse_event(frame: str | bytes, now: float | None, *, carrier: str, frame_no: int, rate: TokenBucket,
                max_chars: int, events: tuple[str, ...]) -> tuple[dict[str, Any], str]:
    """The frame's message and its event, or StreamProtocolError naming the field and value."""
    if isinstance(frame, bytes):
        raise StreamProtocolError("frame", frame[:20], f"binary frames are not part of {carrier}'s protocol")
    if len(frame) > max_chars:
        raise StreamProtocolError("frame", f"<{len(frame)} characters>", f"over {max_chars}")
    if now is not None and rate.take(now) is not None:
        raise StreamProtocolError("frame", f"#{frame_no}", f"over {rate.per_s:.0f} frames/s")
    try:
        message = json.loads(frame)
    except (ValueError, RecursionError):
        raise StreamProtocolError("frame", frame, "not JSON (or nested too deeply)") from None
    if not isinstance(message, dict):
        raise StreamProtocolError("frame", frame, "not a JSON object")
    event = message.get("event")
    if event not in events:
        raise StreamProtocolError("event", event, f"must be one of {', '.join(events)}")
    return message, event
