"""Work on the end of the user's speech that starts before the VAD calls the speech over.

The VAD needs ``stop_secs`` (0.2 s) of silence before it ends the user's speech; only then does
Pipecat hand the segment to STT and ask the turn analyzer whether the turn is complete, one after
the other's wait. Once the caller has been quiet for ``EarlyStart.quiet_s`` both start on the
audio so far, in the background; when the VAD then stops with no loud frame in between, their
results are the segment's. A loud frame first drops them, and the VAD's stop is handled as usual.

- ``EarlyStart``: the pure decision, fed each input frame's peak;
- ``EarlySmartTurn``: Pipecat's local smart-turn v3 analyzer with an early prediction (used only
  when it says the turn is complete; otherwise the turn is analysed again at the VAD's stop);
- ``whisper_fast.make_whisper_service``: Whisper with an early transcript.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Future
from typing import Any

import numpy as np
from pipecat.audio.turn.base_turn_analyzer import EndOfTurnState
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3


class EarlyStart:
    """When to transcribe before the VAD calls the speech over (pure: fed each input frame's peak).

    The VAD needs ``stop_secs`` (0.2 s) of silence before it ends the user's speech, and only then
    does Pipecat hand the segment to STT. Once the caller has been quiet for ``quiet_s`` this says
    ``"start"``: the audio so far is transcribed in the background, and if the VAD then stops with
    no loud frame in between, that transcript is the segment's. A loud frame says ``"resumed"``:
    the early transcript is dropped and the segment is transcribed as usual."""

    def __init__(self, quiet_s: float = 0.08, peak: int = 500) -> None:
        self.quiet_s, self.peak = quiet_s, peak
        self.speaking = False
        self.quiet = 0.0
        self.started = False

    def user_started(self) -> None:
        self.speaking, self.quiet, self.started = True, 0.0, False

    def user_stopped(self) -> None:
        self.speaking, self.quiet, self.started = False, 0.0, False

    def frame(self, pcm: bytes, sample_rate: int) -> str | None:
        """`audio` for one frame of int16 mono PCM."""
        samples = np.frombuffer(pcm, dtype=np.int16)
        if not len(samples):
            return None
        return self.audio(int(np.abs(samples).max()), len(samples) / max(1, sample_rate))

    def audio(self, peak: int, seconds: float) -> str | None:
        if not self.speaking:
            return None
        if peak >= self.peak:
            self.quiet = 0.0
            if self.started:
                self.started = False
                return "resumed"
            return None
        self.quiet += seconds
        if not self.started and self.quiet >= self.quiet_s:
            self.started = True
            return "start"
        return None


class EarlySmartTurn(LocalSmartTurnAnalyzerV3):
    """Smart-turn v3 that predicts once the caller is quiet, before the VAD stops (see above)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._early_gate = EarlyStart()
        self._early: Future | None = None

    def append_audio(self, buffer: bytes, is_speech: bool) -> EndOfTurnState:
        state = super().append_audio(buffer, is_speech)
        gate = self._early_gate
        if is_speech and not gate.speaking:
            gate.user_started()
            self._early = None
        elif not is_speech and gate.speaking:
            gate.user_stopped()
        event = gate.frame(buffer, self.sample_rate)
        if event == "resumed":
            self._early = None
        elif event == "start" and self._audio_buffer:
            self._early = self._model_executor.submit(self._process_speech_segment, list(self._audio_buffer))
        return state

    async def analyze_end_of_turn(self) -> tuple[EndOfTurnState, Any]:
        early, self._early = self._early, None
        if early is not None:
            try:
                state, result = await asyncio.wrap_future(early)
            except Exception:  # noqa: BLE001 - analysed again below
                state = EndOfTurnState.INCOMPLETE
            if state == EndOfTurnState.COMPLETE:
                self._clear(state)
                return state, result
        return await super().analyze_end_of_turn()

    def clear(self) -> None:
        self._early = None
        super().clear()
