"""What a session's RTVI messages tell: first audio, transcript, time to first byte (pure).

Pipecat's pipeline sends its client RTVI messages (``{"label": "rtvi-ai", "type": ..., "data":
...}``) by default. The bot host hands each one the bot sends to :class:`RtviObserver`, which
answers with the observations to report: the first ``bot-started-speaking`` (``first_audio``),
final user transcriptions and the bot's output (``transcript``; the bot's text once, however
many times it is repeated) and each service's TTFB from RTVI metrics (``ttfb``). Turns are
timed elsewhere (``turn_observer``): RTVI messages carry neither the VAD's stop window nor the
stages.
"""

from __future__ import annotations

from typing import Any

from voxfleet.runtime.messages import Event, Message, Transcript, Ttfb


class RtviObserver:
    """One session's RTVI messages in, observations out; no I/O."""

    def __init__(self) -> None:
        self.first_audio = False
        self.last_bot_text: str | None = None

    def observe(self, message: Any, now: float) -> list[Message]:
        if not isinstance(message, dict) or message.get("label") != "rtvi-ai":
            return []
        kind, data = message.get("type"), message.get("data") or {}
        if kind == "bot-started-speaking":
            if self.first_audio:
                return []
            self.first_audio = True
            return [Event(name="first_audio", at=now)]
        if kind == "user-transcription" and data.get("final") and data.get("text", "").strip():
            return [Transcript(role="user", text=data["text"].strip(), at=now)]
        if kind == "bot-output" and data.get("aggregated_by") != "word" and data.get("text", "").strip():
            text = data["text"].strip()
            if text == self.last_bot_text:
                return []
            self.last_bot_text = text
            return [Transcript(role="bot", text=text, at=now)]
        if kind == "metrics":
            return [Ttfb(processor=str(item.get("processor", "?")), seconds=float(item["value"]))
                    for item in data.get("ttfb") or [] if isinstance(item, dict) and "value" in item]
        return []


def fatal_error(text: str) -> dict[str, Any]:
    """The RTVI ``error`` message (fatal: the pipeline has stopped) that tells a client its bot
    is gone, as Pipecat's own RTVI processor words one (``{error, fatal}``)."""
    return {"label": "rtvi-ai", "type": "error", "data": {"error": text[:500], "fatal": True}}
