"""Piper's silences trimmed (bots/assistant.py)."""

import numpy as np

from voxfleet.bots.assistant import trim_silence


def test_trim_silence_keeps_the_sound_and_cuts_the_edges():
    rate = 1000
    pcm = np.concatenate([np.zeros(100), np.full(50, 5000), np.zeros(300)]).astype(np.int16).tobytes()
    out = np.frombuffer(trim_silence(pcm, rate, lead_s=0.01, trail_s=0.02), dtype=np.int16)
    assert len(out) == 10 + 50 + 20 and (out[10:60] == 5000).all()
    assert trim_silence(bytes(200), rate, lead_s=0.0) == bytes(200)  # all silence: left alone
