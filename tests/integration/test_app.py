"""The app's published surface: the routes in its OpenAPI schema, and one app per state."""

from __future__ import annotations

import dataclasses

from voxfleet.control.app import build_app

# Pipecat runner / Pipecat Cloud clients and voxfleet's own tools depend on exactly these
SCHEMA = {
    "/start": {"post"},
    "/v1/public/{agent}/start": {"post"},
    "/sessions/{session_id}/api/offer": {"post", "patch"},
    "/sessions/{session_id}": {"get", "delete"},
    "/v1/agents": {"get"},
    "/v1/sessions": {"get"},
    "/v1/sessions/{session_id}": {"get", "delete"},
    "/v1/sessions/{session_id}/recording": {"get", "head"},
    "/v1/capacity": {"get"},
    "/healthz": {"get"},
    "/livez": {"get"},
    "/v1/telephony/twilio/{agent}": {"post"},
    "/v1/telephony/twilio/{agent}/ended": {"post"},
    "/v1/telephony/twilio/{agent}/outbound": {"post"},
    "/v1/telephony/twilio/{agent}/status": {"post"},
    "/v1/agents/{agent}/calls": {"post"},
    "/v1/calls/{call_id}": {"get", "delete"},
    "/v1/sessions/{session_id}/transfer": {"post"},
    "/v1/telephony/telnyx/{agent}": {"post"},
    "/v1/telephony/telnyx/{agent}/ended": {"post"},
    "/v1/telephony/telnyx/{agent}/outbound": {"post"},
    "/v1/telephony/telnyx/{agent}/status": {"post"},
    "/v1/telephony/plivo/{agent}": {"post"},
    "/v1/telephony/plivo/{agent}/ended": {"post"},
    "/v1/telephony/plivo/{agent}/outbound": {"post"},
    "/v1/telephony/plivo/{agent}/status": {"post"},
    "/v1/telephony/plivo/transfer/dial": {"post"},
    "/v1/telephony/exotel/{agent}": {"get", "post"},
    "/v1/telephony/exotel/{agent}/ended": {"get", "post"},
    "/v1/telephony/exotel/{agent}/hold": {"get", "post"},
    "/v1/telephony/exotel/{agent}/say": {"get", "head"},
}


async def test_the_schema_lists_the_public_routes(live):
    async with live.client() as http:
        schema = (await http.get("/openapi.json")).json()
    assert {path: set(methods) for path, methods in schema["paths"].items()} == SCHEMA
    assert schema["info"]["title"] == "voxfleet"
    tags = {path: {op["tags"][0] for op in ops.values()} for path, ops in schema["paths"].items()}
    assert tags["/start"] == {"sessions"} and tags["/sessions/{session_id}/api/offer"] == {"signaling"}
    assert tags["/healthz"] == {"ops"} and tags["/v1/telephony/twilio/{agent}"] == {"telephony"}


async def test_each_app_answers_from_its_own_state(live):
    """The routers are module-level; what a route sees comes from the app it is mounted in."""
    state = live.app.state.voxfleet
    other = build_app(dataclasses.replace(state, settings=state.settings.model_copy(update={"max_body_bytes": 1024})))
    body = {"agent": "tone", "body": {"pad": "x" * 2000}}
    async with live.client(live.private_key, app=other) as http:
        assert (await http.post("/start", json=body)).status_code == 413
    async with live.client(live.private_key) as http:
        started = await http.post("/start", json=body)
        assert started.status_code == 200, started.text
        await http.delete(f"/v1/sessions/{started.json()['sessionId']}")
    assert (await live.wait_ended(started.json()["sessionId"]))["state"] == "ended"
