"""Per-turn latency as the caller lives it: a pure timeline of one user turn (no I/O, no Pipecat).

A turn runs from the end of the user's speech to the first bot audio written to the transport.
The end of speech is what the bot received: the VAD's stop decision minus its stop window
(``stop_secs``: the silence the VAD had to hear before it called the speech over). Every stage
in between is stamped once, at its first occurrence in the turn, in epoch seconds:

- ``vad_stop``: the VAD decided the user stopped (end of speech + ``stop_secs``);
- ``turn_decision``: the turn strategy released the turn (Pipecat's ``UserStoppedSpeakingFrame``);
- ``transcript``: the final transcript the LLM was asked with (the last one before the request);
- ``llm_first_token``: the LLM's first text of its answer;
- ``tts_text``: the first text handed to TTS (the aggregated first sentence or clause);
- ``tts_first_audio``: the TTS's first audio;
- ``audio_out``: the first audio frame written to the transport (Pipecat's
  ``BotStartedSpeakingFrame``). Voice-to-voice = ``audio_out`` - end of speech.

The bot host feeds moments from a Pipecat observer; the breakdown it reports is stored per turn in
the session record and summarised per stage in ``/metrics`` and on the dashboard.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# In the order a turn goes through them; audio_out closes the turn.
STAGES = ("vad_stop", "turn_decision", "transcript", "llm_first_token", "tts_text", "tts_first_audio", "audio_out")
# The stage whose last occurrence counts (a service may finalise an utterance in pieces).
_LAST_WINS = ("transcript",)


@dataclass(frozen=True)
class TurnBreakdown:
    """One finished turn: when the user stopped speaking, and each stage's time after that (ms)."""

    speech_end: float  # epoch seconds
    stages_ms: dict[str, float]

    @property
    def v2v_ms(self) -> float:
        return self.stages_ms["audio_out"]

    def to_public(self) -> dict[str, Any]:
        return {"v2vMs": self.v2v_ms, "speechEndAt": round(self.speech_end, 3), "stagesMs": dict(self.stages_ms)}

    @classmethod
    def from_report(cls, fields: dict[str, Any]) -> "TurnBreakdown":
        """From the bot's ``turn`` report ({v2v_ms, stages_ms, speech_end})."""
        stages = {k: float(v) for k, v in (fields.get("stages_ms") or {}).items() if k in STAGES}
        stages["audio_out"] = float(fields["v2v_ms"])
        return cls(speech_end=float(fields.get("speech_end") or 0.0), stages_ms=stages)

    @classmethod
    def from_public(cls, data: dict[str, Any]) -> "TurnBreakdown":
        stages = {k: float(v) for k, v in (data.get("stagesMs") or {}).items() if k in STAGES}
        stages.setdefault("audio_out", float(data["v2vMs"]))
        return cls(speech_end=float(data.get("speechEndAt") or 0.0), stages_ms=stages)


@dataclass
class TurnClock:
    """Collects the moments of the current user turn; `bot_audio_out` closes it.

    Moments that arrive with no user turn under way (the greeting, audio the bot speaks on its
    own) are ignored. The user speaking again before the bot answered moves the end of speech
    (a pause mid-sentence is not the end of the turn), and the stages seen so far are dropped.
    """

    _speech_end: float | None = None
    _moments: dict[str, float] = field(default_factory=dict)

    @property
    def in_turn(self) -> bool:
        return self._speech_end is not None

    def user_started_speaking(self) -> None:
        self._speech_end = None
        self._moments.clear()

    def vad_stopped(self, at: float, stop_secs: float) -> None:
        self._moments.clear()
        self._speech_end = at - max(0.0, stop_secs)
        self._moments["vad_stop"] = at

    def mark(self, stage: str, at: float) -> None:
        if stage not in STAGES or stage in ("vad_stop", "audio_out"):
            raise ValueError(f"stage: not a stage a caller may mark (got {stage!r}; one of {STAGES[1:-1]})")
        if self._speech_end is None:
            return
        if stage in _LAST_WINS and "llm_first_token" not in self._moments:
            self._moments[stage] = at
        else:
            self._moments.setdefault(stage, at)

    def bot_audio_out(self, at: float) -> TurnBreakdown | None:
        """The bot started speaking: the finished turn, or None if no user turn was under way."""
        if self._speech_end is None:
            return None
        self._moments["audio_out"] = at
        speech_end = self._speech_end
        stages = {s: round((self._moments[s] - speech_end) * 1000, 1) for s in STAGES if s in self._moments}
        self._speech_end = None
        self._moments.clear()
        return TurnBreakdown(speech_end=speech_end, stages_ms=stages)


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..1); None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    index = (len(ordered) - 1) * q
    low, high = int(index), min(int(index) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (index - low)


def stage_summary(turns: list[TurnBreakdown]) -> dict[str, dict[str, float | None]]:
    """p50/p95 of each stage's time after the end of speech, over `turns`."""
    return {
        stage: {"p50": percentile(values, 0.5), "p95": percentile(values, 0.95), "n": len(values)}
        for stage in STAGES
        if (values := [t.stages_ms[stage] for t in turns if stage in t.stages_ms])
    }
