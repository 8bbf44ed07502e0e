"""Outbound calls and transfers through Telnyx (TeXML), against a real `voxfleet serve` with the
tone bot.

Telnyx's REST API cannot be reached from here: ``voxfleet.testing.telnyx_standin.TelnyxStandIn``
STANDS IN for it, doing what Telnyx documents it does with a TeXML call it places: the initiate
answer, Ed25519-signed status callbacks, the signed answer webhook, the media stream
(``TelnyxCaller``), TeXML's update call (end, a transfer's ``<Dial>``), Call Control's hangup.
"""

from __future__ import annotations

import asyncio
from functools import partial

import httpx
import numpy as np
import pytest

from tests.conftest import TELNYX_ACCOUNT, Server
from tests.e2e import outbound_helpers
from tests.e2e.outbound_helpers import TONE_BOT, call_of, free_port, tone_server, transfer, warm_and_free
from voxfleet.bench.telnyx_caller import TelnyxCaller, call_control_id
from voxfleet.testing.telnyx_standin import Callee, TelnyxStandIn

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]  # the stand-in serves on the fixtures' loop

FROM = "+13125550006"
APP_ID = "1293384261075731499"
CALLS = f"/v2/texml/Accounts/{TELNYX_ACCOUNT.account_sid}/Calls"
dial = partial(outbound_helpers.dial, from_=FROM, carrier="telnyx")
carrier_port = pytest.fixture(scope="module")(free_port)


@pytest.fixture(scope="module")
def server(carrier_port):
    server = tone_server({
        **TELNYX_ACCOUNT.env, "TELNYX_ACCOUNT_SID": TELNYX_ACCOUNT.account_sid, "TELNYX_TEXML_APP_ID": APP_ID,
        "VOXFLEET_TELEPHONY__TELNYX_API_BASE": f"http://127.0.0.1:{carrier_port}/v2"})
    yield server
    server.stop()


@pytest.fixture
async def telnyx(carrier_port):
    standin = await TelnyxStandIn(TELNYX_ACCOUNT, invalid=frozenset({"+13125550001"})).start(carrier_port)
    yield standin
    await standin.stop()


async def test_an_answered_call_reaches_its_reserved_bot_and_its_timeline_is_recorded(server, telnyx):
    await warm_and_free(server)
    telnyx.callees["+13125550100"] = Callee("answer", ring_s=0.3, listen_s=3)
    reply = await dial(server, "+13125550100", body={"campaign": "renewals"}, machineDetection="Enable")
    assert reply.status_code == 201, reply.text
    call = reply.json()
    assert call["direction"] == "outbound" and call["carrier"] == "telnyx" and call["to"] == "+13125550100"
    assert call["carrierCallId"].startswith("v3:") and "bot_assigned" in call["timingsMs"]  # reserved first
    placed = await telnyx.wait(call["carrierCallId"])
    method, path, body = telnyx.requests[0]
    assert (method, path) == ("POST", CALLS) and body["ApplicationSid"] == APP_ID
    assert body["Url"].endswith(f"/v1/telephony/telnyx/tone/outbound?session={call['callId']}")
    assert body["StatusCallback"].endswith(f"/v1/telephony/telnyx/tone/status?session={call['callId']}")
    assert body["Timeout"] == 5 and body["MachineDetection"] == "Enable" and body["From"] == FROM
    assert set(body["StatusCallbackEvent"].split()) == {"initiated", "ringing", "answered", "completed"}
    assert 'bidirectionalMode="rtp"' in placed.twiml[0] and "answeredBy" in placed.twiml[0]
    assert placed.result is not None and placed.result.ttfw_ms is not None  # the callee heard the bot
    assert not placed.callback_errors, placed.callback_errors
    ended = await call_of(server, call["callId"])
    assert ended["status"] == "completed" and ended["endReason"] == "hangup"
    statuses = [e["status"] for e in ended["timeline"]]
    assert statuses[0] == "queued" and statuses.index("ringing") < statuses.index("answered")
    assert statuses[-1] == "completed" and any(e.get("answeredBy") == "human" for e in ended["timeline"])
    with server.client() as http:
        record = http.get(f"/v1/sessions/{call['callId']}").json()
    assert record["transport"] == "telnyx" and record["call"]["carrierCallId"] == call["carrierCallId"]
    await warm_and_free(server)


@pytest.mark.parametrize(("behaviour", "reason"), [("busy", "callee_busy"), ("failed", "dial_failed"),
                                                    ("no-answer", "no_answer")])
async def test_a_call_never_answered_releases_its_reservation_with_the_reason(server, telnyx, behaviour, reason):
    await warm_and_free(server)
    telnyx.callees["+13125550200"] = Callee(behaviour, ring_s=0.2)
    reply = await dial(server, "+13125550200", ringTimeoutS=5)
    assert reply.status_code == 201, reply.text
    ended = await call_of(server, reply.json()["callId"])
    assert ended["endReason"] == reason and ended["status"] == behaviour and ended["answeredAt"] is None
    snapshot = await warm_and_free(server)
    assert snapshot["invariant_ok"]


async def test_a_number_telnyx_refuses_is_named_and_nothing_stays_reserved(server, telnyx):
    await warm_and_free(server)
    reply = await dial(server, "+13125550001")
    assert reply.status_code == 400 and reply.json()["field"] == "to", reply.text
    assert "10002" in reply.json()["error"] and "Invalid phone number" in reply.json()["error"]
    await warm_and_free(server)
    too_long = await dial(server, "+13125550100", ringTimeoutS=300)  # TeXML rings at most 120 s
    assert too_long.status_code == 400 and too_long.json()["field"] == "ringTimeoutS", too_long.text
    await warm_and_free(server)
    assert [b["To"] for _m, p, b in telnyx.requests if p == CALLS] == ["+13125550001"]


async def test_with_no_capacity_the_call_is_refused_before_anything_is_dialled(server, telnyx):
    await warm_and_free(server)
    telnyx.callees["+13125550300"] = Callee("answer", ring_s=0.1, listen_s=4)
    first = await dial(server, "+13125550300")
    assert first.status_code == 201
    await call_of(server, first.json()["callId"], state="active")
    dialled = len(telnyx.calls)
    second = await dial(server, "+13125550301")
    assert second.status_code == 429 and second.headers.get("retry-after"), second.text
    assert len(telnyx.calls) == dialled  # Telnyx was never asked
    await telnyx.wait(first.json()["carrierCallId"])


async def test_a_ringing_call_is_canceled(server, telnyx):
    await warm_and_free(server)
    telnyx.callees["+13125550400"] = Callee("silent")
    reply = await dial(server, "+13125550400", ringTimeoutS=5)
    call = reply.json()
    async with httpx.AsyncClient(base_url=server.url) as http:
        canceled = await http.delete(f"/v1/calls/{call['callId']}")
    assert canceled.status_code == 200
    ended = await call_of(server, call["callId"])
    assert ended["endReason"] == "canceled"
    assert ("POST", f"{CALLS}/{call['carrierCallId']}", {"Status": "completed"}) in telnyx.requests
    assert telnyx.calls[call["carrierCallId"]].events[-1] == "canceled"
    await warm_and_free(server)


async def test_a_live_call_is_transferred_and_its_session_ends_transferred(server, telnyx):
    await warm_and_free(server)
    telnyx.callees["+13125550500"] = Callee("answer", ring_s=0.1, listen_s=30)
    reply = await dial(server, "+13125550500")
    call_id = reply.json()["callId"]
    await call_of(server, call_id, state="active")
    moved = await transfer(server, call_id, "+13125550999", FROM)
    assert moved.status_code == 200, moved.text
    assert (await transfer(server, call_id, "+13125550999")).status_code == 409
    placed = await telnyx.wait(reply.json()["carrierCallId"])
    _m, path, form = next(r for r in telnyx.requests if "Texml" in r[2])
    assert path == f"{CALLS}/{placed.sid}" and f'<Dial callerId="{FROM}"><Number>+13125550999</Number>' in form["Texml"]
    assert placed.transferred_to == "+13125550999" and placed.result is not None and placed.result.stopped_by_caller
    ended = await call_of(server, call_id)
    assert ended["endReason"] == "transferred" and ended["endDetail"] == "to +13125550999"
    await asyncio.sleep(0.5)
    assert not any(p.endswith("/actions/hangup") for _m, p, _b in telnyx.requests)  # the call goes on
    await warm_and_free(server)


async def test_an_inbound_telnyx_call_is_transferred_by_its_call_sid(server, telnyx):
    await warm_and_free(server)
    caller = TelnyxCaller(server.url)
    call_sid = call_control_id()
    call = telnyx.inbound(call_sid, "+13122010094", "+13122123456")
    _sid, answers = await caller.dial("tone", call_sid=call_sid)
    talking = asyncio.create_task(caller.stream(answers[-1], call_sid, [np.zeros(8000 * 20, np.int16)],
                                                listen_s=20, ended=call.left_stream))
    session_id = answers[-1].parameters["session"]
    await call_of(server, session_id, state="active")
    moved = await transfer(server, session_id, "+13125550999")
    assert moved.status_code == 200, moved.text
    result = await asyncio.wait_for(talking, 15)
    assert call.transferred_to == "+13125550999" and result.stopped_by_caller
    assert any(p == f"{CALLS}/{call_sid}" and "Texml" in f for _m, p, f in telnyx.requests)
    assert (await call_of(server, session_id))["endReason"] == "transferred"
    await warm_and_free(server)


async def test_calls_need_the_texml_application_and_account(telnyx):
    server = Server("--dev", "--bot", TONE_BOT, env={
        **TELNYX_ACCOUNT.env, "VOXFLEET_TELEPHONY__TELNYX_API_BASE": f"{telnyx.url}/v2"})
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            reply = await http.post("/v1/agents/tone/calls",
                                    json={"to": "+13125550100", "from": FROM, "carrier": "telnyx"})
        assert reply.status_code == 409 and reply.json()["code"] == "CARRIER_NOT_CONFIGURED", reply.text
        assert "TELNYX_TEXML_APP_ID" in reply.json()["error"] and "TELNYX_ACCOUNT_SID" in reply.json()["error"]
        assert not telnyx.requests
    finally:
        server.stop()


async def test_a_call_whose_dial_answer_has_no_call_id_learns_it_from_its_first_signed_webhook(server, telnyx):
    await warm_and_free(server)
    telnyx.with_call_sid = False  # the account-scoped reference documents only from / to / status
    telnyx.callees["+13125550600"] = Callee("busy", ring_s=0.2)
    reply = await dial(server, "+13125550600")
    assert reply.status_code == 201 and reply.json()["carrierCallId"] is None, reply.text
    ended = await call_of(server, reply.json()["callId"])
    assert ended["endReason"] == "callee_busy" and ended["carrierCallId"] == next(iter(telnyx.calls))
    await warm_and_free(server)
