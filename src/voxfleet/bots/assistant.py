"""The built-in offline assistant: an ordinary Pipecat bot, usable as an example.

Silero VAD -> faster-whisper tiny.en -> an OpenAI-compatible LLM (by default the local
llama.cpp server voxfleet starts) -> Piper (en_US-joe-medium). It greets the caller on connect.

Runs unchanged under voxfleet (``async def bot(runner_args)``) and under Pipecat's own dev
runner (``python -m voxfleet.bots.assistant -t webrtc``). Environment:

- ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` / ``OPENAI_MODEL``: the LLM (voxfleet sets them to
  its local server; point them at OpenAI or any compatible service to use that instead).
- ``DEEPGRAM_API_KEY``: use Deepgram for STT instead of Whisper (needs ``pipecat-ai[deepgram]``).
- ``CARTESIA_API_KEY`` (+ ``CARTESIA_VOICE_ID``): use Cartesia for TTS (``pipecat-ai[cartesia]``).

voxfleet calls ``preload()`` once in the template process before it forks sessions: the Piper
voice and Silero model (ONNX Runtime, fork-safe) load there and every session starts with them
ready. Whisper (CTranslate2) is not fork-safe once loaded: a warm bot loads it in ``warmup()``
(after the fork, before a session); a cold-started session loads it in a background thread
while the greeting plays.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

import numpy as np
from loguru import logger
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
from pipecat.services.whisper.stt import WhisperSTTService
from pipecat.serializers.protobuf import ProtobufFrameSerializer
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams
from pipecat.workers.runner import WorkerRunner

from voxfleet.bots import models
from voxfleet.bots.assistant_prompts import GREETING, SYSTEM_PROMPT

# Services built once per process before any session (see preload()); a forked session gets
# its own copy of each, so nothing is shared between calls.
_preloaded: dict[str, Any] = {}


class _GreedyWhisper:
    """faster-whisper with greedy decoding: Pipecat's service always uses the default beam of
    5, which costs ~2x the time on a short utterance for no gain on tiny.en."""

    def __init__(self, model: Any) -> None:
        self._model = model

    def transcribe(self, audio: Any, **options: Any):
        options.update(beam_size=1, condition_on_previous_text=False, without_timestamps=True)
        return self._model.transcribe(audio, **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


class BackgroundWhisperSTTService(WhisperSTTService):
    """Whisper that loads (and warms up) its model in a thread, so the pipeline and the
    greeting start at once; the first user turn waits only if loading is still under way."""

    def _load(self) -> None:
        self._loaded = threading.Event()

        def load() -> None:
            try:
                WhisperSTTService._load(self)
                self._model = _GreedyWhisper(self._model)
                # The first inference in a process is slow; pay for it while the greeting plays.
                list(self._model.transcribe(np.zeros(8000, dtype=np.float32), language="en")[0])
            except Exception as exc:  # noqa: BLE001 - logged; run_stt then reports the missing model
                logger.error(f"Whisper model failed to load: {exc}")
            finally:
                self._loaded.set()

        threading.Thread(target=load, name="whisper-load", daemon=True).start()

    async def run_stt(self, audio: bytes):
        if not self._loaded.is_set():
            await asyncio.to_thread(self._loaded.wait)
        async for frame in super().run_stt(audio):
            yield frame


class PhraseCachePiperTTSService(PiperTTSService):
    """Piper with a phrase cache: text synthesised ahead of time (the greeting, once in the
    template) plays from memory, so the first word of every session needs no synthesis."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._phrases: dict[str, list[bytes]] = {}

    def cache_phrase(self, text: str) -> None:
        self._phrases[text.strip()] = [c.audio_int16_bytes for c in self._voice.synthesize(text)]

    async def run_tts(self, text: str, context_id: str):
        chunks = self._phrases.get(text.strip())
        if chunks is None:
            async for frame in super().run_tts(text, context_id):
                yield frame
            return

        async def replay():
            for chunk in chunks:
                yield chunk

        await self.start_tts_usage_metrics(text)
        async for frame in self._stream_audio_frames_from_iterator(
            replay(), in_sample_rate=self._voice.config.sample_rate, context_id=context_id
        ):
            await self.stop_ttfb_metrics()
            yield frame


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
    return BackgroundWhisperSTTService(
        device="cpu",
        compute_type="int8",
        settings=WhisperSTTService.Settings(model=str(models.whisper_model_dir())),
    )


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
    """Build the fork-safe, session-independent services once (called by voxfleet's template)."""
    _preloaded["tts"] = _make_tts()
    _preloaded["vad"] = SileroVADAnalyzer()


async def warmup() -> None:
    """Called by voxfleet in a warm bot: after the fork, before any session. Loads and warms
    Whisper and opens the LLM client, so a session that takes this bot starts with all ready."""
    stt = _make_stt()
    if isinstance(stt, BackgroundWhisperSTTService):
        await asyncio.to_thread(stt._loaded.wait)
    _preloaded["stt"] = stt
    _preloaded["llm"] = _make_llm()


async def bot(runner_args: RunnerArguments) -> None:
    tts = _preloaded.pop("tts", None) or _make_tts()
    vad = _preloaded.pop("vad", None) or SileroVADAnalyzer()
    stt = _preloaded.pop("stt", None) or _make_stt()
    llm = _preloaded.pop("llm", None) or _make_llm()

    transport = await create_transport(
        runner_args,
        {
            "webrtc": lambda: TransportParams(audio_in_enabled=True, audio_out_enabled=True),
            # phone calls: create_transport picks Twilio's serializer from the stream's start event
            "twilio": lambda: FastAPIWebsocketParams(audio_in_enabled=True, audio_out_enabled=True),
            "websocket": lambda: FastAPIWebsocketParams(
                audio_in_enabled=True, audio_out_enabled=True, serializer=ProtobufFrameSerializer()
            ),
        },
    )
    context = LLMContext()
    user_aggregator, assistant_aggregator = LLMContextAggregatorPair(
        context, user_params=LLMUserAggregatorParams(vad_analyzer=vad)
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
