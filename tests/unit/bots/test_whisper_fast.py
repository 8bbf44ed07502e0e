"""Whisper with a window sized to the utterance (bots/whisper_fast.py), on the real tiny.en model."""

import numpy as np
import pytest

from voxfleet.bench.speech import speak
from voxfleet.bench.stt import word_errors


@pytest.fixture(scope="module")
def short():
    from faster_whisper import WhisperModel

    from voxfleet.bots import models
    from voxfleet.bots.whisper_fast import ShortWindowWhisper

    model = WhisperModel(str(models.whisper_model_dir()), device="cpu", compute_type="int8", cpu_threads=1)
    return ShortWindowWhisper(model)


def utterance(text: str) -> np.ndarray:
    speech = speak(text, 16000).astype(np.float32) / 32768
    return np.concatenate([np.zeros(8000, np.float32), speech, np.zeros(11200, np.float32)])


@pytest.mark.parametrize("text", ["What is the capital of France?",
                                  "I would like to change my reservation. Can we move it to Friday evening instead?"])
def test_an_utterance_is_transcribed_once_without_the_decoder_repeating_it(short, text):
    heard, no_speech = short.transcribe(utterance(text))
    errors, words = word_errors(text, heard)
    assert errors <= 2, heard  # tiny.en may mishear a word ("evening" -> "e being": 2 word errors), never loop
    assert len(heard.split()) <= words + 1 and no_speech < 0.4, heard


def test_noise_is_flagged_as_no_speech(short):
    _, no_speech = short.transcribe(np.random.default_rng(0).normal(0, 0.01, 32000).astype(np.float32))
    assert no_speech > 0.6


def test_audio_longer_than_the_window_falls_back_to_the_full_path(short):
    long = np.concatenate([utterance("What is the capital of France?")] * 12)  # ~36 s: past the 27 s + margin
    assert len(long) / 16000 > 30
    calls = []
    short._long = lambda audio, original=short._long: calls.append(len(audio)) or original(audio)
    try:
        heard, _ = short.transcribe(long)
    finally:
        del short._long
    assert calls == [len(long)] and "capital of france" in heard.lower()


def test_a_segment_that_repeats_its_own_start_is_cut_to_one_period():
    from voxfleet.bots.whisper_fast import _unlooped

    sentence = [11, 12, 13, 14, 15, 16, 17]  # "What is the capital of France?"
    assert _unlooped(sentence * 3 + sentence[:1]) == sentence
    assert _unlooped(sentence + sentence) == sentence
    assert _unlooped(sentence) == sentence  # nothing repeated: untouched
    assert _unlooped([5, 5, 5, 5, 5, 5]) == [5, 5, 5]  # no period shorter than 3 tokens
    assert _unlooped(sentence + [11, 12, 99]) == sentence + [11, 12, 99]  # repeats, then differs: speech
