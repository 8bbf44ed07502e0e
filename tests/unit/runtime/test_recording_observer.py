"""The bot-side recording (runtime/recording_observer.py) with Pipecat's own frames, transports
classes and resampler: the caller's audio as the input transport pushed it, the bot's as the output
transport wrote it, each resampled to 16 kHz and placed at its push time."""

import wave

import numpy as np
from pipecat.frames.frames import InputAudioRawFrame, OutputAudioRawFrame, TTSAudioRawFrame
from pipecat.observers.base_observer import FramePushed
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import TransportParams

from voxfleet.runtime.recording_observer import RecordingObserver, SessionRecording
from voxfleet.storage import recordings


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def tone(rate: int, seconds: float, amplitude: int = 8000) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes()


async def test_caller_left_bot_right_only_what_the_transports_pushed(tmp_path):
    clock = Clock()
    recording = SessionRecording(tmp_path, "sess", clock=clock)
    observer = RecordingObserver(recording)
    params = TransportParams(audio_in_enabled=True, audio_out_enabled=True)
    source_in, source_out, tts = BaseInputTransport(params), BaseOutputTransport(params), FrameProcessor()
    sink = FrameProcessor()

    async def push(frame, source, first=True, direction=FrameDirection.DOWNSTREAM):
        await observer.on_push_frame(FramePushed(source=source, destination=sink, frame=frame,
                                                 direction=direction, timestamp=0, first_push=first))

    for i in range(50):  # 1 s of the caller, phone audio (8 kHz), 20 ms at a time
        clock.t = 100.0 + i * 0.02
        await push(InputAudioRawFrame(audio=tone(8000, 0.02), sample_rate=8000, num_channels=1), source_in)
        await push(InputAudioRawFrame(audio=tone(8000, 0.02), sample_rate=8000, num_channels=1), tts, first=False)
    # the bot at 24 kHz: queued by TTS (not written: not recorded), written by the output transport at 2 s
    clock.t = 102.0
    await push(TTSAudioRawFrame(audio=tone(24000, 0.5, 20000), sample_rate=24000, num_channels=1), tts)
    await push(OutputAudioRawFrame(audio=tone(24000, 0.5), sample_rate=24000, num_channels=1), source_out)
    await push(OutputAudioRawFrame(audio=tone(24000, 0.5), sample_rate=24000, num_channels=1), source_out,
               direction=FrameDirection.UPSTREAM)
    assert recordings.part_path(tmp_path, "sess").stat().st_size > 0  # written as it goes (every ~1 s)
    recording.close()

    meta = recordings.finalize(tmp_path, "sess")
    assert meta["channels"] == ["caller", "bot"] and meta["sampleRate"] == 16000
    assert 2.4 <= meta["durationS"] <= 2.55
    with wave.open(str(recordings.wav_path(tmp_path, "sess"))) as wav:
        stereo = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").reshape(-1, 2)
    left, right = stereo[:, 0].astype(float), stereo[:, 1].astype(float)
    second = 16000
    assert np.abs(left[:second - 200]).max() > 6000 and np.abs(left[second + 200:]).max() == 0
    assert np.abs(right[:2 * second - 10]).max() == 0  # nothing of the bot before it was written
    bot = right[2 * second + 400:int(2.5 * second) - 400]
    assert 6000 < np.abs(bot).max() < 9000  # the written frame, not the louder queued one


async def test_a_closed_recording_takes_nothing_more(tmp_path):
    recording = SessionRecording(tmp_path, "s2")
    recording.close()
    await recording.add("caller", 0.0, tone(16000, 0.1), 16000, 1)
    recording.close()
    assert recordings.part_path(tmp_path, "s2").stat().st_size == 0
