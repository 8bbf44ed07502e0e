"""The built-in offline assistant: an ordinary Pipecat bot, usable as an example.

Silero VAD -> faster-whisper tiny.en -> an OpenAI-compatible LLM (by default the local
llama.cpp server voxfleet starts) -> Piper (en_US-joe-medium). It greets the caller on connect.

Runs unchanged under voxfleet (``async def bot(runner_args)``) and under Pipecat's own dev
runner (``python -m voxfleet.bots.assistant -t webrtc``). Environment:

- ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` / ``OPENAI_MODEL``: the LLM (voxfleet sets them to
  its local server; point them at OpenAI or any compatible service to use that instead).
- ``DEEPGRAM_API_KEY``: use Deepgram for STT instead of Whisper (needs ``pipecat-ai[deepgram]``).
- ``CARTESIA_API_KEY`` (+ ``CARTESIA_VOICE_ID``): use Cartesia for TTS (``pipecat-ai[cartesia]``).

Every model is built after voxfleet forks the bot from its template (ONNX Runtime sessions built
before a fork lose their worker threads in the child: Piper's first audio took 0.23 s instead of
0.11 s; CTranslate2 is not fork-safe at all once loaded). A warm bot builds them all in
``warmup()``, before any session; a cold-started session builds them in ``bot()`` (Whisper in a
background thread while the greeting plays). ``preload()`` (once, in the template) only imports
the libraries. The turn is made fast by: Whisper with a window sized to the utterance
(``bots/whisper_fast.py``), TTS that starts on the first words of the answer
(``bots/clauses.py``), inference threads set for the machine (Piper on one ONNX Runtime thread
that sleeps when idle: its default, one spinning thread per core, took 420 ms instead of 217 ms
for the first words while the LLM server decoded the rest of the answer), and smart-turn
waiting at most ``SMART_TURN_MAX_WAIT_S`` for a turn it judges incomplete.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import numpy as np
from pipecat.audio.turn.smart_turn.base_smart_turn import SmartTurnParams
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.frames.frames import TTSSpeakFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.runner.types import RunnerArguments
from pipecat.runner.utils import create_transport
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.services.piper.tts import PiperTTSService
from pipecat.serializers.protobuf import ProtobufFrameSerializer
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams
from pipecat.turns.user_stop import TurnAnalyzerUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.workers.runner import WorkerRunner

from voxfleet.bots import models
from voxfleet.bots.assistant_prompts import GREETING, SYSTEM_PROMPT
from voxfleet.bots.clauses import ClauseTextAggregator
from voxfleet.bots.early import EarlySmartTurn
from voxfleet.bots.whisper_fast import make_whisper_service

# The longest silence smart-turn waits out when it judges the user's turn incomplete (Pipecat's
# default is 3 s: a caller who pauses mid-question would wait 3 s for an answer).
SMART_TURN_MAX_WAIT_S = 1.2

# Services a warm bot built in warmup() (after the fork) for the session it will host; each
# bot process builds its own, so nothing is shared between calls.
_warm: dict[str, Any] = {}


class PhraseCachePiperTTSService(PiperTTSService):
    """Piper with a phrase cache: text synthesised ahead of time (the greeting, when a warm bot
    builds its TTS before its session) plays from memory, so the first word needs no synthesis."""

    def __init__(self, *, threads: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._voice.session = _onnx_session(self._voice_path(), threads)
        _release_freed_memory()  # the session Piper built and this one replaced (~90 MB)
        self._phrases: dict[str, list[bytes]] = {}
        self._text_aggregator = ClauseTextAggregator()  # speak the first words, not the first sentence

    def _voice_path(self) -> str:
        return str(models.piper_voice_dir() / f"{models.PIPER_VOICE}.onnx")

    def cache_phrase(self, text: str) -> None:
        self._phrases[text.strip()] = [c.audio_int16_bytes for c in self._voice.synthesize(text)]

    async def run_tts(self, text: str, context_id: str):
        cached = self._phrases.get(text.strip())
        await self.start_tts_usage_metrics(text)
        pcm = _replay(cached) if cached is not None else self._synthesize(text)
        async for frame in self._stream_audio_frames_from_iterator(
            pcm, in_sample_rate=self._voice.config.sample_rate, context_id=context_id
        ):
            await self.stop_ttfb_metrics()
            yield frame

    async def _synthesize(self, text: str):
        """Piper's audio for `text`, sentence by sentence (off the event loop), without the
        silence Piper puts before the first word (~50 ms the caller would wait for) and, after
        a clause that does not end its sentence, with a short pause instead of a sentence's."""
        chunks = iter(self._voice.synthesize(text))
        rate = self._voice.config.sample_rate
        previous: bytes | None = None
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            audio = chunk.audio_int16_bytes
            if previous is None:
                audio = trim_silence(audio, rate, lead_s=0.01)
            else:
                yield previous
            previous = audio
        if previous is not None:
            ends_sentence = text.rstrip()[-1:] in ".!?"
            yield previous if ends_sentence else trim_silence(previous, rate, trail_s=0.06)


def _onnx_session(path: str, threads: int) -> Any:
    """An ONNX Runtime session on `path` with `threads` intra-op threads that sleep when idle:
    Piper's default (one spinning thread per core) stalls whenever the LLM server or the bot's
    own media work holds a core, which during a turn they always do."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


def _release_freed_memory() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


async def _replay(chunks: list[bytes]):
    for chunk in chunks:
        yield chunk


def trim_silence(pcm: bytes, rate: int, lead_s: float | None = None, trail_s: float | None = None,
                 level: int = 300) -> bytes:
    """`pcm` (int16 mono) with leading and/or trailing silence (peak below `level`) cut down to
    `lead_s` / `trail_s` seconds."""
    samples = np.frombuffer(pcm, dtype=np.int16)
    loud = np.flatnonzero(np.abs(samples) > level)
    if not len(loud):
        return pcm
    start, end = 0, len(samples)
    if lead_s is not None:
        start = max(0, int(loud[0]) - int(lead_s * rate))
    if trail_s is not None:
        end = min(len(samples), int(loud[-1]) + 1 + int(trail_s * rate))
    return samples[start:end].tobytes()


def _make_tts():
    if os.environ.get("CARTESIA_API_KEY"):
        from pipecat.services.cartesia.tts import CartesiaTTSService

        return CartesiaTTSService(
            api_key=os.environ["CARTESIA_API_KEY"],
            settings=CartesiaTTSService.Settings(
                voice=os.environ.get("CARTESIA_VOICE_ID", "71a7ad14-091c-4e8e-a314-022ece01c121")
            ),
        )
    tts = PhraseCachePiperTTSService(
        download_dir=models.piper_voice_dir(),
        settings=PiperTTSService.Settings(voice=models.PIPER_VOICE),
    )
    tts.cache_phrase(GREETING)
    return tts


def _make_stt():
    if os.environ.get("DEEPGRAM_API_KEY"):
        from pipecat.services.deepgram.stt import DeepgramSTTService

        return DeepgramSTTService(api_key=os.environ["DEEPGRAM_API_KEY"])
    return make_whisper_service(str(models.whisper_model_dir()))


def _make_turn_analyzer() -> LocalSmartTurnAnalyzerV3:
    return EarlySmartTurn(params=SmartTurnParams(stop_secs=SMART_TURN_MAX_WAIT_S))


def _make_llm() -> OpenAILLMService:
    base_url = os.environ.get("OPENAI_BASE_URL")
    api_key = os.environ.get("OPENAI_API_KEY")
    if not base_url and not api_key:
        raise RuntimeError(
            "no LLM configured: set OPENAI_BASE_URL (voxfleet serve sets it to its local "
            "llama.cpp server) or OPENAI_API_KEY"
        )
    return OpenAILLMService(
        api_key=api_key or "not-needed",
        base_url=base_url,
        settings=OpenAILLMService.Settings(
            model=os.environ.get("OPENAI_MODEL", "gpt-4o-mini"),
            system_instruction=SYSTEM_PROMPT,
            max_tokens=80,
        ),
    )


def preload() -> None:
    """Called once in voxfleet's template, before it forks bots: import what every session uses
    (fork-safe); build nothing that holds threads or ONNX Runtime sessions."""
    import faster_whisper  # noqa: F401
    import piper  # noqa: F401


async def warmup() -> None:
    """Called by voxfleet in a warm bot: after the fork, before any session. Builds every model
    (their thread pools are this process's own), synthesises the greeting, waits for Whisper and
    opens the LLM client, so a session that takes this bot starts with all of it ready."""
    _warm["tts"] = _make_tts()
    _warm["vad"] = SileroVADAnalyzer()
    _warm["turn"] = _make_turn_analyzer()
    stt = _make_stt()
    if hasattr(stt, "wait_loaded"):
        await asyncio.to_thread(stt.wait_loaded)
    _warm["stt"] = stt
    _warm["llm"] = _make_llm()


async def bot(runner_args: RunnerArguments) -> None:
    stt = _warm.pop("stt", None) or _make_stt()  # first: a cold Whisper loads while the rest is built
    tts = _warm.pop("tts", None) or _make_tts()
    vad = _warm.pop("vad", None) or SileroVADAnalyzer()
    turn = _warm.pop("turn", None) or _make_turn_analyzer()
    llm = _warm.pop("llm", None) or _make_llm()

    transport = await create_transport(
        runner_args,
        {
            "webrtc": lambda: TransportParams(audio_in_enabled=True, audio_out_enabled=True),
            # phone calls: create_transport picks Twilio's serializer from the stream's start event
            "twilio": lambda: FastAPIWebsocketParams(audio_in_enabled=True, audio_out_enabled=True),
            "telnyx": lambda: FastAPIWebsocketParams(audio_in_enabled=True, audio_out_enabled=True),
            "plivo": lambda: FastAPIWebsocketParams(audio_in_enabled=True, audio_out_enabled=True),
            "exotel": lambda: FastAPIWebsocketParams(audio_in_enabled=True, audio_out_enabled=True),
            "websocket": lambda: FastAPIWebsocketParams(
                audio_in_enabled=True, audio_out_enabled=True, serializer=ProtobufFrameSerializer()
            ),
        },
    )
    context = LLMContext()
    user_aggregator, assistant_aggregator = LLMContextAggregatorPair(
        context,
        user_params=LLMUserAggregatorParams(
            vad_analyzer=vad,
            user_turn_strategies=UserTurnStrategies(stop=[TurnAnalyzerUserTurnStopStrategy(turn_analyzer=turn)]),
        ),
    )
    pipeline = Pipeline(
        [transport.input(), stt, user_aggregator, llm, tts, transport.output(), assistant_aggregator]
    )
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(enable_metrics=True, enable_usage_metrics=True),
        idle_timeout_secs=getattr(runner_args, "pipeline_idle_timeout_secs", None),
    )
    runner = WorkerRunner(handle_sigint=getattr(runner_args, "handle_sigint", False))
    await runner.add_workers(worker)

    @transport.event_handler("on_client_connected")
    async def on_client_connected(_transport, _client):
        await worker.queue_frames([TTSSpeakFrame(GREETING)])

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(_transport, _client):
        await runner.cancel()

    await runner.run()


if __name__ == "__main__":
    from pipecat.runner.run import main

    main()
