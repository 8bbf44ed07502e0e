"""The per-turn timeline (observability.turns): pure, no Pipecat, no event loop."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voxfleet.observability.turns import STAGES, TurnBreakdown, TurnClock, stage_summary


def test_a_turn_is_timed_from_the_end_of_speech_not_from_the_vad_decision():
    clock = TurnClock()
    clock.user_started_speaking()
    clock.vad_stopped(at=100.2, stop_secs=0.2)  # speech ended at 100.0
    clock.mark("turn_decision", 100.25)
    clock.mark("transcript", 100.4)
    clock.mark("llm_first_token", 100.5)
    clock.mark("tts_text", 100.55)
    clock.mark("tts_first_audio", 100.65)
    turn = clock.bot_audio_out(100.7)
    assert turn is not None and turn.speech_end == pytest.approx(100.0)
    assert turn.v2v_ms == pytest.approx(700.0)
    assert turn.stages_ms == pytest.approx({"vad_stop": 200.0, "turn_decision": 250.0, "transcript": 400.0,
                                            "llm_first_token": 500.0, "tts_text": 550.0, "tts_first_audio": 650.0,
                                            "audio_out": 700.0})
    assert list(turn.stages_ms) == list(STAGES)  # in the order a turn goes through them


def test_the_greeting_and_audio_without_a_user_turn_are_not_turns():
    clock = TurnClock()
    clock.mark("tts_first_audio", 1.0)
    assert clock.bot_audio_out(1.1) is None
    clock.vad_stopped(at=5.0, stop_secs=0.5)
    assert clock.bot_audio_out(6.0).v2v_ms == pytest.approx(1500.0)
    assert clock.bot_audio_out(7.0) is None  # the same turn is not counted twice


def test_speaking_again_moves_the_end_of_speech_and_drops_stale_stages():
    clock = TurnClock()
    clock.vad_stopped(at=10.2, stop_secs=0.2)
    clock.mark("transcript", 10.5)  # the first half of a sentence
    clock.user_started_speaking()
    clock.vad_stopped(at=12.2, stop_secs=0.2)
    clock.mark("transcript", 12.4)
    turn = clock.bot_audio_out(12.8)
    assert turn.speech_end == pytest.approx(12.0) and turn.stages_ms["transcript"] == pytest.approx(400.0)


def test_the_last_transcript_before_the_llm_answers_counts_and_other_stages_count_once():
    clock = TurnClock()
    clock.vad_stopped(at=1.0, stop_secs=0.0)
    clock.mark("transcript", 1.1)
    clock.mark("transcript", 1.2)  # a service finalising in pieces
    clock.mark("llm_first_token", 1.3)
    clock.mark("llm_first_token", 1.4)
    clock.mark("transcript", 1.5)  # after the answer began: not this turn's question
    turn = clock.bot_audio_out(1.6)
    assert turn.stages_ms["transcript"] == pytest.approx(200.0)
    assert turn.stages_ms["llm_first_token"] == pytest.approx(300.0)


def test_unknown_stages_are_refused_by_name():
    with pytest.raises(ValueError, match="stage: .*'audio_out'"):
        TurnClock().mark("audio_out", 1.0)
    with pytest.raises(ValueError, match="'llm'"):
        TurnClock().mark("llm", 1.0)


def test_report_and_public_forms_round_trip():
    turn = TurnBreakdown(speech_end=50.0, stages_ms={"vad_stop": 200.0, "transcript": 380.5, "audio_out": 640.0})
    again = TurnBreakdown.from_public(turn.to_public())
    assert again.stages_ms == turn.stages_ms and again.speech_end == pytest.approx(50.0)
    reported = TurnBreakdown.from_report({"v2v_ms": 640.0, "stages_ms": {"vad_stop": 200.0, "bogus": 1},
                                         "speech_end": 50.0})
    assert reported.stages_ms == {"vad_stop": 200.0, "audio_out": 640.0}


def test_stage_summary_gives_p50_and_p95_per_stage():
    turns = [TurnBreakdown(speech_end=0.0, stages_ms={"vad_stop": 200.0, "audio_out": float(v)})
             for v in (500, 600, 700, 800, 900)]
    summary = stage_summary(turns)
    assert summary["audio_out"]["p50"] == pytest.approx(700.0) and summary["audio_out"]["n"] == 5
    assert summary["audio_out"]["p95"] == pytest.approx(880.0)
    assert "transcript" not in summary and stage_summary([]) == {}


events = st.lists(st.one_of(
    st.tuples(st.just("start")),
    st.tuples(st.just("stop"), st.floats(0, 1)),
    st.tuples(st.sampled_from(STAGES[1:-1])),
    st.tuples(st.just("out")),
), max_size=60)


@given(events)
def test_any_event_order_gives_turns_whose_stages_follow_the_end_of_speech(sequence):
    clock, now = TurnClock(), 1000.0
    for event in sequence:
        now += 0.05
        if event[0] == "start":
            clock.user_started_speaking()
        elif event[0] == "stop":
            clock.vad_stopped(now, event[1])
        elif event[0] == "out":
            turn = clock.bot_audio_out(now)
            if turn is not None:
                assert turn.v2v_ms == max(turn.stages_ms.values())
                assert all(ms >= 0 for ms in turn.stages_ms.values())
                assert turn.stages_ms["vad_stop"] <= turn.v2v_ms
        else:
            clock.mark(event[0], now)
