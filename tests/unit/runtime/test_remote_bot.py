"""The control plane's half of a bot (runtime.remote_bot), as the local backend drives it: a real
LocalBot over a real socket pair, the test playing the bot's end of the control link."""

from __future__ import annotations

import asyncio
import socket

import pytest

from voxfleet.exceptions import BotError, MediaPortsExhausted, SignalingTimeout
from voxfleet.runtime import messages as m
from voxfleet.runtime.local.backend import LocalBot


async def linked_bot(session_id: str | None = None) -> tuple[LocalBot, asyncio.StreamReader]:
    ours, theirs = socket.socketpair()
    _reader, writer = await asyncio.open_connection(sock=ours)
    bot_reader, bot_writer = await asyncio.open_connection(sock=theirs)
    bot = LocalBot("b-1", "assistant", session_id, lambda sid: [{"urls": [f"turn:t?{sid}"]}])
    bot.attach(writer, pid=4242)
    bot_reader.writer = bot_writer  # type: ignore[attr-defined] - kept open while the test runs
    return bot, bot_reader


async def answer_next(bot: LocalBot, reader: asyncio.StreamReader, reply) -> m.Message:
    request = m.decode(await reader.readline())
    bot.on_message(m.decode(m.encode(reply(request))))
    return request


def test_assign_carries_the_session_start_whole():
    async def main():
        bot, reader = await linked_bot()
        assigned = asyncio.ensure_future(bot.assign("s-1", {"x": 1}, timeout=2))
        request = await answer_next(bot, reader, lambda r: m.Assigned(id=r.id, session_id=r.start.session_id))
        await assigned
        assert request.start == m.SessionStart(session_id="s-1", body={"x": 1}, ice_servers=[{"urls": ["turn:t?s-1"]}])
        assert bot.session_id == "s-1"

    asyncio.run(main())


def test_offer_answer_and_errors():
    async def main():
        bot, reader = await linked_bot("s-1")
        offer = {"sdp": "v=0", "type": "offer", "pc_id": None, "restart_pc": None, "request_data": None}
        pending = asyncio.ensure_future(bot.offer(offer, timeout=2))
        await answer_next(bot, reader, lambda r: m.Answer(id=r.id, sdp="v=0 answer", type="answer", pc_id="pc-1"))
        assert await pending == {"sdp": "v=0 answer", "type": "answer", "pc_id": "pc-1"}

        pending = asyncio.ensure_future(bot.offer(offer, timeout=2))
        await answer_next(bot, reader, lambda r: m.Error(id=r.id, message="ValueError: bad sdp"))
        with pytest.raises(BotError, match="bot rejected the offer: ValueError: bad sdp"):
            await pending

        pending = asyncio.ensure_future(bot.offer(offer, timeout=2))
        await answer_next(bot, reader, lambda r: m.Error(id=r.id, message="full", code=MediaPortsExhausted.code,
                                                         media_ports=[40000, 40001, "10.0.0.2"]))
        with pytest.raises(MediaPortsExhausted) as caught:
            await pending
        assert (caught.value.first, caught.value.last, caught.value.host) == (40000, 40001, "10.0.0.2")

        with pytest.raises(SignalingTimeout):
            await bot.add_ice_candidates("pc-1", [], timeout=0.05)

    asyncio.run(main())


def test_reports_fold_into_info_and_the_end_is_reported():
    async def main():
        bot, _reader = await linked_bot("s-1")
        for report in (m.Event(name="first_audio", at=1.0), m.Transcript(role="user", text="hi", at=2.0),
                       m.Ttfb(processor="stt", seconds=0.1), m.Ttfb(processor="stt", seconds=0.2),
                       m.Turn(v2v_ms=900.0, stages_ms={"stt": 100.0}, speech_end=3.0, at=4.0),
                       m.ModelLoad(model={"factory": "whisper"}, in_session=True),
                       m.WarmReady(warmup_ms=5.0, preloaded=1), m.Ended(reason="bot_ended", detail="")):
            bot.on_message(m.decode(m.encode(report)))
        info = bot.info
        assert "first_audio" in info.events and "warm_ready" in info.events and bot.warm_ready.done()
        assert info.transcript == [{"role": "user", "text": "hi", "at": 2.0}]
        assert info.ttfb_s == {"stt": [0.1, 0.2]}
        assert info.turns[0].stages_ms["audio_out"] == 900.0
        assert info.model_loads == [{"factory": "whisper", "in_session": True}]
        assert (info.warmup_ms, info.preloaded) == (5.0, 1)
        bot.on_exit(0, None)
        exit_ = await bot.wait_exit()
        assert (exit_.reason, exit_.exit_code) == ("bot_ended", 0)

    asyncio.run(main())
