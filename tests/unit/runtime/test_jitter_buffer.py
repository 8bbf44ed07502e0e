"""The bot's WebRTC audio receivers release each frame at once (bot_session.shorten_audio_jitter_buffer),
on a real aiortc peer connection."""

from aiortc import RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer

from voxfleet.runtime.bot_session import BOT_AUDIO_PREFETCH, shorten_audio_jitter_buffer


async def test_audio_receivers_get_a_one_frame_buffer_and_video_keeps_its_own():
    pc = RTCPeerConnection()
    try:
        pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("video", direction="recvonly")
        assert shorten_audio_jitter_buffer(pc)
        buffers = {t.kind: t.receiver._RTCRtpReceiver__jitter_buffer for t in pc.getTransceivers()}
        assert isinstance(buffers["audio"], JitterBuffer) and buffers["audio"]._prefetch == BOT_AUDIO_PREFETCH
        assert buffers["audio"].capacity == 16
        assert buffers["video"]._prefetch == 0 and buffers["video"].capacity == 512  # untouched
    finally:
        await pc.close()


async def test_a_connection_without_audio_is_left_alone():
    pc = RTCPeerConnection()
    try:
        assert not shorten_audio_jitter_buffer(pc)
    finally:
        await pc.close()
