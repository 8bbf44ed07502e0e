"""Starting on the end of speech before the VAD stops (bots/early.py): the pure gate, and the
smart-turn analyzer with the real smart-turn v3 model."""

import asyncio

import numpy as np
from pipecat.audio.turn.base_turn_analyzer import EndOfTurnState

from voxfleet.bench.speech import speak
from voxfleet.bots.early import EarlySmartTurn, EarlyStart

LOUD, QUIET, FRAME_S = 8000, 20, 0.02


def test_quiet_after_speech_starts_once_and_speech_again_drops_it():
    gate = EarlyStart(quiet_s=0.08)
    assert gate.audio(QUIET, FRAME_S) is None  # nobody speaking: nothing to start
    gate.user_started()
    assert [gate.audio(LOUD, FRAME_S) for _ in range(3)] == [None] * 3
    assert [gate.audio(QUIET, FRAME_S) for _ in range(5)] == [None, None, None, "start", None]
    assert gate.audio(LOUD, FRAME_S) == "resumed"  # a pause, not the end
    assert gate.audio(LOUD, FRAME_S) is None
    assert [gate.audio(QUIET, FRAME_S) for _ in range(4)][-1] == "start"
    gate.user_stopped()
    assert gate.audio(QUIET, FRAME_S) is None and gate.audio(LOUD, FRAME_S) is None


def chunks(pcm: np.ndarray, size: int = 512):
    for i in range(0, len(pcm), size):
        yield pcm[i:i + size].tobytes()


async def _turn(analyzer: EarlySmartTurn, runs: list[int], speech: np.ndarray, quiet_s: float, resume: bool = False):
    """Speech, quiet, (speech again,) the VAD's stop: (the early prediction, the predictions made
    before the stop, the analysis at the stop)."""
    for chunk in chunks(speech):
        analyzer.append_audio(chunk, True)
    silence = np.zeros(int(16000 * quiet_s), np.int16)
    for chunk in chunks(silence):
        analyzer.append_audio(chunk, True)  # the VAD still says speaking: its stop window runs
    early = analyzer._early
    if resume:
        loudest = int(np.argmax(np.abs(speech)))
        analyzer.append_audio(speech[loudest:loudest + 512].tobytes(), True)
    for chunk in chunks(np.zeros(1600, np.int16)):
        analyzer.append_audio(chunk, False)
    if early is not None:
        await asyncio.wrap_future(early)
    before = len(runs)
    return early, before, await analyzer.analyze_end_of_turn()


def counting_analyzer() -> tuple[EarlySmartTurn, list[int]]:
    analyzer = EarlySmartTurn()
    analyzer.set_sample_rate(16000)
    runs: list[int] = []
    predict = analyzer._process_speech_segment
    analyzer._process_speech_segment = lambda audio: runs.append(len(audio)) or predict(audio)
    return analyzer, runs


def test_the_turn_is_judged_on_the_quiet_before_the_vad_stops():
    analyzer, runs = counting_analyzer()
    speech = speak("What is the capital of France?", 16000)
    early, before, (state, metrics) = asyncio.run(_turn(analyzer, runs, speech, quiet_s=0.15))
    assert early is not None
    assert state == EndOfTurnState.COMPLETE and metrics.is_complete
    assert len(runs) == before  # the early prediction was the turn's: none made at the VAD's stop
    assert analyzer._early is None


def test_speech_after_the_early_prediction_drops_it():
    analyzer, runs = counting_analyzer()
    speech = speak("What is the capital of France?", 16000)
    early, before, (state, _) = asyncio.run(_turn(analyzer, runs, speech, quiet_s=0.15, resume=True))
    assert early is not None
    assert len(runs) == before + 1 and runs[-1] > runs[-2]  # dropped: analysed again, on the later audio
    assert state in (EndOfTurnState.COMPLETE, EndOfTurnState.INCOMPLETE)  # the model's call on a word cut short
