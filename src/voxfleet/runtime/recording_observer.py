"""Records a session's audio inside the bot process, from the frames its own pipeline pushes.

Platform code, not the bot's: the bot host adds a :class:`RecordingObserver` to every
``PipelineWorker`` of the session (as it does the turn observer) when the agent records. It
takes

- the caller's audio: each ``InputAudioRawFrame`` as the input transport first pushes it on;
- the bot's audio: each ``OutputAudioRawFrame`` the *output transport* pushes on, which
  ``BaseOutputTransport`` does only after ``write_audio_frame`` took it (pipecat 1.14
  ``transports/base_output.py``, ``_audio_task_handler``): audio an interruption discarded
  from its queue was never written and is not recorded.

Each frame is placed at the moment it was pushed (the pipeline clock's timestamp of the push,
not the time the observer's queue got to it) on the pure ``observability.stereo`` timeline,
after Pipecat's own stream resampler brought it to ``SAMPLE_RATE``. About once a second the
frames older than ``HOLD_BACK_S`` are appended to ``<session id>.pcm.part`` (64 KB per second
of stereo: one write to the page cache, tens of microseconds, so it stays on the event loop);
the control plane makes the WAV once the session has ended, even if this process was killed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pipecat.audio.utils import create_stream_resampler
from pipecat.frames.frames import InputAudioRawFrame, OutputAudioRawFrame
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.frame_processor import FrameDirection
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport

from voxfleet.observability.stereo import StereoTimeline
from voxfleet.storage.recordings import SAMPLE_RATE, part_path

log = logging.getLogger(__name__)

FLUSH_S = 1.0  # how often the file grows
HOLD_BACK_S = 0.5  # frames this recent may still be followed by an earlier-stamped one: wait for them


class SessionRecording:
    """One session's recording file, fed chunk by chunk, closed at the session's end."""

    def __init__(self, directory: Path, session_id: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.session_id = session_id
        self.path = part_path(directory, session_id)
        self.now = clock
        self.origin = clock()
        self.timeline = StereoTimeline(SAMPLE_RATE)
        self.resamplers: dict[tuple[str, int], Any] = {}
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.file = open(self.path, "ab")  # noqa: SIM115 - open for the session's life, closed in close()
        self.flushed_at = self.origin
        self.failed = False

    async def add(self, channel: str, pushed_at: float, audio: bytes, sample_rate: int, num_channels: int) -> None:
        """Audio of `channel` ("caller" or "bot") pushed at `pushed_at` (this clock's time)."""
        if self.file.closed or self.failed:
            return
        if num_channels > 1:  # the recording has one channel per side
            frames = np.frombuffer(audio, dtype="<i2").reshape(-1, num_channels)
            audio = frames.mean(axis=1).astype("<i2").tobytes()
        at = pushed_at - self.origin
        if sample_rate != SAMPLE_RATE:
            key = (channel, sample_rate)
            if key not in self.resamplers:
                self.resamplers[key] = create_stream_resampler()
            heard_s = len(audio) / 2 / sample_rate
            audio = await self.resamplers[key].resample(audio, sample_rate, SAMPLE_RATE)
            # the resampler holds some input back and hands it out with later chunks: the audio
            # out ends where the chunk in ends (else the first chunks' audio would start late)
            at += heard_s - len(audio) / 2 / SAMPLE_RATE
        self.timeline.add(channel, max(0.0, at), audio)
        now = self.now()
        if now - self.flushed_at >= FLUSH_S:
            self.flushed_at = now
            self._write(self.timeline.take(now - self.origin - HOLD_BACK_S))

    def _write(self, data: bytes) -> None:
        if not data:
            return
        try:
            self.file.write(data)
            self.file.flush()
        except OSError as exc:  # a full disk ends the recording, never the call
            self.failed = True
            log.error("session %s: recording stopped: cannot write %s: %s", self.session_id, self.path, exc)

    def close(self) -> None:
        """Write the rest (both channels to the longer one's end) and close the file."""
        if self.file.closed:
            return
        if not self.failed:
            self._write(self.timeline.take_all())
        self.file.close()


class RecordingObserver(BaseObserver):
    """Feeds the caller's and the bot's audio of one pipeline to a :class:`SessionRecording`."""

    def __init__(self, recording: SessionRecording) -> None:
        super().__init__()
        self.recording = recording

    async def on_push_frame(self, data: FramePushed) -> None:
        frame = data.frame
        if data.direction != FrameDirection.DOWNSTREAM:
            return
        if isinstance(frame, InputAudioRawFrame):
            if not data.first_push or not isinstance(data.source, BaseInputTransport):
                return
            channel = "caller"
        elif isinstance(frame, OutputAudioRawFrame):
            if not isinstance(data.source, BaseOutputTransport):
                return
            channel = "bot"
        else:
            return
        try:
            await self.recording.add(channel, self._pushed_at(data), frame.audio, frame.sample_rate,
                                     frame.num_channels)
        except Exception:  # noqa: BLE001 - recording must never break the call
            log.exception("session %s: recording a frame failed", self.recording.session_id)

    def _pushed_at(self, data: FramePushed) -> float:
        """When the frame was pushed, on the recording's clock: the push's pipeline-clock time,
        moved back by how long ago that was (the observer runs from a queue, a little later)."""
        now = self.recording.now()
        if not data.timestamp:
            return now
        try:
            clock_now = data.source.get_clock().get_time()
        except Exception:  # noqa: BLE001 - a processor without a clock: take the observer's time
            return now
        return now - max(0, clock_now - data.timestamp) / 1e9
