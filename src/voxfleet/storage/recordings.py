"""Recording files in their directory: the bot's growing PCM, the finished WAV, the retention sweep.

A bot that records appends interleaved stereo PCM (16-bit, ``SAMPLE_RATE``, caller left, bot
right) to ``<dir>/<session id>.pcm.part``. Once the session has ended (however: a bot killed
with -9 leaves its file as it was), ``finalize`` wraps it into ``<session id>.wav``, copying it
in chunks (never the whole file in memory) and renaming it into place, so a reader never sees a
half-written WAV. Everything here blocks: the control plane runs it in a thread.
"""

from __future__ import annotations

import os
import re
import time
import wave
from pathlib import Path
from typing import Any

SAMPLE_RATE = 16000
CHANNELS = ["caller", "bot"]
FRAME_BYTES = 4  # two 16-bit samples
COPY_CHUNK = 1 << 20
_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _checked(session_id: str) -> str:
    if not _SESSION_ID.match(session_id):  # never a path: ids are ours, but a file name is built from it
        raise ValueError(f"session id {session_id[:80]!r} cannot name a recording file")
    return session_id


def part_path(directory: Path, session_id: str) -> Path:
    return directory / f"{_checked(session_id)}.pcm.part"


def wav_path(directory: Path, session_id: str) -> Path:
    return directory / f"{_checked(session_id)}.wav"


def metadata(path: Path) -> dict[str, Any]:
    """What the session record and the ``recording.ready`` webhook tell of a finished WAV."""
    with wave.open(str(path), "rb") as wav:
        frames, rate, channels = wav.getnframes(), wav.getframerate(), wav.getnchannels()
    return {"state": "ready", "format": "wav", "channels": CHANNELS[:channels], "sampleRate": rate,
            "durationS": round(frames / rate, 3), "bytes": path.stat().st_size}


def finalize(directory: Path, session_id: str) -> dict[str, Any] | None:
    """Turn the session's PCM into its WAV; its metadata, or None if the bot wrote nothing.
    Idempotent: a WAV already finished is described again."""
    part, wav_file = part_path(directory, session_id), wav_path(directory, session_id)
    if not part.exists():
        return metadata(wav_file) if wav_file.exists() else None
    size = part.stat().st_size // FRAME_BYTES * FRAME_BYTES  # a bot killed mid-write: whole frames only
    partial = directory / f"{session_id}.wav.tmp"
    with open(part, "rb") as source, wave.open(str(partial), "wb") as target:
        target.setnchannels(len(CHANNELS))
        target.setsampwidth(2)
        target.setframerate(SAMPLE_RATE)
        left = size
        while left > 0:
            chunk = source.read(min(COPY_CHUNK, left))
            if not chunk:
                break
            target.writeframes(chunk)
            left -= len(chunk)
    os.chmod(partial, 0o600)
    os.replace(partial, wav_file)
    part.unlink()
    return metadata(wav_file)


def unfinished(directory: Path) -> list[str]:
    """Session ids whose PCM was never finalized (their session may still be live)."""
    if not directory.is_dir():
        return []
    return sorted(p.name.removesuffix(".pcm.part") for p in directory.glob("*.pcm.part"))


def sweep(directory: Path, retention_days: float, now: float | None = None) -> list[str]:
    """Delete the WAVs finished more than `retention_days` ago (0: keep forever); their session ids."""
    if retention_days <= 0 or not directory.is_dir():
        return []
    cutoff = (now if now is not None else time.time()) - retention_days * 86400
    expired = []
    for path in directory.glob("*.wav"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                expired.append(path.name.removesuffix(".wav"))
        except FileNotFoundError:  # deleted by someone else meanwhile
            continue
    return sorted(expired)
