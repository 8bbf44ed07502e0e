"""The pure stereo timeline of recordings (observability/stereo.py)."""

import numpy as np
import pytest

from voxfleet.observability.stereo import StereoTimeline

RATE = 1000  # 1 sample per ms keeps the arithmetic readable


def pcm(*samples: int) -> bytes:
    return np.array(samples, dtype="<i2").tobytes()


def channels(stereo: bytes) -> tuple[list[int], list[int]]:
    frames = np.frombuffer(stereo, dtype="<i2")
    return frames[0::2].tolist(), frames[1::2].tolist()


def test_chunks_are_placed_at_their_time_and_gaps_are_silence():
    timeline = StereoTimeline(RATE)
    timeline.add("caller", 0.0, pcm(1, 2))
    timeline.add("bot", 0.003, pcm(7, 8))
    left, right = channels(timeline.take_all())
    assert left == [1, 2, 0, 0, 0]
    assert right == [0, 0, 0, 7, 8]


def test_a_chunk_never_starts_before_the_previous_one_of_its_channel_ends():
    timeline = StereoTimeline(RATE)
    timeline.add("bot", 0.0, pcm(1, 1, 1))
    timeline.add("bot", 0.001, pcm(2, 2))  # stamped inside the first: goes after it
    _, right = channels(timeline.take_all())
    assert right == [1, 1, 1, 2, 2]


def test_take_hands_out_each_frame_once_and_pads_a_quiet_channel():
    timeline = StereoTimeline(RATE)
    timeline.add("caller", 0.0, pcm(*range(1, 11)))
    left, right = channels(timeline.take(0.004))
    assert left == [1, 2, 3, 4] and right == [0, 0, 0, 0]
    assert timeline.take(0.004) == b"" and timeline.take(0.002) == b""
    # the bot's chunk is stamped before what was handed out: it goes right after it
    timeline.add("bot", 0.001, pcm(9))
    left, right = channels(timeline.take_all())
    assert left == [5, 6, 7, 8, 9, 10] and right == [9, 0, 0, 0, 0, 0]
    assert timeline.end_s("caller") == timeline.end_s("bot") == 0.010


def test_the_stream_adds_up_to_both_channels_whole():
    timeline = StereoTimeline(16000)
    rng = np.random.default_rng(1)
    caller = rng.integers(-30000, 30000, 16000 * 2).astype("<i2")
    out = bytearray()
    for i in range(100):  # 20 ms chunks, taken every half second with a 0.1 s hold-back
        timeline.add("caller", i * 0.02, caller[i * 320:(i + 1) * 320].tobytes())
        if i % 25 == 0:
            out += timeline.take(i * 0.02 - 0.1)
    timeline.add("bot", 1.5, pcm(5) * 160)
    out += timeline.take_all()
    left, right = channels(bytes(out))
    assert left == caller.tolist()
    assert right[24000:24160] == [5] * 160 and not any(right[:24000]) and not any(right[24160:])


def test_bad_input_is_named():
    timeline = StereoTimeline(RATE)
    with pytest.raises(ValueError, match="channel must be one of caller, bot"):
        timeline.add("left", 0, pcm(1))
    with pytest.raises(ValueError, match="not whole 16-bit samples"):
        timeline.add("bot", 0, b"\x01")
    with pytest.raises(ValueError, match="sample_rate"):
        StereoTimeline(0)
