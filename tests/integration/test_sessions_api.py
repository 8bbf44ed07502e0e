"""Session routes against a real service: the tone bot forked for each session, records in SQLite."""

from __future__ import annotations

import asyncio

from aiortc import RTCPeerConnection, RTCSessionDescription

from voxfleet.transports.ice import advertise_addresses


async def test_start_read_list_and_hang_up_a_session(live):
    async with live.client(live.private_key) as http:
        started = await http.post("/start", json={"agent": "tone", "body": {"greeting": "hi"}})
        assert started.status_code == 200, started.text
        reply = started.json()
        session_id = reply["sessionId"]
        # no ice_servers configured: the client is told so; no queue, so no queuePosition key
        assert reply == {"sessionId": session_id, "iceConfig": {"iceServers": []}, "queued": False}

        record = (await http.get(f"/v1/sessions/{session_id}")).json()
        assert record["sessionId"] == session_id and record["agent"] == "tone" and record["transport"] == "webrtc"
        assert record["state"] in ("starting", "active")
        listed = (await http.get("/v1/sessions")).json()["sessions"]
        assert session_id in [s["sessionId"] for s in listed]
        capacity = (await http.get("/v1/capacity")).json()
        assert capacity["invariant_ok"] is True and capacity["agents"]["tone"]["active"] >= 1

        ended = await http.delete(f"/v1/sessions/{session_id}")
        assert ended.status_code == 200 and ended.json()["sessionId"] == session_id
        record = await live.wait_ended(session_id)
        assert record["state"] == "ended" and record["endReason"] == "hangup", record
        # hanging up an ended session answers its record again
        again = await http.delete(f"/v1/sessions/{session_id}")
        assert again.status_code == 200 and again.json()["endReason"] == "hangup"
        for _ in range(100):  # the recorder writes soon after each change
            stored = await live.store.get_session(session_id)
            if stored is not None and stored["state"] == "ended":
                break
            await asyncio.sleep(0.05)
        assert stored is not None and stored["endReason"] == "hangup", stored


async def test_pipecat_cloud_start_and_a_webrtc_offer_answered_by_the_bot(live):
    advertise_addresses(["127.0.0.1"])
    async with live.client(live.private_key) as http:
        started = await http.post("/v1/public/tone/start", json={})
        assert started.status_code == 200, started.text
        session_id = started.json()["sessionId"]
        assert started.json()["queuePosition"] is None  # this route does not drop empty fields

        pc = RTCPeerConnection()
        try:
            pc.addTransceiver("audio", direction="sendrecv")
            await pc.setLocalDescription(await pc.createOffer())
            answer = await http.post(f"/v1/public/tone/sessions/{session_id}/api/offer",
                                     json={"sdp": pc.localDescription.sdp, "type": "offer"})
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["type"] == "answer" and body["sdp"].startswith("v=0") and body["pc_id"]
            await pc.setRemoteDescription(RTCSessionDescription(body["sdp"], body["type"]))
            assert (await http.get(f"/v1/sessions/{session_id}")).json()["state"] == "active"
            # trickled candidates reach the same bot
            candidate = {"candidate": "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host", "sdp_mid": "0",
                         "sdp_mline_index": 0}
            patched = await http.patch(f"/sessions/{session_id}/api/offer",
                                       json={"pc_id": body["pc_id"], "candidates": [candidate]})
            assert patched.status_code == 200 and patched.json() == {"status": "success"}
        finally:
            await pc.close()
        await http.delete(f"/v1/sessions/{session_id}")
        assert (await live.wait_ended(session_id))["state"] == "ended"


async def test_websocket_start_answers_exactly_ws_url_and_token(live):
    async with live.client(live.private_key) as http:
        started = await http.post("/start", json={"agent": "tone", "transport": "websocket"})
        assert started.status_code == 200, started.text
        session_id = started.headers["X-Voxfleet-Session-Id"]
        assert "X-Voxfleet-Queue-Position" not in started.headers
        body = started.json()
        assert set(body) == {"wsUrl", "token"}
        assert body["wsUrl"] == "ws://testserver/v1/ws" and body["token"].startswith(session_id)
        assert (await http.get(f"/v1/sessions/{session_id}")).json()["transport"] == "websocket"
        await http.delete(f"/v1/sessions/{session_id}")
        assert (await live.wait_ended(session_id))["state"] == "ended"


async def test_agents_and_health_are_open(live):
    async with live.client() as http:
        agents = (await http.get("/v1/agents")).json()["agents"]
        assert [(a["name"], a["default"], a["description"]) for a in agents] == [
            ("tone", True, "a 440 Hz tone"), ("private-tone", False, "")]
        assert all("preload" in a for a in agents)  # the local backend reports its pre-loading
        health = await http.get("/healthz")
        assert health.status_code == 200, health.text
        body = health.json()
        assert body["status"] == "ok" and body["checks"] == {"templates": True, "accepting": True, "llm": True}
        assert body["auth"] is True and body["runtime"]["backend"] == "local"
        assert (await http.get("/livez")).json() == {"status": "alive"}
