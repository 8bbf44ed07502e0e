"""voxfleet's tone bot with switches for the tests (and ``voxfleet bench chaos``) of a bot that
misbehaves, read from the session's body: ``{"fail": true}`` makes it raise before it answers,
``{"fail_after_s": S}`` raise S seconds into the call (its pipeline still running), ``{"hog_mb": N}``
hold N MiB of touched memory for the whole call (to go over its profile's memory limit). A phone
call from ``FAILING_CALLER`` fails 1 s into the call (a phone call's body is its webhook's fields).

It also answers: each sound the caller makes is answered, once the caller is quiet again, with a
short tone (``ToneAnswer``), so a test can ask a question at any point of a call (after a
control-plane restart, say) and hear that the bot still talks, with no model. A silent caller
gets the greeting only, as from the plain tone bot."""

import asyncio

import numpy as np
from pipecat.frames.frames import Frame, InputAudioRawFrame, OutputAudioRawFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.runner.types import RunnerArguments

from voxfleet.bots import tone

FAILING_CALLER = "+15550000666"
LOUD_RMS = 1000.0  # int16 RMS of a frame that counts as sound (the bench's questions are ~8000)


class ToneAnswer(FrameProcessor):
    """After at least `min_sound_s` of sound from the caller followed by `quiet_s` of quiet,
    send a `seconds`-long tone: the caller's question is answered."""

    def __init__(self, *, min_sound_s: float = 0.1, quiet_s: float = 0.3, seconds: float = 0.4) -> None:
        super().__init__()
        self.min_sound_s, self.quiet_s, self.seconds = min_sound_s, quiet_s, seconds
        self.heard_s = 0.0
        self.quiet_for_s = 0.0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame) and frame.audio:
            samples = np.frombuffer(frame.audio, dtype=np.int16)
            duration = len(samples) / max(1, frame.num_channels) / frame.sample_rate
            if float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) > LOUD_RMS:
                self.heard_s += duration
                self.quiet_for_s = 0.0
            elif self.heard_s >= self.min_sound_s:
                self.quiet_for_s += duration
                if self.quiet_for_s >= self.quiet_s:
                    self.heard_s = self.quiet_for_s = 0.0
                    await self.push_frame(OutputAudioRawFrame(audio=tone.tone(self.seconds), sample_rate=tone.RATE,
                                                              num_channels=1))


async def bot(runner_args: RunnerArguments) -> None:
    body = runner_args.body or {}
    if body.get("fail"):
        raise RuntimeError("tone bot was asked to fail")
    fail_after_s = body.get("fail_after_s")
    if (body.get("call") or {}).get("From") == FAILING_CALLER:
        fail_after_s = 1.0
    if fail_after_s is not None:
        running = asyncio.ensure_future(tone.run(runner_args, ToneAnswer()))  # noqa: F841 - goes on until the raise
        await asyncio.sleep(float(fail_after_s))
        raise RuntimeError(f"tone bot was asked to fail {fail_after_s}s into the call")
    ballast = bytearray(b"\x01") * (int(body.get("hog_mb", 0)) * 1024 * 1024)  # touched pages count in PSS
    await tone.run(runner_args, ToneAnswer())
    del ballast
