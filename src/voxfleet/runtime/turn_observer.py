"""Times every user turn inside the bot process, from the frames the bot's own pipeline pushes.

A Pipecat observer (it sees each frame as one processor pushes it to the next) feeds the pure
``observability.turns.TurnClock``. The bot is not changed: the bot host adds the observer to
every ``PipelineWorker`` the session creates (this process hosts exactly one session).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.frame_processor import FrameDirection

from voxfleet.observability.turns import TurnBreakdown, TurnClock

log = logging.getLogger(__name__)

_STAGE_OF = (
    (UserStoppedSpeakingFrame, "turn_decision"),
    (TranscriptionFrame, "transcript"),
    (LLMTextFrame, "llm_first_token"),
    (TTSStartedFrame, "tts_text"),
    (TTSAudioRawFrame, "tts_first_audio"),
)


class TurnLatencyObserver(BaseObserver):
    """Reports each finished turn's breakdown to `on_turn` (voice-to-voice and its stages)."""

    def __init__(self, on_turn: Callable[[TurnBreakdown], None], clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self._turns = TurnClock()
        self._on_turn = on_turn
        self._now = clock

    async def on_push_frame(self, data: FramePushed) -> None:
        frame = data.frame
        # A frame is pushed again by every processor that passes it on: count its first push only.
        if data.direction != FrameDirection.DOWNSTREAM or not data.first_push:
            return
        if isinstance(frame, VADUserStartedSpeakingFrame):
            self._turns.user_started_speaking()
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self._turns.vad_stopped(frame.timestamp, frame.stop_secs)
        elif isinstance(frame, BotStartedSpeakingFrame):
            turn = self._turns.bot_audio_out(self._now())
            if turn is not None:
                try:
                    self._on_turn(turn)
                except Exception:  # noqa: BLE001 - reporting must never break the call
                    log.exception("turn report failed")
        elif self._turns.in_turn:
            for kind, stage in _STAGE_OF:
                if isinstance(frame, kind):
                    self._turns.mark(stage, self._now())
                    break


def observe_every_worker(on_turn: Callable[[TurnBreakdown], None]) -> None:
    """Add a TurnLatencyObserver reporting to `on_turn` to every ``PipelineWorker`` this process
    creates from now on (the bot is unchanged; a bot process hosts one session). Once per process:
    a second call keeps the first reporter."""
    add_to_every_worker("turns", lambda: TurnLatencyObserver(on_turn))


_FACTORIES: dict[str, Callable[[], BaseObserver]] = {}


def add_to_every_worker(name: str, factory: Callable[[], BaseObserver]) -> None:
    """Add an observer made by `factory` to every ``PipelineWorker`` this process creates from now
    on (the turn observer; the recording observer, ``runtime/recording_observer.py``). Once per
    `name` and process: a second call for a name keeps the first factory."""
    from pipecat.pipeline.worker import PipelineWorker

    _FACTORIES.setdefault(name, factory)
    if getattr(PipelineWorker.__init__, "voxfleet_observed", False):
        return
    init = PipelineWorker.__init__

    def observed_init(worker: object, *args: object, **kwargs: object) -> None:
        init(worker, *args, **kwargs)  # type: ignore[arg-type]
        for make in _FACTORIES.values():
            worker.add_observer(make())  # type: ignore[attr-defined]

    observed_init.voxfleet_observed = True  # type: ignore[attr-defined]
    PipelineWorker.__init__ = observed_init  # type: ignore[method-assign,assignment]
