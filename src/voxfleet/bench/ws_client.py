"""A server-to-server client of voxfleet's generic WebSocket sessions, speaking Pipecat's
protobuf frames (Pipecat's own ``ProtobufFrameSerializer``, as ``@pipecat-ai/websocket-transport``
does in a browser): ``POST /start {"transport": "websocket"}`` -> ``{wsUrl, token}``, then
``wsUrl?token=...``; audio goes up as 16 kHz int16 frames every 20 ms, the bot's audio comes back.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import websockets
from pipecat.frames.frames import InputAudioRawFrame, InputTransportMessageFrame, OutputAudioRawFrame
from pipecat.serializers.protobuf import ProtobufFrameSerializer

from voxfleet.bench.conversation import Pacer, converse

RATE = 16000
FRAME = 320  # samples per 20 ms


@dataclass
class WsCallResult:
    session_id: str
    ttfw_ms: float | None = None  # socket open -> first non-silent audio received
    speech_at: list[float] = field(default_factory=list)
    audio: list[np.ndarray] = field(default_factory=list)  # received int16 chunks
    sample_rate: int | None = None
    v2v_ms: list[float] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    rtvi: list[dict[str, Any]] = field(default_factory=list)  # RTVI messages from the bot
    closed_at: float | None = None  # s since the socket opened when the server closed it
    hung_up: bool = False  # the client said all it had to say and closed the socket itself

    def pcm16(self) -> np.ndarray:
        return np.concatenate(self.audio) if self.audio else np.zeros(0, np.int16)


async def start_websocket_session(base_url: str, agent: str | None = None, body: dict[str, Any] | None = None,
                                  headers: dict[str, str] | None = None) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base_url, timeout=15, headers=headers) as http:
        response = await http.post("/start", json={"transport": "websocket", "agent": agent, "body": body or {}})
        response.raise_for_status()
        return {**response.json(), "sessionId": response.headers["X-Voxfleet-Session-Id"]}


async def call(base_url: str, speech: list[np.ndarray], *, agent: str | None = None, listen_s: float = 20.0,
               after_greeting: bool = True, body: dict[str, Any] | None = None,
               headers: dict[str, str] | None = None) -> WsCallResult:
    """Start a WebSocket session and hold a conversation: greeting, then each 16 kHz utterance."""
    started_session = await start_websocket_session(base_url, agent, body, headers)
    return await talk(started_session, speech, listen_s=listen_s, after_greeting=after_greeting)


async def talk(started_session: dict[str, Any], speech: list[np.ndarray], *, listen_s: float = 20.0,
               after_greeting: bool = True) -> WsCallResult:
    """Connect to a session `start_websocket_session` started and hold the conversation."""
    result = WsCallResult(session_id=started_session["sessionId"])
    serializer = ProtobufFrameSerializer()
    url = f"{started_session['wsUrl']}?token={started_session['token']}"
    async with websockets.connect(url, max_size=2**22) as ws:
        started = time.monotonic()

        async def send(payload: bytes) -> None:
            await ws.send(await serializer.serialize(OutputAudioRawFrame(audio=payload, sample_rate=RATE,
                                                                         num_channels=1)))

        async def listen() -> None:
            try:
                await frames()
            finally:
                result.closed_at = time.monotonic() - started

        async def frames() -> None:
            async for raw in ws:
                frame = await serializer.deserialize(raw)
                if isinstance(frame, InputTransportMessageFrame):  # an RTVI message
                    result.rtvi.append(frame.message)
                elif isinstance(frame, InputAudioRawFrame):  # "audio" messages deserialize as input audio
                    pcm = np.frombuffer(frame.audio, dtype=np.int16)
                    result.sample_rate = frame.sample_rate
                    result.audio.append(pcm)
                    if pcm.size and float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) > 300:
                        at = time.monotonic() - started
                        result.ttfw_ms = result.ttfw_ms or round(at * 1000, 1)
                        result.speech_at.append(at)

        listener = asyncio.create_task(listen())
        try:
            silence = np.zeros(FRAME, np.int16).tobytes()
            result.v2v_ms = await converse(Pacer(send), [s.astype(np.int16).tobytes() for s in speech], silence,
                                           result.speech_at, started, listen_s=listen_s, after_greeting=after_greeting)
            result.hung_up = True
        except websockets.ConnectionClosed:
            pass
        finally:
            listener.cancel()
            await ws.close()
        result.close_code, result.close_reason = ws.close_code, ws.close_reason or ""
    return result
