"""A real WebRTC caller (aiortc) for benchmarks and end-to-end tests.

It speaks the same protocol as ``@pipecat-ai/client-js`` + ``small-webrtc-transport``:
``POST /start`` -> ``POST /sessions/{id}/api/offer``, a data channel named ``chat`` carrying
RTVI messages, one audio track each way. It sends silence, or speech when asked, at real-time
pace, and timestamps the bot's first non-silent audio.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from av import AudioFrame

SAMPLE_RATE = 48000
FRAME_SAMPLES = 960  # 20 ms
SPEECH_PEAK = 1000  # int16 peak above which a received frame counts as speech (~ -30 dBFS)


class MicrophoneTrack(MediaStreamTrack):
    """An outgoing audio track: silence, or queued PCM (48 kHz mono int16), paced in real time."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._pending = np.zeros(0, dtype=np.int16)
        self._start: float | None = None
        self._timestamp = 0
        self.speech_ended_at: float | None = None  # the utterance's last sample went out
        self.last_voiced_at: float | None = None  # its last voiced frame went out (trailing silence excluded)
        self._speaking = False

    def say(self, pcm48k: np.ndarray) -> None:
        self._pending = np.concatenate([self._pending, pcm48k.astype(np.int16)])
        self._speaking = True
        self.speech_ended_at = None

    @property
    def speaking(self) -> bool:
        return self._speaking

    async def recv(self) -> AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._timestamp += FRAME_SAMPLES
            wait = self._start + self._timestamp / SAMPLE_RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        chunk = self._pending[:FRAME_SAMPLES]
        self._pending = self._pending[FRAME_SAMPLES:]
        if len(chunk) and int(np.abs(chunk).max()) > SPEECH_PEAK:
            self.last_voiced_at = time.monotonic()
        if len(chunk) < FRAME_SAMPLES:
            chunk = np.concatenate([chunk, np.zeros(FRAME_SAMPLES - len(chunk), dtype=np.int16)])
            if self._speaking and not len(self._pending):
                self._speaking = False
                self.speech_ended_at = time.monotonic()
        frame = AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._timestamp
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        return frame


@dataclass
class CallResult:
    session_id: str = ""
    started_at: float = 0.0
    first_audio_at: float | None = None
    rtvi: list[dict[str, Any]] = field(default_factory=list)
    ice_servers: list[dict[str, Any]] = field(default_factory=list)  # the iceConfig /start gave
    answer_sdp: str = ""

    @property
    def ttfw_ms(self) -> float | None:
        return None if self.first_audio_at is None else (self.first_audio_at - self.started_at) * 1000

    def user_transcripts(self) -> list[str]:
        return [m["data"]["text"] for m in self.rtvi
                if m.get("type") == "user-transcription" and m.get("data", {}).get("final")]

    def bot_texts(self) -> list[str]:
        return [m["data"]["text"] for m in self.rtvi
                if m.get("type") in ("bot-output", "bot-tts-text") and m.get("data", {}).get("text")]


class WebRTCCaller:
    """One call to a Pipecat-runner-compatible server."""

    def __init__(self, base_url: str, *, agent: str | None = None, body: dict[str, Any] | None = None,
                 start_path: str = "/start", ice_transport_policy: str = "all",
                 ice_servers: list[dict[str, Any]] | None = None, verify_tls: bool = True,
                 region: str | None = None, headers: dict[str, str] | None = None,
                 local_address: str | None = None) -> None:
        """`ice_transport_policy` "relay" uses TURN relay candidates only, as a browser with
        iceTransportPolicy "relay" would; `ice_servers` replaces the iceConfig /start returns;
        `region` asks voxfleet to run the bot there (or the nearest region with room);
        `headers` go with every request (e.g. an API key's Authorization); `local_address` is
        the address its HTTP requests come from (another loopback address is another client)."""
        self.base_url = base_url.rstrip("/")
        self.ice_transport_policy = ice_transport_policy
        self.ice_servers = ice_servers
        self.agent = agent
        self.region = region
        self.body = body or {}
        self.start_path = start_path
        self.mic = MicrophoneTrack()
        self.pc: RTCPeerConnection | None = None
        self.result = CallResult()
        self.audio_events: list[tuple[float, bool]] = []  # (time, is_speech) at each change
        self._heard = asyncio.Event()
        self._rtvi_event = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        transport = httpx.AsyncHTTPTransport(local_address=local_address, verify=verify_tls) if local_address else None
        self.http = httpx.AsyncClient(timeout=30, verify=verify_tls, headers=headers, transport=transport)

    async def connect(self) -> CallResult:
        self.result.started_at = time.monotonic()
        request: dict[str, Any] = {"transport": "webrtc", "body": self.body}
        if self.agent:
            request["agent"] = self.agent
        if self.region:
            request["region"] = self.region
        started = await self.http.post(self.base_url + self.start_path, json=request)
        started.raise_for_status()
        info = started.json()
        self.result.session_id = info["sessionId"]
        self.result.ice_servers = (info.get("iceConfig") or {}).get("iceServers") or []
        ice = self.ice_servers if self.ice_servers is not None else self.result.ice_servers
        from aiortc import RTCIceServer, RTCIceTransportPolicy

        self.pc = RTCPeerConnection(RTCConfiguration(
            iceServers=[RTCIceServer(**s) for s in ice],
            iceTransportPolicy=RTCIceTransportPolicy(self.ice_transport_policy)))
        self.pc.addTrack(self.mic)
        channel = self.pc.createDataChannel("chat", ordered=True)

        @channel.on("open")
        def on_open() -> None:
            channel.send(json.dumps({"label": "rtvi-ai", "type": "client-ready", "id": uuid.uuid4().hex[:8],
                                     "data": {"version": "1.0.0", "about": {"library": "voxfleet-caller"}}}))

        @channel.on("message")
        def on_message(message: Any) -> None:
            if isinstance(message, str) and message.startswith("{"):
                try:
                    self.result.rtvi.append(json.loads(message))
                    self._rtvi_event.set()
                except json.JSONDecodeError:
                    pass

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio":
                self._tasks.append(asyncio.create_task(self._listen(track)))

        offer = await self.pc.createOffer()
        await self.pc.setLocalDescription(offer)
        answered = await self.http.post(
            f"{self.base_url}/sessions/{self.result.session_id}/api/offer",
            json={"sdp": self.pc.localDescription.sdp, "type": "offer"},
        )
        answered.raise_for_status()
        answer = answered.json()
        self.result.answer_sdp = answer["sdp"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        return self.result

    async def _listen(self, track: MediaStreamTrack) -> None:
        speaking = False
        while True:
            try:
                frame = await track.recv()
            except Exception:  # noqa: BLE001 - the track ends with the call
                return
            now = time.monotonic()
            peak = int(np.abs(frame.to_ndarray()).max()) if frame.samples else 0
            is_speech = peak > SPEECH_PEAK
            if is_speech != speaking:
                speaking = is_speech
                self.audio_events.append((now, is_speech))
            if is_speech and self.result.first_audio_at is None:
                self.result.first_audio_at = now
                self._heard.set()

    # -- helpers for scripted conversations ----------------------------------------------------
    async def wait_first_audio(self, timeout: float) -> float:
        await asyncio.wait_for(self._heard.wait(), timeout)
        return self.result.ttfw_ms or 0.0

    def bot_speaking(self) -> bool:
        return bool(self.audio_events) and self.audio_events[-1][1]

    async def wait_bot_quiet(self, quiet_for: float = 0.8, timeout: float = 20.0) -> None:
        """Wait until the bot has been silent for `quiet_for` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = self.audio_events[-1] if self.audio_events else None
            if last is not None and not last[1] and time.monotonic() - last[0] >= quiet_for:
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"bot still talking after {timeout:.0f}s")

    async def say(self, pcm48k: np.ndarray) -> float:
        """Speak, then return the time the last voiced frame went out: the end of the caller's
        speech, which voice-to-voice counts from (the utterance's trailing silence excluded)."""
        self.mic.say(pcm48k)
        while self.mic.speaking:
            await asyncio.sleep(0.01)
        assert self.mic.speech_ended_at is not None
        return self.mic.last_voiced_at or self.mic.speech_ended_at

    async def wait_bot_audio_after(self, moment: float, timeout: float) -> float:
        """Seconds from `moment` to the first bot speech onset after it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, is_speech in self.audio_events:
                if is_speech and at > moment:
                    return at - moment
            await asyncio.sleep(0.01)
        raise TimeoutError(f"no bot audio within {timeout:.0f}s")

    async def wait_rtvi(self, predicate, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for message in self.result.rtvi:
                if predicate(message):
                    return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("expected RTVI message did not arrive")
            self._rtvi_event.clear()
            try:
                await asyncio.wait_for(self._rtvi_event.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def close(self) -> None:
        if self.pc is not None:
            await self.pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.http.aclose()
