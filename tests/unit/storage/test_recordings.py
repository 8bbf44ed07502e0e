"""Recording files (storage/recordings.py): the bot's PCM made a WAV, and the retention sweep."""

import os
import time
import wave

import numpy as np
import pytest

from voxfleet.storage import recordings


def write_part(directory, session_id: str, seconds: float, extra: bytes = b"") -> np.ndarray:
    frames = np.arange(int(seconds * recordings.SAMPLE_RATE) * 2, dtype=np.int64) % 20000
    stereo = frames.astype("<i2")
    recordings.part_path(directory, session_id).write_bytes(stereo.tobytes() + extra)
    return stereo


def test_finalize_wraps_the_pcm_into_a_stereo_wav_and_removes_the_part(tmp_path):
    stereo = write_part(tmp_path, "s1", 2.5, extra=b"\x01\x02\x03")  # a bot killed mid-write
    meta = recordings.finalize(tmp_path, "s1")
    assert meta == {"state": "ready", "format": "wav", "channels": ["caller", "bot"], "sampleRate": 16000,
                    "durationS": 2.5, "bytes": recordings.wav_path(tmp_path, "s1").stat().st_size}
    assert not recordings.part_path(tmp_path, "s1").exists()
    with wave.open(str(recordings.wav_path(tmp_path, "s1"))) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, 16000)
        assert np.array_equal(np.frombuffer(wav.readframes(wav.getnframes()), "<i2"), stereo)
    assert oct(recordings.wav_path(tmp_path, "s1").stat().st_mode & 0o777) == "0o600"
    assert recordings.finalize(tmp_path, "s1") == meta  # idempotent
    assert recordings.finalize(tmp_path, "never-recorded") is None


def test_a_session_id_never_names_a_path(tmp_path):
    with pytest.raises(ValueError, match="cannot name a recording file"):
        recordings.wav_path(tmp_path, "../../etc/passwd")


def test_sweep_deletes_only_recordings_past_retention(tmp_path):
    for name in ("old", "new"):
        write_part(tmp_path, name, 0.1)
        recordings.finalize(tmp_path, name)
    day = 86400
    os.utime(recordings.wav_path(tmp_path, "old"), (time.time() - 31 * day,) * 2)
    assert recordings.sweep(tmp_path, retention_days=0) == []  # 0: forever
    assert recordings.sweep(tmp_path, retention_days=30) == ["old"]
    assert not recordings.wav_path(tmp_path, "old").exists() and recordings.wav_path(tmp_path, "new").exists()
    assert recordings.sweep(tmp_path, retention_days=30, now=time.time() + 31 * day) == ["new"]
    assert recordings.sweep(tmp_path / "absent", retention_days=1) == []
