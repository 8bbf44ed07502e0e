"""Holding a spoken conversation over a frame-based stream, as a phone or a client app does:
frames every 20 ms in real time (silence between utterances), each utterance said once the bot
has finished its turn. Shared by the carriers' callers (Twilio, Telnyx, Plivo) and the Pipecat
WebSocket client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class Pacer:
    """Sends one frame per `period_s`, on a fixed clock (no drift)."""

    def __init__(self, send: Callable[[bytes], Awaitable[None]], period_s: float = 0.02) -> None:
        self.send_frame, self.period_s = send, period_s
        self.next_at = time.monotonic()

    async def send(self, payload: bytes) -> None:
        await self.send_frame(payload)
        self.next_at += self.period_s
        await asyncio.sleep(max(0.0, self.next_at - time.monotonic()))


def spoke_since(speech_at: list[float], started: float, since: float, gap_s: float = 1.0) -> bool:
    """The bot spoke after `since` (seconds after `started`) and has been quiet for `gap_s`."""
    if not speech_at or speech_at[-1] <= since:
        return False
    return time.monotonic() - started - speech_at[-1] > gap_s


async def converse(pacer: Pacer, utterances: list[bytes], silence: bytes, speech_at: list[float], started: float,
                   *, listen_s: float, after_greeting: bool) -> list[float]:
    """Say each utterance (already encoded, cut into frames of len(silence)) after the bot's turn;
    return voice-to-voice per utterance: end of the utterance -> the bot's first audio after it, ms."""
    size = len(silence)
    deadline = started + listen_s
    v2v: list[float] = []
    if after_greeting:
        while time.monotonic() < deadline and not spoke_since(speech_at, started, 0.0):
            await pacer.send(silence)
    for utterance in utterances:
        for i in range(0, len(utterance), size):
            await pacer.send(utterance[i:i + size].ljust(size, silence[:1]))
        said_at = time.monotonic() - started
        while time.monotonic() < deadline and not spoke_since(speech_at, started, said_at):
            await pacer.send(silence)
        after = [t for t in speech_at if t > said_at]
        if after:
            v2v.append(round((after[0] - said_at) * 1000, 1))
    return v2v


async def until_left(conversation: asyncio.Task[list[float]], ended: asyncio.Event | None) -> tuple[list[float], bool]:
    """Hold `conversation` until it is over or the call leaves the stream (`ended` set: a REST
    update or a transfer took it); its voice-to-voice figures (none if it was cut short) and
    whether the call left."""
    left = asyncio.create_task((ended or asyncio.Event()).wait())
    await asyncio.wait({conversation, left}, return_when=asyncio.FIRST_COMPLETED)
    call_left = left.done()
    left.cancel()
    if conversation.done():
        return conversation.result(), call_left
    conversation.cancel()
    return [], call_left
