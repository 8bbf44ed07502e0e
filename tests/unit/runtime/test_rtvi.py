"""The RTVI observer (runtime.rtvi): the RTVI messages a bot sends its client in, observations out."""

from __future__ import annotations

from voxfleet.runtime.messages import Event, Transcript, Ttfb
from voxfleet.runtime.rtvi import RtviObserver


def rtvi(kind: str, **data):
    return {"label": "rtvi-ai", "type": kind, "data": data}


def test_first_audio_once():
    observer = RtviObserver()
    assert observer.observe(rtvi("bot-started-speaking"), 5.0) == [Event(name="first_audio", at=5.0)]
    assert observer.observe(rtvi("bot-started-speaking"), 6.0) == []


def test_final_user_transcriptions_only():
    observer = RtviObserver()
    assert observer.observe(rtvi("user-transcription", text="hel", final=False), 1.0) == []
    assert observer.observe(rtvi("user-transcription", text="  ", final=True), 1.0) == []
    assert observer.observe(rtvi("user-transcription", text=" hello ", final=True), 2.0) == [
        Transcript(role="user", text="hello", at=2.0)]


def test_bot_output_by_sentence_and_once():
    observer = RtviObserver()
    assert observer.observe(rtvi("bot-output", text="Hi", aggregated_by="word"), 1.0) == []
    assert observer.observe(rtvi("bot-output", text="Hi there.", aggregated_by="sentence"), 2.0) == [
        Transcript(role="bot", text="Hi there.", at=2.0)]
    assert observer.observe(rtvi("bot-output", text="Hi there. ", aggregated_by="sentence"), 3.0) == []
    assert observer.observe(rtvi("bot-output", text="Bye."), 4.0) == [Transcript(role="bot", text="Bye.", at=4.0)]


def test_ttfb_from_metrics():
    observer = RtviObserver()
    message = rtvi("metrics", ttfb=[{"processor": "WhisperSTTService#0", "value": 0.25}, {"processor": "x"}, "junk",
                                    {"value": 1}])
    assert observer.observe(message, 1.0) == [Ttfb(processor="WhisperSTTService#0", seconds=0.25),
                                              Ttfb(processor="?", seconds=1.0)]


def test_not_rtvi_is_ignored():
    observer = RtviObserver()
    assert observer.observe({"label": "other", "type": "bot-started-speaking"}, 1.0) == []
    assert observer.observe("text", 1.0) == []
    assert observer.observe(None, 1.0) == []
    assert observer.observe(rtvi("bot-llm-started"), 1.0) == []
    assert not observer.first_audio
