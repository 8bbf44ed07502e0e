"""Whisper whose cost follows the utterance: the encoder sees the speech plus a short margin.

faster-whisper always pads the log-Mel features to Whisper's 30 s window, so a 2 s question
costs as much encoder work as 30 s of speech (~440 ms for tiny.en on 2 cores). CTranslate2
accepts shorter inputs, and Whisper's own timestamp tokens say where each segment of speech
ends, so a window of the utterance + ``margin_s`` is decoded in timestamp mode and decoding
stops at the first segment that ends at the end of the audio (a short window otherwise makes
the decoder repeat the utterance). Measured with ``voxfleet bench stt``: ~4x faster at the same
word error rate. Utterances longer than the window fall back to faster-whisper's own path.
A margin of 1 s measured the same word error rate as 3 s on 30 synthetic utterances (2.9% vs
2.4%: one word) at 70 ms instead of 105 ms per utterance; a segment in which the decoder loops
is cut to its first period (``_unlooped``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator
from typing import Any

import numpy as np

SAMPLE_RATE = 16000
FRAMES_PER_S = 100  # Whisper's log-Mel frames per second
MAX_FRAMES = 3000  # Whisper's 30 s window
SECONDS_PER_TIMESTAMP = 0.02
# A segment ending this close to the end of the audio ends the utterance (the audio carries the
# VAD's stop window and Pipecat's 0.5 s of trailing silence after the speech).
END_SLACK_S = 0.8


class ShortWindowWhisper:
    """Transcribes one utterance with a window sized to it (see the module docstring)."""

    def __init__(self, model: Any, margin_s: float = 1.0) -> None:
        from faster_whisper.tokenizer import Tokenizer

        self.model = model
        self.margin_s = margin_s
        self.tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe",
                                   language="en")

    def transcribe(self, audio: np.ndarray) -> tuple[str, float]:
        """(text, no-speech probability) of mono float32 16 kHz `audio`."""
        from faster_whisper.audio import pad_or_trim

        content_s = len(audio) / SAMPLE_RATE
        features = self.model.feature_extractor(audio)
        frames = features.shape[-1]
        window = frames + int(self.margin_s * FRAMES_PER_S)
        if window > MAX_FRAMES:
            return self._long(audio)
        encoded = self.model.encode(pad_or_trim(features, window))
        tok = self.tokenizer
        result = self.model.model.generate(
            encoded, [list(tok.sot_sequence)], beam_size=1, max_length=int(16 + content_s * 8),
            suppress_blank=True, suppress_tokens=[-1], return_no_speech_prob=True,
        )[0]
        return self._speech_text(result.sequences_ids[0], content_s), float(result.no_speech_prob)

    def _speech_text(self, tokens: list[int], content_s: float) -> str:
        """The text of the segments up to the one ending at the end of the audio; a segment
        that repeats an earlier one is the decoder looping, not speech (the price: a caller who
        says the very same sentence twice in one breath is heard saying it once)."""
        tok = self.tokenizer
        segments: list[list[int]] = []
        current: list[int] = []
        for token in tokens:
            if token >= tok.timestamp_begin:
                if current:
                    if current not in segments:
                        segments.append(current)
                    current = []
                    if (token - tok.timestamp_begin) * SECONDS_PER_TIMESTAMP >= content_s - END_SLACK_S:
                        break
                continue
            if token >= tok.eot:
                break
            current.append(token)
        current = _unlooped(current)
        if current and current not in segments:
            segments.append(current)
        return " ".join(tok.decode(s).strip() for s in segments).strip()

    def _long(self, audio: np.ndarray) -> tuple[str, float]:
        segments, _ = self.model.transcribe(audio, language="en", beam_size=1, condition_on_previous_text=False,
                                            without_timestamps=True)
        segments = list(segments)
        text = " ".join(s.text.strip() for s in segments).strip()
        return text, min((s.no_speech_prob for s in segments), default=1.0)


def _unlooped(tokens: list[int], min_period: int = 3) -> list[int]:
    """`tokens` without the decoder's loop: a segment that never reached its closing timestamp
    and instead repeats its own start (``What is the capital of France? What is the capital of
    France? What``, seen in ~1 of 6 short windows) is cut to one period of the repetition. Only
    a repetition that runs to the end of the segment and covers it at least twice counts."""
    for period in range(min_period, len(tokens) // 2 + 1):
        if all(tokens[i] == tokens[i - period] for i in range(period, len(tokens))):
            return tokens[:period]
    return tokens


def make_whisper_service(model_dir: str, threads: int = 1, margin_s: float = 1.0) -> Any:
    """A Pipecat ``WhisperSTTService`` that transcribes with ``ShortWindowWhisper``, loads its
    model in a thread (the pipeline and the greeting start at once) and reports the same frames
    and metrics as Pipecat's own. One CPU thread by default (faster-whisper takes 4): during a
    call the bot's media handling keeps about half a core busy, and on 2 cores a second Whisper
    thread measured no faster in the pipeline (its threads wait for each other), only costlier
    when calls run side by side."""
    from collections import deque

    from voxfleet.bots.early import EarlyStart
    from pipecat.frames.frames import ErrorFrame, Frame, TranscriptionFrame
    from pipecat.services.whisper.stt import WhisperSTTService
    from pipecat.utils.time import time_now_iso8601

    class FastWhisperSTTService(WhisperSTTService):
        def _load(self) -> None:
            self._loaded = threading.Event()
            self._short: ShortWindowWhisper | None = None
            self._early = EarlyStart()
            self._early_task: asyncio.Future | None = None  # the current speech's early transcript
            self._early_busy = False  # one early transcription at a time (a dropped one may still run)
            self._early_for_segment: deque[asyncio.Future | None] = deque()  # per queued segment

            def load() -> None:
                from faster_whisper import WhisperModel
                from loguru import logger

                try:
                    self._model = WhisperModel(model_dir, device=self._device, compute_type=self._compute_type,
                                               cpu_threads=threads)
                    self._short = ShortWindowWhisper(self._model, margin_s=margin_s)
                    # The first inference in a process is slow; pay for it before the first turn.
                    self._short.transcribe(np.zeros(SAMPLE_RATE, dtype=np.float32))
                except Exception as exc:  # noqa: BLE001 - logged; run_stt then reports the missing model
                    logger.error(f"Whisper model failed to load: {exc}")
                finally:
                    self._loaded.set()

            threading.Thread(target=load, name="whisper-load", daemon=True).start()

        def wait_loaded(self) -> None:
            self._loaded.wait()

        def _transcribe(self, pcm: bytes) -> tuple[str, float]:
            assert self._short is not None
            return self._short.transcribe(np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0)

        async def _handle_user_started_speaking(self, frame: Any) -> None:
            await super()._handle_user_started_speaking(frame)
            self._early.user_started()
            self._early_task = None

        async def _handle_user_stopped_speaking(self, frame: Any) -> None:
            if self.is_usable:  # the segment Pipecat queues now gets this speech's early transcript
                self._early_for_segment.append(self._early_task)
            self._early_task = None
            self._early.user_stopped()
            await super()._handle_user_stopped_speaking(frame)

        async def process_audio_frame(self, frame: Any, direction: Any) -> None:
            await super().process_audio_frame(frame, direction)
            if self._short is None:
                return
            event = self._early.frame(frame.audio, self.sample_rate)
            if event == "resumed":
                self._early_task = None
            elif event == "start":
                self._start_early()

        def _start_early(self) -> None:
            """Transcribe the speech so far in the background; if the one before (dropped when
            the caller spoke again) still runs, as soon as it ends, while the caller stays quiet."""
            if self._early_busy:
                return
            self._early_busy = True
            pcm = bytes(self._audio_buffer) + self._trailing_silence()
            self._early_task = asyncio.ensure_future(asyncio.to_thread(self._transcribe, pcm))
            self._early_task.add_done_callback(self._early_done)

        def _early_done(self, _task: asyncio.Future) -> None:
            self._early_busy = False
            if self._early.started and self._early_task is None:  # quiet again since: catch up
                self._start_early()

        async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
            if not self._loaded.is_set():
                await asyncio.to_thread(self._loaded.wait)
            if self._short is None:
                yield ErrorFrame("Whisper model not available")
                return
            early = self._early_for_segment.popleft() if self._early_for_segment else None
            await self.start_processing_metrics()
            result: tuple[str, float] | None = None
            if early is not None:
                try:
                    result = await early
                except Exception:  # noqa: BLE001 - the early transcription failed: transcribe now
                    result = None
            text, no_speech = result if result is not None else await asyncio.to_thread(self._transcribe, audio)
            await self.stop_processing_metrics()
            threshold = self._settings.no_speech_prob
            if text and (threshold is None or no_speech < threshold):
                language = self._settings.language
                await self._handle_transcription(text, True, language)
                yield TranscriptionFrame(text, self._user_id, time_now_iso8601(), language)

    return FastWhisperSTTService(device="cpu", compute_type="int8",
                                 settings=WhisperSTTService.Settings(model=model_dir))
