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
