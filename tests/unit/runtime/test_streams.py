"""The WebSocket relay's latency samples (runtime/streams.py)."""


def test_relay_latency_samples_stay_bounded_and_count_every_frame():
    from voxfleet.runtime.streams import LatencySamples

    samples = LatencySamples(keep=100)
    for i in range(10_000):
        samples.add(float(i % 100))
    summary = samples.summary()
    assert summary["frames"] == 10_000 and len(samples.samples) == 100
    assert 30 <= summary["p50"] <= 70 and summary["p99"] >= 90
    assert LatencySamples().summary() == {"frames": 0}


async def test_a_caller_that_does_not_read_ends_the_call_and_memory_stays_bounded():
    from voxfleet.runtime.messages import WsClose, WsOut
    from voxfleet.runtime.streams import CALLER_TOO_SLOW, MAX_OUTBOX, RelayStream, StreamClosed

    to_bot = []
    stream = RelayStream(to_bot.append)
    for _ in range(MAX_OUTBOX + 500):  # the bot speaks; nobody takes the frames
        stream.on_bot_message(WsOut(text="{}", at=None))
    assert to_bot == [WsClose(code=CALLER_TOO_SLOW, reason=f"the caller did not read the bot's frames "
                                                           f"({MAX_OUTBOX} waiting)")]
    closed = await stream.receive()  # what waited was dropped: the close comes next
    assert isinstance(closed, StreamClosed) and closed.code == CALLER_TOO_SLOW and not closed.failed
    assert stream._outbox.empty()


async def test_a_bot_that_is_gone_closes_the_stream_failed_only_when_it_failed():
    from voxfleet.runtime.protocol import BotExit
    from voxfleet.runtime.streams import RelayStream

    crashed, ended = RelayStream(lambda m: None), RelayStream(lambda m: None)
    crashed.on_bot_gone(BotExit("crashed", None, 9, "killed by SIGKILL"))
    ended.on_bot_gone(BotExit("bot_ended", 0, None, ""))
    first, second = await crashed.receive(), await ended.receive()
    assert first.failed and first.code == 1011 and "crashed" in first.reason and "SIGKILL" not in first.reason
    assert not second.failed and second.code == 1000


async def test_the_bots_inbox_drops_the_oldest_caller_frames_when_the_bot_does_not_read():
    from voxfleet.runtime.messages import WsIn, WsOpen
    from voxfleet.runtime.ws_relay import MAX_INBOX, RelayedWebSocket

    ws = RelayedWebSocket(lambda m: None, WsOpen(id=1, transport="websocket", path="/v1/ws", headers=[]))
    for i in range(MAX_INBOX + 10):
        ws.deliver(WsIn(text=str(i)))
    assert ws._inbox.qsize() == MAX_INBOX and ws.stats()["dropped"] == 11  # and the connect message
    first = [await ws._receive() for _ in range(2)]
    assert first[0]["text"] == "10" and first[1]["text"] == "11"
