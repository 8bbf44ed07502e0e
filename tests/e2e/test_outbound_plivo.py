"""Outbound calls and transfers through Plivo, against a real `voxfleet serve` with the tone bot.

Plivo's REST API cannot be reached from here: ``voxfleet.testing.plivo_standin.PlivoStandIn``
STANDS IN for it, doing what Plivo documents it does with a call it places: the call request,
signed ring and hang-up callbacks, the signed answer URL, the audio stream (``PlivoCaller``),
cancel / hang-up, and a transfer's ``aleg_url``. The server has a ``public_url`` (its own loopback
address): Plivo fetches a transfer's XML from it.
"""

from __future__ import annotations

import asyncio
from functools import partial

import httpx
import pytest

from tests.conftest import PLIVO_ENV, Server
from tests.e2e import outbound_helpers
from tests.e2e.outbound_helpers import TONE_BOT, call_of, free_port, tone_server, transfer, until, warm_and_free
from voxfleet.bench.plivo_caller import PlivoCaller
from voxfleet.control.plivo_rest import TRANSFER_PATH
from voxfleet.testing.plivo_standin import Callee, PlivoStandIn

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]  # the stand-in serves on the fixtures' loop

AUTH_ID, AUTH_TOKEN = PLIVO_ENV["PLIVO_AUTH_ID"], PLIVO_ENV["PLIVO_AUTH_TOKEN"]
FROM = "+14155550006"
ACCOUNT = f"/v1/Account/{AUTH_ID}"
dial = partial(outbound_helpers.dial, from_=FROM, carrier="plivo")
carrier_port = pytest.fixture(scope="module")(free_port)


@pytest.fixture(scope="module")
def server(carrier_port):
    server = tone_server({**PLIVO_ENV, "VOXFLEET_TELEPHONY__PLIVO_API_BASE": f"http://127.0.0.1:{carrier_port}"},
                         public=True)
    yield server
    server.stop()


@pytest.fixture
async def plivo(carrier_port):
    standin = await PlivoStandIn(AUTH_ID, AUTH_TOKEN, invalid=frozenset({"15005550001"})).start(carrier_port)
    yield standin
    await standin.stop()


async def test_an_answered_call_reaches_its_reserved_bot_and_its_timeline_is_recorded(server, plivo):
    await warm_and_free(server)
    plivo.callees["15005550100"] = Callee("answer", ring_s=0.3, listen_s=3)
    reply = await dial(server, "+15005550100", body={"campaign": "renewals"}, machineDetection="Enable")
    assert reply.status_code == 201, reply.text
    call = reply.json()
    assert call["carrier"] == "plivo" and call["direction"] == "outbound" and call["to"] == "+15005550100"
    assert call["carrierCallId"] in plivo.calls and call["state"] in ("starting", "active")
    assert "bot_assigned" in call["timingsMs"]  # the bot was reserved before Plivo was asked to dial
    placed = await plivo.wait(call["carrierCallId"])
    body = placed.body
    hooks = f"{server.url}/v1/telephony/plivo/tone"
    assert body["answer_url"] == f"{hooks}/outbound?session={call['callId']}"
    assert body["ring_url"] == body["hangup_url"] == f"{hooks}/status?session={call['callId']}"
    assert body["from"] == "14155550006" and body["to"] == "15005550100"  # Plivo's format: no "+"
    assert body["ring_timeout"] == 5 and body["machine_detection"] == "true"
    assert placed.result is not None and placed.result.ttfw_ms is not None  # the callee heard the bot
    assert placed.events == ["ringing", "in-progress", "completed"]
    assert not placed.callback_errors, placed.callback_errors
    ended = await until(server, call["callId"], lambda c: c["state"] == "ended" and c["status"] == "completed")
    assert ended["endReason"] == "hangup"
    assert [e["status"] for e in ended["timeline"]] == ["queued", "ringing", "answered", "completed"]
    assert any(e.get("answeredBy") == "human" for e in ended["timeline"])
    assert ended["timeline"][-1]["detail"].startswith("HangupCause NORMAL_CLEARING")
    with server.client() as http:
        record = http.get(f"/v1/sessions/{call['callId']}").json()
    # from its first callback on, the call is known by its CallUUID (what hang-up and transfer need)
    assert record["call"]["carrierCallId"] == placed.call_uuid and record["transport"] == "plivo"
    assert record["call"]["requestUuid"] == placed.request_uuid
    await warm_and_free(server)


@pytest.mark.parametrize(("behaviour", "reason", "status"), [
    ("busy", "callee_busy", "busy"), ("failed", "dial_failed", "failed"), ("no-answer", "no_answer", "no-answer")])
async def test_a_call_never_answered_releases_its_reservation_with_the_reason(server, plivo, behaviour, reason,
                                                                               status):
    await warm_and_free(server)
    plivo.callees["15005550200"] = Callee(behaviour, ring_s=0.2)
    reply = await dial(server, "+15005550200", ringTimeoutS=5)
    assert reply.status_code == 201, reply.text
    ended = await call_of(server, reply.json()["callId"])
    assert ended["endReason"] == reason and ended["status"] == status and ended["answeredAt"] is None
    assert "HangupCause" in ended["endDetail"]  # Plivo's cause, e.g. USER_BUSY, in the session's end
    snapshot = await warm_and_free(server)
    assert snapshot["invariant_ok"]


async def test_a_number_plivo_refuses_is_named_and_nothing_stays_reserved(server, plivo):
    await warm_and_free(server)
    reply = await dial(server, "+15005550001")
    assert reply.status_code == 400 and reply.json()["field"] == "to", reply.text
    assert "not a valid phone number" in reply.json()["error"] and "HTTP 400" in reply.json()["error"]
    await warm_and_free(server)
    async with httpx.AsyncClient(base_url=server.url) as http:
        bad = await http.post("/v1/agents/tone/calls", json={"to": "+15005550100", "from": FROM, "carrier": "plivoo"})
    assert bad.status_code == 400 and bad.json()["field"] == "carrier", bad.text
    assert [path for _m, path, _b, _s in plivo.requests] == [f"{ACCOUNT}/Call/"]


async def test_with_no_capacity_the_call_is_refused_before_anything_is_dialled(server, plivo):
    await warm_and_free(server)
    plivo.callees["15005550300"] = Callee("answer", ring_s=0.1, listen_s=4)
    first = await dial(server, "+15005550300")
    assert first.status_code == 201
    await call_of(server, first.json()["callId"], state="active")
    second = await dial(server, "+15005550301")
    assert second.status_code == 429 and second.headers.get("retry-after"), second.text
    assert "nothing was started" in second.json()["error"]
    assert len(plivo.calls) == 1  # Plivo was never asked
    await plivo.wait(first.json()["carrierCallId"])


async def test_a_ringing_call_is_canceled_and_only_its_own_signed_callbacks_count(server, plivo):
    # no callback arrives (lost): voxfleet knows the call by its request_uuid and cancels that request
    await warm_and_free(server)
    plivo.callees["15005550400"] = Callee("silent")
    reply = await dial(server, "+15005550400", ringTimeoutS=30)
    request_uuid = reply.json()["carrierCallId"]
    # its callbacks are Plivo's (signed) and this call's (its RequestUUID)
    status_url = plivo.calls[request_uuid].body["hangup_url"]
    params = {"CallUUID": "c0ffee", "RequestUUID": "another-request", "CallStatus": "busy", "Direction": "outbound"}
    async with httpx.AsyncClient(timeout=10) as http:
        unsigned = await http.post(status_url, data=params)
        other = await http.post(status_url, data=params, headers=plivo.caller.signed_headers(status_url, params))
    assert unsigned.status_code == 403 and other.status_code == 400 and other.json()["field"] == "RequestUUID"
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.delete(f"/v1/calls/{reply.json()['callId']}")).status_code == 200
    ended = await call_of(server, reply.json()["callId"])
    assert ended["endReason"] == "canceled"
    assert ("DELETE", f"{ACCOUNT}/Request/{request_uuid}/", {}, 204) in plivo.requests
    await warm_and_free(server)
    # ringing (its ring callback came): known by its CallUUID, the ringing call is hung up
    plivo.callees["15005550401"] = Callee("no-answer")
    reply = await dial(server, "+15005550401", ringTimeoutS=30)
    call_id = reply.json()["callId"]
    await until(server, call_id, lambda c: c["status"] == "ringing", 10)
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.delete(f"/v1/calls/{call_id}")).status_code == 200
    placed = await plivo.wait(reply.json()["carrierCallId"])
    assert ("DELETE", f"{ACCOUNT}/Call/{placed.call_uuid}/", {}, 204) in plivo.requests
    ended = await call_of(server, call_id)
    assert ended["endReason"] == "canceled" and placed.events == ["ringing", "cancel"]
    await warm_and_free(server)


async def test_a_live_call_is_transferred_and_its_session_ends_transferred(server, plivo):
    await warm_and_free(server)
    plivo.callees["15005550500"] = Callee("answer", ring_s=0.1, listen_s=30)
    reply = await dial(server, "+15005550500")
    call_id = reply.json()["callId"]
    await call_of(server, call_id, state="active")
    wrong = await transfer(server, call_id, "12345")
    assert wrong.status_code == 400 and wrong.json()["field"] == "to"
    moved = await transfer(server, call_id, "+15005550999", FROM)
    assert moved.status_code == 200, moved.text
    assert (await transfer(server, call_id, "+15005550999")).status_code == 409
    placed = await plivo.wait(reply.json()["carrierCallId"])
    transfers = [(b, s) for m, p, b, s in plivo.requests if m == "POST" and p == f"{ACCOUNT}/Call/{placed.call_uuid}/"]
    assert len(transfers) == 1 and transfers[0][1] == 202
    assert transfers[0][0]["legs"] == "aleg" and transfers[0][0]["aleg_url"].startswith(f"{server.url}{TRANSFER_PATH}?")
    assert placed.transferred_to == "15005550999" and placed.transfer_caller_id == "14155550006"
    assert placed.result is not None and placed.result.left_stream  # Plivo left the stream for the <Dial>
    ended = await call_of(server, call_id)
    assert ended["endReason"] == "transferred" and ended["endDetail"] == "to +15005550999"
    assert ended["transfer"]["to"] == "+15005550999"
    assert not any(m == "DELETE" for m, _p, _b, _s in plivo.requests)  # the transferred call is not hung up
    assert not placed.callback_errors, placed.callback_errors
    await warm_and_free(server)


async def test_an_inbound_plivo_call_is_transferred_by_its_call_uuid(server, plivo):
    await warm_and_free(server)
    caller = PlivoCaller(server.url, AUTH_TOKEN, auth_id=AUTH_ID)
    call_uuid, answers = await caller.dial("tone")
    inbound = plivo.inbound_call(call_uuid, "14155550006", "14155550001")
    streaming = asyncio.create_task(caller.stream(answers[-1], call_uuid, [], listen_s=30, ended=inbound.left_stream))
    session_id = answers[-1].session
    record = await call_of(server, session_id, state="active")
    assert record["direction"] == "inbound" and record["carrierCallId"] == call_uuid
    moved = await transfer(server, session_id, "+15005550998")
    assert moved.status_code == 200, moved.text
    result = await asyncio.wait_for(streaming, 15)
    assert result.left_stream and inbound.transferred_to == "15005550998" and inbound.transfer_caller_id is None
    ended = await call_of(server, session_id)
    assert ended["endReason"] == "transferred"
    await warm_and_free(server)


async def test_calls_need_plivo_credentials(plivo):
    server = Server("--dev", "--bot", TONE_BOT, env={"VOXFLEET_TELEPHONY__PLIVO_API_BASE": plivo.url})
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            reply = await http.post("/v1/agents/tone/calls", json={"to": "+15005550100", "from": FROM,
                                                                    "carrier": "plivo"})
            assert reply.status_code == 409 and reply.json()["code"] == "CARRIER_NOT_CONFIGURED"
            assert "PLIVO_AUTH_ID" in reply.json()["error"]
        assert not plivo.requests
    finally:
        server.stop()
