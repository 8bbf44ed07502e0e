"""A session's two audio channels on one timeline, interleaved into stereo PCM (pure: no I/O,
no asyncio, no clock of its own).

The caller (left) and the bot (right) arrive as chunks of 16-bit mono PCM at one sample rate,
each stamped with when it was heard or played (seconds since the session's start). A chunk is
placed at its time, but never before the end of the previous chunk of its channel (a burst of
chunks stamped close together plays one after the other, as the listener heard it); a gap is
silence. ``take(until_s)`` hands out the interleaved frames up to `until_s` once: a channel that
has nothing there is padded with silence, so a chunk stamped before what was already handed out
goes right after it. ``take_all()`` hands out the rest, both channels to the longer one's end.
"""

from __future__ import annotations

import numpy as np

CHANNELS = ("caller", "bot")
SAMPLE_BYTES = 2  # 16-bit PCM


class StereoTimeline:
    def __init__(self, sample_rate: int) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive (got {sample_rate})")
        self.sample_rate = sample_rate
        self.taken = 0  # frames handed out so far (both channels)
        # per channel: samples from `taken` on, not handed out yet
        self.pending = {name: bytearray() for name in CHANNELS}

    def end_s(self, channel: str) -> float:
        """Where `channel`'s audio ends so far, seconds since the start."""
        return self._end(channel) / self.sample_rate

    def _end(self, channel: str) -> int:
        return self.taken + len(self.pending[channel]) // SAMPLE_BYTES

    def add(self, channel: str, at_s: float, pcm: bytes) -> None:
        """`pcm` (16-bit mono at the timeline's rate) of `channel`, heard or played at `at_s`."""
        if channel not in self.pending:
            raise ValueError(f"channel must be one of {', '.join(CHANNELS)} (got {channel!r})")
        if len(pcm) % SAMPLE_BYTES:
            raise ValueError(f"{channel}: PCM of {len(pcm)} bytes is not whole 16-bit samples")
        if not pcm:
            return
        gap = max(0, round(at_s * self.sample_rate) - self._end(channel))
        buffer = self.pending[channel]
        if gap:
            buffer.extend(bytes(gap * SAMPLE_BYTES))
        buffer.extend(pcm)

    def take(self, until_s: float) -> bytes:
        """The interleaved stereo frames up to `until_s` not handed out yet (b"" if none)."""
        return self._take(round(until_s * self.sample_rate))

    def take_all(self) -> bytes:
        """Everything not handed out yet, both channels to the longer one's end."""
        return self._take(max(self._end(name) for name in CHANNELS))

    def _take(self, until: int) -> bytes:
        count = until - self.taken
        if count <= 0:
            return b""
        stereo = np.zeros(count * 2, dtype="<i2")
        for index, name in enumerate(CHANNELS):
            buffer = self.pending[name]
            have = min(count, len(buffer) // SAMPLE_BYTES)
            if have:
                stereo[index:have * 2:2] = np.frombuffer(buffer, dtype="<i2", count=have)
            del buffer[:have * SAMPLE_BYTES]
        self.taken = until
        return stereo.tobytes()
