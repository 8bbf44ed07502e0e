"""Outbound calls and transfers through Twilio, against a real `voxfleet serve` with the tone bot.

Twilio's REST API cannot be reached from here: ``voxfleet.testing.twilio_standin.TwilioStandIn``
STANDS IN for it, doing what Twilio documents it does with a call it places: the REST resource,
signed status callbacks, the signed answer webhook, the media stream (``TwilioCaller``), REST
updates (cancel, hang up, a transfer's ``<Dial>``).
"""

from __future__ import annotations

import asyncio
from functools import partial

import httpx
import pytest

from tests.conftest import TWILIO_ACCOUNT_SID as ACCOUNT
from tests.conftest import TWILIO_AUTH_TOKEN as AUTH_TOKEN
from tests.conftest import TWILIO_ENV, Server
from tests.e2e import outbound_helpers
from tests.e2e.outbound_helpers import TONE_BOT, call_of, free_port, tone_server, transfer, warm_and_free
from voxfleet.bench.twilio_caller import TwilioCaller
from voxfleet.testing.twilio_standin import Callee, TwilioStandIn

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]  # the stand-in serves on the fixtures' loop

FROM = "+15005550006"
dial = partial(outbound_helpers.dial, from_=FROM)
carrier_port = pytest.fixture(scope="module")(free_port)


@pytest.fixture(scope="module")
def server(carrier_port):
    server = tone_server({**TWILIO_ENV, "VOXFLEET_TELEPHONY__TWILIO_API_BASE": f"http://127.0.0.1:{carrier_port}"})
    yield server
    server.stop()


@pytest.fixture
async def twilio(carrier_port):
    standin = await TwilioStandIn(ACCOUNT, AUTH_TOKEN, invalid=frozenset({"+15005550001"})).start(carrier_port)
    yield standin
    await standin.stop()


async def test_an_answered_call_reaches_its_reserved_bot_and_its_timeline_is_recorded(server, twilio):
    await warm_and_free(server)
    twilio.callees["+15005550100"] = Callee("answer", ring_s=0.3, listen_s=3)
    reply = await dial(server, "+15005550100", body={"campaign": "renewals"}, machineDetection="Enable")
    assert reply.status_code == 201, reply.text
    call = reply.json()
    assert call["direction"] == "outbound" and call["to"] == "+15005550100" and call["from"] == FROM
    assert call["carrierCallId"].startswith("CA") and call["state"] in ("starting", "active")
    # the bot was reserved (the warm one, taken) before Twilio was asked to dial
    assert "bot_assigned" in call["timingsMs"]
    placed = await twilio.wait(call["carrierCallId"])
    form = placed.form
    assert form["Url"].endswith(f"/v1/telephony/twilio/tone/outbound?session={call['callId']}")
    assert form["Timeout"] == "5" and form["MachineDetection"] == "Enable"
    assert set(form["StatusCallbackEvent"].split()) == {"initiated", "ringing", "answered", "completed"}
    assert placed.result is not None and placed.result.ttfw_ms is not None  # the callee heard the bot
    assert not placed.callback_errors, placed.callback_errors
    ended = await call_of(server, call["callId"])
    assert ended["status"] == "completed" and ended["endReason"] == "hangup"
    statuses = [e["status"] for e in ended["timeline"]]
    assert statuses[0] == "queued" and statuses.index("ringing") < statuses.index("answered")
    assert statuses[-1] == "completed"
    assert any(e.get("answeredBy") == "human" for e in ended["timeline"])
    with server.client() as http:
        record = http.get(f"/v1/sessions/{call['callId']}").json()
    assert record["call"]["carrierCallId"] == call["carrierCallId"] and record["transport"] == "twilio"
    await warm_and_free(server)


@pytest.mark.parametrize(("behaviour", "reason"), [("busy", "callee_busy"), ("failed", "dial_failed"),
                                                    ("no-answer", "no_answer")])
async def test_a_call_never_answered_releases_its_reservation_with_the_reason(server, twilio, behaviour, reason):
    await warm_and_free(server)
    twilio.callees["+15005550200"] = Callee(behaviour, ring_s=0.2)
    reply = await dial(server, "+15005550200", ringTimeoutS=5)
    assert reply.status_code == 201, reply.text
    ended = await call_of(server, reply.json()["callId"])
    assert ended["endReason"] == reason and ended["status"] == behaviour
    assert ended["answeredAt"] is None
    snapshot = await warm_and_free(server)
    assert snapshot["invariant_ok"]


async def test_a_number_twilio_refuses_is_named_and_nothing_stays_reserved(server, twilio):
    await warm_and_free(server)
    reply = await dial(server, "+15005550001")
    assert reply.status_code == 400 and reply.json()["field"] == "to", reply.text
    assert "21211" in reply.json()["error"] and "not a valid phone number" in reply.json()["error"]
    await warm_and_free(server)
    for body, field in (({"to": "5551234", "from": FROM}, "to"), ({"to": "+15005550100"}, "from"),
                        ({"to": "+15005550100", "from": FROM, "ringTimeoutS": 1}, "ringTimeoutS"),
                        ({"to": "+15005550100", "from": FROM, "dial": "now"}, "dial")):
        async with httpx.AsyncClient(base_url=server.url) as http:
            bad = await http.post("/v1/agents/tone/calls", json=body)
        assert bad.status_code == 400 and bad.json()["field"] == field, bad.text
    assert not any(path.endswith("/Calls.json") and form["To"] != "+15005550001"
                   for _m, path, form in twilio.requests)


async def test_with_no_capacity_the_call_is_refused_before_anything_is_dialled(server, twilio):
    await warm_and_free(server)
    twilio.callees["+15005550300"] = Callee("answer", ring_s=0.1, listen_s=6)
    first = await dial(server, "+15005550300")
    assert first.status_code == 201
    await call_of(server, first.json()["callId"], state="active")
    dialled = len(twilio.calls)
    second = await dial(server, "+15005550301")
    assert second.status_code == 429 and second.headers.get("retry-after"), second.text
    assert "nothing was started" in second.json()["error"]
    assert len(twilio.calls) == dialled  # Twilio was never asked
    await twilio.wait(first.json()["carrierCallId"])


async def test_a_ringing_call_is_canceled_and_a_lost_status_report_cannot_hold_a_bot(server, twilio):
    await warm_and_free(server)
    twilio.callees["+15005550400"] = Callee("silent")
    reply = await dial(server, "+15005550400", ringTimeoutS=5)
    async with httpx.AsyncClient(base_url=server.url) as http:
        canceled = await http.delete(f"/v1/calls/{reply.json()['callId']}")
    assert canceled.status_code == 200
    ended = await call_of(server, reply.json()["callId"])
    assert ended["endReason"] == "canceled"
    update = f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{reply.json()['carrierCallId']}.json"
    assert any(p == update and f.get("Status") == "canceled" for _m, p, f in twilio.requests)
    await warm_and_free(server)
    # no report at all (the carrier's callbacks lost): the ring deadline ends it and cancels the call
    reply = await dial(server, "+15005550400", ringTimeoutS=5)
    ended = await call_of(server, reply.json()["callId"], timeout=30)  # ring 5 s + the report's grace 10 s
    assert ended["endReason"] == "no_answer" and "not answered within" in ended["endDetail"]


async def test_a_live_call_is_transferred_and_its_session_ends_transferred(server, twilio):
    await warm_and_free(server)
    twilio.callees["+15005550500"] = Callee("answer", ring_s=0.1, listen_s=30)
    reply = await dial(server, "+15005550500")
    call_id = reply.json()["callId"]
    await call_of(server, call_id, state="active")
    wrong = await transfer(server, call_id, "12345")
    assert wrong.status_code == 400 and wrong.json()["field"] == "to"
    moved = await transfer(server, call_id, "+15005550999")
    assert moved.status_code == 200, moved.text
    assert (await transfer(server, call_id, "+15005550999")).status_code == 409
    placed = await twilio.wait(reply.json()["carrierCallId"])
    assert placed.transferred_to == "+15005550999" and "<Dial>" in placed.twiml[-1]
    assert placed.result is not None and placed.result.stopped_by_caller  # the stream left for the <Dial>
    ended = await call_of(server, call_id)
    assert ended["endReason"] == "transferred" and ended["endDetail"] == "to +15005550999"
    assert ended["transfer"]["to"] == "+15005550999"
    await warm_and_free(server)


async def test_an_inbound_call_is_transferred_too(server, twilio):
    await warm_and_free(server)
    caller = TwilioCaller(server.url, AUTH_TOKEN, account_sid=ACCOUNT)
    call_sid, answers = await caller.dial("tone")
    call = twilio.inbound(call_sid, "+15005550006", "+15005550001")
    streaming = asyncio.create_task(caller.stream(answers[-1], call_sid, [], listen_s=30, ended=call.left_stream))
    session_id = answers[-1].parameters["session"]
    record = await call_of(server, session_id, state="active")
    assert record["direction"] == "inbound" and record["carrierCallId"] == call_sid
    moved = await transfer(server, session_id, "+15005550998", FROM)
    assert moved.status_code == 200, moved.text
    result = await asyncio.wait_for(streaming, 15)
    assert result.stopped_by_caller and call.transferred_to == "+15005550998"
    assert 'callerId="+15005550006"' in call.twiml[-1]
    ended = await call_of(server, session_id)
    assert ended["endReason"] == "transferred"
    await warm_and_free(server)


async def test_calls_need_twilio_credentials_and_other_sessions_cannot_be_transferred(twilio, carrier_port):
    server = Server("--dev", "--bot", TONE_BOT, env={"VOXFLEET_TELEPHONY__TWILIO_API_BASE": twilio.url})
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            reply = await http.post("/v1/agents/tone/calls", json={"to": "+15005550100", "from": FROM})
            assert reply.status_code == 409 and reply.json()["code"] == "CARRIER_NOT_CONFIGURED"
            assert "TWILIO_ACCOUNT_SID" in reply.json()["error"]
            started = (await http.post("/start", json={})).json()["sessionId"]
            moved = await http.post(f"/v1/sessions/{started}/transfer", json={"to": "+15005550999"})
            assert moved.status_code == 409 and "only phone calls of twilio" in moved.json()["error"]
            assert (await http.get("/v1/calls/nope")).status_code == 404
        assert not twilio.requests
    finally:
        server.stop()
