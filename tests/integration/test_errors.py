"""The exception tree as HTTP (``control/errors.py``): every class through the real handlers, then
the errors real routes raise, end to end through the app."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from voxfleet import exceptions as exc
from tests.integration.conftest import small_service, wait_ended
from voxfleet.control.errors import install_error_handlers

# (an instance, status, Retry-After) per class of the tree; a new class must be added here
CASES = [
    (exc.VoxfleetError("something of ours"), 500, None),
    (exc.ConfigError("agents: none"), 500, None),
    (exc.ExtraNotInstalled("backend = 'ray'", "ray", "ray"), 500, None),
    (exc.InvalidRequest("limit", 0, "must be at least 1"), 400, None),
    (exc.RequestTooLarge(70_000, 65_536), 413, None),
    (exc.Unauthorized("Authorization: missing"), 401, None),
    (exc.Forbidden("not for public keys"), 403, None),
    (exc.TelephonySignatureInvalid("X-Twilio-Signature header missing"), 403, None),
    (exc.NotFound("nothing here"), 404, None),
    (exc.AgentNotFound("nope", ["tone"]), 404, None),
    (exc.SessionNotFound("s-1"), 404, None),
    (exc.SessionConflict("s-1", "ended", "accept an offer"), 409, None),
    (exc.NotReady("templates starting"), 503, "5"),
    (exc.AtCapacity("all agents are busy", retry_after_s=7), 429, "7"),
    (exc.ClientLimited("client 10.0.0.9 holds its share", retry_after_s=3, code="CLIENT_SHARE"), 429, "3"),
    (exc.PeerNotFound("s-1", "pc-9"), 404, None),
    (exc.CallNotFound("s-2"), 404, None),
    (exc.CarrierNotConfigured("calls need TWILIO_ACCOUNT_SID"), 409, None),
    (exc.CarrierError("Twilio refused to call +15550001: down (error 20500, HTTP 500)"), 502, None),
    (exc.RecordingNotFound("s-1", "off", "tone"), 404, None),
    (exc.Unplaceable("region: no node in region 'mars'", region="mars"), 422, None),
    (exc.BotError("the bot crashed"), 502, None),
    (exc.BotStartFailed("bot b did not report in 20s"), 502, None),
    (exc.SignalingTimeout("s-1", 15.0), 504, None),
    (exc.MediaPortsExhausted(40000, 40009, "127.0.0.1"), 503, "5"),
    (exc.TurnCheckFailed("turn:127.0.0.1:3478", "401 Unauthorized"), 500, None),
    # media WebSocket errors get close codes; raised in an HTTP route they are a server error
    (exc.StreamRejected("refused"), 500, None),
    (exc.StreamTokenInvalid("stream token missing"), 500, None),
    (exc.StreamCredentialsInvalid("Authorization header missing"), 500, None),
    (exc.StreamProtocolError("event", "dance", "unknown event"), 500, None),
]


def subclasses(cls: type) -> set[type]:
    return {cls} | {sub for child in cls.__subclasses__() for sub in subclasses(child)}


def test_every_class_of_the_tree_has_a_case():
    tree = {cls for cls in subclasses(exc.VoxfleetError) if cls.__module__ == exc.__name__}
    assert tree == {type(error) for error, _, _ in CASES}


def raising_app() -> FastAPI:
    """An app with voxfleet's handlers and one route that raises CASES[index] (or a bug)."""
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/raise/{index}")
    async def raise_case(index: int) -> None:
        if index == len(CASES):
            raise KeyError("a bug")
        raise CASES[index][0]

    return app


async def test_each_error_becomes_its_status_code_and_body():
    transport = httpx.ASGITransport(app=raising_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        for index, (error, status, retry_after) in enumerate(CASES):
            reply = await http.get(f"/raise/{index}")
            assert reply.status_code == status, type(error).__name__
            expected = {"error": str(error), "code": error.code}
            if isinstance(error, exc.InvalidRequest):
                expected["field"] = error.field
            assert reply.json() == expected
            assert reply.headers.get("Retry-After") == retry_after, type(error).__name__
        reply = await http.get(f"/raise/{len(CASES)}")
        assert reply.status_code == 500
        assert reply.json() == {"error": "internal error; see the server log", "code": "INTERNAL"}


def test_a_missing_recording_says_why_in_its_code_and_message():
    error = exc.RecordingNotFound("s-1", "off", "tone")
    assert error.code == "RECORDING_OFF" and str(error) == (
        "session s-1: no recording: agent 'tone' does not record its sessions (record = false)")
    assert exc.RecordingNotFound("s-1", "expired").code == "RECORDING_EXPIRED"
    with pytest.raises(ValueError, match="why: one of off, not_ready"):
        exc.RecordingNotFound("s-1", "lost")


# -- through the real routes -----------------------------------------------------------------
async def test_bad_bodies_and_headers_are_400_naming_the_field(live):
    async with live.client(live.private_key) as http:
        reply = await http.post("/start", json={"agent": "tone", "transport": "pigeon"})
        assert reply.status_code == 400 and reply.json()["code"] == "INVALID_REQUEST"
        assert reply.json()["field"] == "transport" and "'pigeon'" in reply.json()["error"]

        reply = await http.post("/start", content=b"{not json", headers={"Content-Type": "application/json"})
        assert reply.status_code == 400 and reply.json()["error"].startswith("body: not valid JSON")

        reply = await http.post("/start", json={"agent": "tone"}, headers={"X-Voxfleet-Region": "r" * 65})
        assert reply.status_code == 400
        assert reply.json()["field"] == "X-Voxfleet-Region" and "longer than 64 characters" in reply.json()["error"]

        reply = await http.post("/start", json={"agent": "tone", "region": "r" * 65})
        assert reply.status_code == 400 and reply.json()["field"] == "region"

        reply = await http.post("/sessions/s-1/api/offer", json={"sdp": "hello", "type": "offer"})
        assert reply.status_code == 400 and reply.json()["field"] == "sdp"
        assert "must start with 'v=0'" in reply.json()["error"]
        reply = await http.post("/sessions/s-1/api/offer", json={"sdp": "v=0", "type": "answer"})
        assert reply.status_code == 400 and reply.json()["field"] == "type"
        reply = await http.patch("/sessions/s-1/api/offer", json={"pc_id": "pc", "candidates": [
            {"candidate": "not a candidate", "sdp_mid": "0", "sdp_mline_index": 0}]})
        assert reply.status_code == 400 and reply.json()["code"] == "INVALID_REQUEST", reply.text


async def test_bodies_over_the_limit_are_413_declared_or_chunked(live):
    limit = live.settings.max_body_bytes
    too_big = b'{"body": "' + b"x" * limit + b'"}'
    async with live.client(live.private_key) as http:
        reply = await http.post("/start", content=too_big, headers={"Content-Type": "application/json"})
        assert reply.status_code == 413
        assert reply.json() == {"error": f"request body is {len(too_big)} bytes, over the limit of {limit} bytes",
                                "code": "REQUEST_TOO_LARGE"}

        async def chunks():
            for start in range(0, len(too_big), 8192):
                yield too_big[start:start + 8192]

        reply = await http.post("/start", content=chunks(), headers={"Content-Type": "application/json"})
        assert "content-length" not in reply.request.headers
        assert reply.status_code == 413 and reply.json()["code"] == "REQUEST_TOO_LARGE"

        reply = await http.post("/start", content=b"{}", headers={"Content-Length": "two"})
        assert reply.status_code == 400
        assert reply.json() == {"error": "Content-Length: not a number (got 'two')", "code": "INVALID_REQUEST"}


async def test_unknown_agents_sessions_regions_and_routes(live):
    async with live.client(live.private_key) as http:
        reply = await http.post("/v1/public/nope/start", json={})
        assert reply.status_code == 404
        assert reply.json() == {"error": "agent: no agent named 'nope' (configured: tone, private-tone)",
                                "code": "AGENT_NOT_FOUND"}

        reply = await http.post("/start", json={"agent": "tone", "region": "mars"})
        assert reply.status_code == 422 and reply.json()["code"] == "UNPLACEABLE"
        assert "no node in region 'mars'" in reply.json()["error"]

        reply = await http.get("/v1/sessions/s-1")
        assert reply.status_code == 404
        assert reply.json() == {"error": "sessionId: no session 's-1'", "code": "SESSION_NOT_FOUND"}

        reply = await http.get("/nowhere")
        assert reply.status_code == 404 and reply.json() == {"error": "Not Found", "code": "NOT_FOUND"}
        reply = await http.get("/start")
        assert reply.status_code == 405
        assert reply.json() == {"error": "Method Not Allowed", "code": "METHOD_NOT_ALLOWED"}


async def test_signaling_an_ended_session_is_a_conflict(live):
    async with live.client(live.private_key) as http:
        session_id = (await http.post("/start", json={"agent": "tone"})).json()["sessionId"]
        await http.delete(f"/v1/sessions/{session_id}")
        await live.wait_ended(session_id)
        reply = await http.patch(f"/sessions/{session_id}/api/offer", json={"pc_id": "pc", "candidates": []})
        assert reply.status_code == 409
        assert reply.json() == {"error": f"cannot add ICE candidates: session {session_id} is ended (hangup)",
                                "code": "SESSION_CONFLICT"}


async def test_at_capacity_with_a_full_queue_is_429_with_retry_after(live, tmp_path):
    async with small_service(live, tmp_path, queue_max=0) as (small, app):
        async with live.client(live.private_key, app=app) as http:
            first = await http.post("/start", json={"agent": "tone"})
            assert first.status_code == 200, first.text
            reply = await http.post("/start", json={"agent": "tone"})
            assert reply.status_code == 429, reply.text
            assert reply.json()["code"] == "AT_CAPACITY" and "queue is full (0 waiting)" in reply.json()["error"]
            assert int(reply.headers["Retry-After"]) >= 1
            assert (await http.get("/v1/capacity")).json()["invariant_ok"] is True
            await http.delete(f"/v1/sessions/{first.json()['sessionId']}")
            assert (await wait_ended(small, first.json()["sessionId"]))["state"] == "ended"
