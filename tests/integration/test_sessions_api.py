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
            candidate = {"candidate": "candidate:1 1 udp 2130706431 192.0.2.9 9 typ host", "sdp_mid": "0",
                         "sdp_mline_index": 0}
            patched = await http.patch(f"/sessions/{session_id}/api/offer",
                                       json={"pc_id": body["pc_id"], "candidates": [candidate]})
            assert patched.status_code == 200 and patched.json() == {"status": "success"}
            # ... but none that points the bot at this host or at link-local addresses
            probe = {**candidate, "candidate": "candidate:2 1 udp 2130706431 169.254.169.254 80 typ host"}
            patched = await http.patch(f"/sessions/{session_id}/api/offer",
                                       json={"pc_id": body["pc_id"], "candidates": [probe]})
            assert patched.status_code == 200 and patched.json() == {"status": "success", "ignored": "1"}
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
        assert health.status_code == 200 and health.json() == {"status": "ok", "auth": True}, health.text  # no details
        assert (await http.get("/livez")).json() == {"status": "alive"}
    async with live.client(live.private_key) as http:
        body = (await http.get("/healthz")).json()
        assert body["status"] == "ok" and body["checks"] == {"templates": True, "accepting": True, "llm": True}
        assert body["auth"] is True and body["runtime"]["backend"] == "local"


async def test_signaling_checks_what_it_acts_on(live):
    """Another transport's session, a pc_id that is not the session's, a second offer, too many
    candidates, another agent's route, an ended session: 404/409 naming what is wrong, never 5xx."""
    advertise_addresses(["127.0.0.1"])
    candidate = {"candidate": "candidate:1 1 udp 2130706431 192.0.2.9 9 typ host", "sdp_mid": "0",
                 "sdp_mline_index": 0}
    async with live.client(live.private_key) as http:
        ws = await http.post("/start", json={"agent": "tone", "transport": "websocket"})
        ws_session = ws.headers["X-Voxfleet-Session-Id"]
        pc = RTCPeerConnection()
        try:
            pc.addTransceiver("audio", direction="sendrecv")
            await pc.setLocalDescription(await pc.createOffer())
            offer = {"sdp": pc.localDescription.sdp, "type": "offer"}
            reply = await http.post(f"/sessions/{ws_session}/api/offer", json=offer)
            assert reply.status_code == 409 and "a websocket session (transport)" in reply.json()["error"], reply.text
            reply = await http.patch(f"/sessions/{ws_session}/api/offer", json={"pc_id": "", "candidates": []})
            assert reply.status_code == 409, reply.text

            session_id = (await http.post("/start", json={"agent": "tone"})).json()["sessionId"]
            reply = await http.patch(f"/sessions/{session_id}/api/offer", json={"pc_id": "", "candidates": []})
            assert reply.status_code == 409 and "not connected yet" in reply.json()["error"], reply.text
            reply = await http.post(f"/sessions/{session_id}/api/offer", json={**offer, "pc_id": "made-up"})
            assert reply.status_code == 404 and reply.json()["code"] == "PEER_NOT_FOUND", reply.text
            reply = await http.post(f"/v1/public/private-tone/sessions/{session_id}/api/offer", json=offer)
            assert reply.status_code == 404 and reply.json()["code"] == "SESSION_NOT_FOUND", reply.text
            answer = await http.post(f"/sessions/{session_id}/api/offer", json=offer)
            assert answer.status_code == 200, answer.text
            pc_id = answer.json()["pc_id"]
            reply = await http.post(f"/sessions/{session_id}/api/offer", json=offer)
            assert reply.status_code == 409 and "pc_id" in reply.json()["error"], reply.text
            reply = await http.patch(f"/sessions/{session_id}/api/offer", json={"pc_id": "other", "candidates": []})
            assert reply.status_code == 404 and reply.json()["error"].startswith("pc_id:"), reply.text
            reply = await http.patch(f"/sessions/{session_id}/api/offer",
                                     json={"pc_id": pc_id, "candidates": [candidate] * 33})
            assert reply.status_code == 400 and reply.json()["field"] == "candidates", reply.text
            for _ in range(2):
                reply = await http.patch(f"/sessions/{session_id}/api/offer",
                                         json={"pc_id": pc_id, "candidates": [candidate] * 32})
                assert reply.status_code == 200, reply.text
            reply = await http.patch(f"/sessions/{session_id}/api/offer", json={"pc_id": pc_id, "candidates": [candidate]})
            assert reply.status_code == 409 and "limit of 64 ICE candidates" in reply.json()["error"], reply.text
        finally:
            await pc.close()
        for sid in (ws_session, session_id):
            await http.delete(f"/v1/sessions/{sid}")
            assert (await live.wait_ended(sid))["state"] == "ended"
        reply = await http.post(f"/sessions/{session_id}/api/offer", json=offer)
        assert reply.status_code == 409 and "ended" in reply.json()["error"], reply.text


async def test_a_caller_sees_and_ends_its_own_session_by_its_id_only(live):
    """The website polls its queue position and hangs up without a key: the session id is the
    capability, and the caller's view holds nothing of the call's content."""
    async with live.client() as http:
        session_id = (await http.post("/start", json={"agent": "tone"})).json()["sessionId"]
        view = (await http.get(f"/sessions/{session_id}")).json()
        assert set(view) == {"sessionId", "agent", "state", "queuePosition", "endReason"}
        assert view["state"] in ("starting", "active")
        assert (await http.get(f"/v1/sessions/{session_id}")).status_code == 401  # the record is private
        assert (await http.delete(f"/sessions/{session_id}")).json()["state"] == "ended"
        assert (await http.get("/sessions/00000000-0000-0000-0000-000000000000")).status_code == 404
    assert (await live.wait_ended(session_id))["endReason"] == "hangup"
