"""A call that loses its bot is told, not left in silence: a phone caller hears the lost message
(Twilio asks ``<Connect action>`` once the stream closes) and the call ends; a Pipecat WebSocket
or WebRTC client gets a fatal RTVI error and a closed connection. Real servers, the tone bot
made to fail (tests/e2e/bots/faulty_tone.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TWILIO_ACCOUNT_SID as ACCOUNT
from tests.conftest import TWILIO_AUTH_TOKEN as AUTH_TOKEN
from tests.conftest import TWILIO_ENV, Server, wait_for
from tests.e2e.bots.faulty_tone import FAILING_CALLER
from voxfleet.bench.twilio_caller import TwilioCaller
from voxfleet.bench.webrtc_client import WebRTCCaller
from voxfleet.config import TelephonySettings
from voxfleet.transports.ice import advertise_addresses

pytestmark = pytest.mark.e2e

FAULTY_TONE_BOT = Path(__file__).parent / "bots" / "faulty_tone.py"
AGENT = "faulty-tone"
LOST = TelephonySettings().lost_message
STAY = [np.zeros(8000 * 20, np.int16)]  # a caller who stays on the line, silent, for 20 s


@pytest.fixture(scope="module")
def server():
    advertise_addresses(["127.0.0.1"])
    server = Server("--dev", "--bot", str(FAULTY_TONE_BOT), env=TWILIO_ENV)
    yield server
    server.stop()


async def record_of(server: Server, session_id: str, state: str = "ended", timeout: float = 10) -> dict:
    def poll() -> dict:
        with server.client() as http:
            return wait_for(lambda: (r := http.get(f"/v1/sessions/{session_id}").json())["state"] == state and r,
                            timeout)
    return await asyncio.to_thread(poll)


async def test_a_phone_caller_whose_bot_is_killed_hears_the_lost_message(server):
    caller = TwilioCaller(server.url, AUTH_TOKEN, account_sid=ACCOUNT)
    call_sid, answers = await caller.dial(AGENT)
    answer = answers[-1]
    assert answer.connect_action and "/ended?session=" in answer.connect_action
    call = asyncio.create_task(caller.stream(answer, call_sid, STAY, listen_s=30))
    record = await record_of(server, answer.parameters["session"], state="active")
    await asyncio.sleep(1.0)  # the call is up, the greeting heard
    killed_at = time.monotonic()
    os.kill(record["pid"], signal.SIGKILL)
    result = await asyncio.wait_for(call, 15)
    told_s = time.monotonic() - killed_at
    assert result.close_code == 1011 and "crashed" in result.close_reason, (result.close_code, result.close_reason)
    assert result.after is not None and result.after.says == [LOST] and result.after.hangup, result.after
    assert told_s < 5, told_s  # a bound on silence, not a benchmark (bench chaos measures it)
    ended = await record_of(server, answer.parameters["session"])
    assert ended["endReason"] == "crashed"


async def test_a_phone_caller_whose_bot_raises_mid_call_hears_the_lost_message(server):
    caller = TwilioCaller(server.url, AUTH_TOKEN, account_sid=ACCOUNT)
    call_sid, answers = await caller.dial(AGENT, from_=FAILING_CALLER)
    result = await asyncio.wait_for(caller.stream(answers[-1], call_sid, STAY, listen_s=30), 20)
    assert result.frames_in > 0  # the call was up before the bot failed
    assert result.close_code == 1011 and "bot_error" in result.close_reason
    assert result.after is not None and result.after.says == [LOST] and result.after.hangup
    ended = await record_of(server, answers[-1].parameters["session"])
    assert ended["endReason"] == "bot_error" and "1.0s into the call" in ended["endDetail"]


async def test_a_call_that_ends_normally_just_hangs_up(server):
    caller = TwilioCaller(server.url, AUTH_TOKEN, account_sid=ACCOUNT)
    call_sid, answers = await caller.dial(AGENT)
    session_id = answers[-1].parameters["session"]
    call = asyncio.create_task(caller.stream(answers[-1], call_sid, STAY, listen_s=30))
    await record_of(server, session_id, state="active")
    with server.client() as http:
        http.delete(f"/v1/sessions/{session_id}")
    result = await asyncio.wait_for(call, 15)
    assert result.close_code == 1000 and result.after is not None
    assert result.after.hangup and not result.after.says


async def test_a_websocket_client_whose_bot_fails_gets_an_rtvi_error_and_a_close(server):
    from voxfleet.bench.ws_client import call

    result = await asyncio.wait_for(call(server.url, [np.zeros(16000 * 20, np.int16)], agent=AGENT, listen_s=30,
                                         body={"fail_after_s": 1.0}), 30)
    assert result.ttfw_ms is not None  # the call was up
    errors = [m for m in result.rtvi if m.get("type") == "error"]
    assert errors and errors[0]["data"]["fatal"] is True and "bot_error" in errors[0]["data"]["error"], result.rtvi
    assert "asked to fail" not in errors[0]["data"]["error"]  # the exception's text stays in the record
    assert result.close_code == 1011 and result.closed_at is not None and result.closed_at < 10
    ended = await record_of(server, result.session_id)
    assert ended["endReason"] == "bot_error"


async def test_a_webrtc_client_whose_bot_fails_gets_an_rtvi_error(server):
    caller = WebRTCCaller(server.url, agent=AGENT, body={"fail_after_s": 1.0})
    try:
        result = await caller.connect()
        await caller.wait_first_audio(timeout=20)
        error = await caller.wait_rtvi(lambda m: m.get("type") == "error", timeout=10)
        assert error["data"]["fatal"] is True and "bot_error" in error["data"]["error"]
        await asyncio.to_thread(wait_for, lambda: caller.pc.connectionState in ("closed", "failed"), 10)
    finally:
        await caller.close()
    assert (await record_of(server, result.session_id))["endReason"] == "bot_error"


async def test_a_phone_caller_whose_bot_is_stopped_is_told_and_the_bot_killed(server):
    """SIGSTOP: nothing reaps a stopped bot; the backend sees it stopped, kills it, tells the caller."""
    caller = TwilioCaller(server.url, AUTH_TOKEN, account_sid=ACCOUNT)
    call_sid, answers = await caller.dial(AGENT)
    call = asyncio.create_task(caller.stream(answers[-1], call_sid, STAY, listen_s=30))
    record = await record_of(server, answers[-1].parameters["session"], state="active")
    await asyncio.sleep(0.5)
    stopped_at = time.monotonic()
    os.kill(record["pid"], signal.SIGSTOP)
    result = await asyncio.wait_for(call, 20)
    told_s = time.monotonic() - stopped_at
    assert result.close_code == 1011 and result.after is not None and result.after.says == [LOST]
    assert told_s < 8, told_s  # stopped_s (3 s) plus a sample period: bounded, not benchmarked
    ended = await record_of(server, answers[-1].parameters["session"])
    assert ended["endReason"] == "crashed" and "stopped (state T)" in ended["endDetail"], ended["endDetail"]
    with server.client() as http:
        capacity = wait_for(lambda: (c := http.get("/v1/capacity").json())["invariant_ok"]
                            and c["agents"][AGENT]["active"] == 0 and c, 10)
    assert capacity["reservations"] == capacity["agents"][AGENT]["warm"] + capacity["agents"][AGENT].get("warming", 0)
