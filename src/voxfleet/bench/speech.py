"""Test speech for callers: Piper (the bundled joe voice) speaking a sentence at 48 kHz."""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=1)
def _voice():
    from piper import PiperVoice

    from voxfleet.bots import models

    return PiperVoice.load(str(models.piper_voice_dir() / f"{models.PIPER_VOICE}.onnx"))


def speak(text: str, sample_rate: int = 48000) -> np.ndarray:
    """Return `text` spoken as mono int16 PCM at `sample_rate`."""
    import soxr

    voice = _voice()
    pcm = np.concatenate([np.frombuffer(c.audio_int16_bytes, dtype=np.int16) for c in voice.synthesize(text)])
    out = soxr.resample(pcm.astype(np.float32) / 32768, voice.config.sample_rate, sample_rate)
    return np.clip(out * 32768, -32768, 32767).astype(np.int16)


@lru_cache(maxsize=1)
def _whisper():
    from faster_whisper import WhisperModel

    from voxfleet.bots import models

    return WhisperModel(str(models.whisper_model_dir()), device="cpu", compute_type="int8")


def transcribe(pcm: np.ndarray, sample_rate: int) -> str:
    """What the bundled Whisper (tiny.en) hears in mono int16 `pcm`: how a test checks a bot's words."""
    import soxr

    audio = soxr.resample(pcm.astype(np.float32) / 32768, sample_rate, 16000)
    segments, _info = _whisper().transcribe(audio, language="en", beam_size=1)
    return " ".join(s.text.strip() for s in segments).strip()
