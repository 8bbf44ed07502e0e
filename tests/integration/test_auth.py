"""API keys at the edge (``control/auth.py``), route by route, in each auth mode."""

from __future__ import annotations

import dataclasses

import pytest

from voxfleet.control.app import build_app
from voxfleet.config import Settings
from voxfleet.control.auth import Auth, ensure_admin_key
from voxfleet.storage.store import Store

UNKNOWN = "00000000-0000-0000-0000-000000000000"
# every route that needs a private key; with one, each answers as it would with no checks at all
PRIVATE = [("GET", "/v1/sessions", 200), ("GET", f"/v1/sessions/{UNKNOWN}", 404),
           ("DELETE", f"/v1/sessions/{UNKNOWN}", 404), ("GET", "/v1/capacity", 200), ("GET", "/metrics", 200)]
OPEN = ["/healthz", "/livez", "/v1/agents", "/", "/dashboard", "/openapi.json", "/docs", "/static/style.css"]
MISSING = "Authorization: missing; send 'Authorization: Bearer <private API key>' (voxfleet keys create --scope private)"
BAD_KEYS = [  # (Authorization header, what the 401 says)
    (None, MISSING),
    ("Basic dXNlcjpwdw==", "Authorization: expected 'Bearer <API key>'"),
    ("Bearer ", "Authorization: expected 'Bearer <API key>'"),
    ("Bearer vf_priv_nope_nope", "Authorization: not a valid API key (unknown, revoked or mistyped)"),
    ("Bearer not-even-shaped-like-a-key", "Authorization: not a valid API key (unknown, revoked or mistyped)"),
]


def app_with_auth(live, auth: Auth):
    return build_app(dataclasses.replace(live.app.state.voxfleet, auth=auth))


@pytest.mark.parametrize("method,path,status", PRIVATE)
async def test_private_routes_want_a_private_key(live, method, path, status):
    async with live.client() as http:
        for header, message in BAD_KEYS:
            reply = await http.request(method, path, headers={"Authorization": header} if header else {})
            assert reply.status_code == 401, (header, reply.text)
            assert reply.json() == {"error": message, "code": "UNAUTHORIZED"}
        reply = await http.request(method, path, headers={"Authorization": f"Bearer {live.public_key}"})
        assert reply.status_code == 403, reply.text
        assert reply.json() == {"error": f"a public key cannot {method} {path}; use a private key",
                                "code": "FORBIDDEN"}
        reply = await http.request(method, path, headers={"Authorization": f"Bearer {live.private_key}"})
        assert reply.status_code == status, reply.text
        if status == 404:
            assert reply.json()["code"] == "SESSION_NOT_FOUND"


async def test_the_key_is_checked_before_the_query(live):
    async with live.client() as http:
        assert (await http.get("/v1/sessions?limit=0")).status_code == 401
    async with live.client(live.private_key) as http:
        reply = await http.get("/v1/sessions?limit=0")
        assert reply.status_code == 400 and reply.json()["field"] == "query.limit", reply.text


@pytest.mark.parametrize("path", OPEN)
async def test_open_routes_need_no_key(live, path):
    async with live.client() as http:
        assert (await http.get(path)).status_code == 200, path


@pytest.mark.parametrize("route", ["/start", "/v1/public/{agent}/start"])
async def test_public_agents_start_without_a_key_the_others_need_a_private_one(live, route):
    def request(agent: str) -> tuple[str, dict]:
        if route == "/start":
            return "/start", {"agent": agent}
        return route.format(agent=agent), {}

    started = []
    async with live.client() as http:
        for header, message in BAD_KEYS[1:]:  # a key that is sent is checked, even where none is needed
            path, body = request("tone")
            reply = await http.post(path, json=body, headers={"Authorization": header})
            assert reply.status_code == 401 and reply.json() == {"error": message, "code": "UNAUTHORIZED"}
        path, body = request("tone")
        reply = await http.post(path, json=body)  # the website's demo: no key
        assert reply.status_code == 200, reply.text
        started.append(reply.json()["sessionId"])
        path, body = request("private-tone")
        reply = await http.post(path, json=body)
        assert reply.status_code == 401
        assert reply.json()["error"].startswith("agent 'private-tone' is not public; starting it needs a private")
    async with live.client(live.public_key) as http:
        path, body = request("tone")
        reply = await http.post(path, json=body)
        assert reply.status_code == 200, reply.text
        started.append(reply.json()["sessionId"])
        path, body = request("private-tone")
        reply = await http.post(path, json=body)
        assert reply.status_code == 403
        assert reply.json() == {"error": "agent 'private-tone' is not public; starting it needs a private key",
                                "code": "FORBIDDEN"}
    async with live.client(live.private_key) as http:
        for agent in ("tone", "private-tone"):
            path, body = request(agent)
            reply = await http.post(path, json=body)
            assert reply.status_code == 200, reply.text
            started.append(reply.json()["sessionId"])
        for session_id in started:
            assert (await http.delete(f"/v1/sessions/{session_id}")).status_code == 200
    for session_id in started:
        assert (await live.wait_ended(session_id))["state"] == "ended"


async def test_signaling_needs_only_the_session_id(live):
    async with live.client() as http:
        reply = await http.patch(f"/sessions/{UNKNOWN}/api/offer", json={"pc_id": "pc", "candidates": []})
        assert reply.status_code == 404 and reply.json()["code"] == "SESSION_NOT_FOUND", reply.text


async def test_a_revoked_key_stops_working_at_once(live):
    key, row = await live.store.create_key("private", "short-lived")
    async with live.client(key) as http:
        assert (await http.get("/v1/capacity")).status_code == 200
        assert await live.store.revoke_key(row["id"])
        reply = await http.get("/v1/capacity")
        assert reply.status_code == 401 and "revoked" in reply.json()["error"]


async def test_mode_off_checks_nobody(live):
    app = app_with_auth(live, Auth(live.store, "off", {"tone"}))
    async with live.client("vf_priv_nope_nope", app=app) as http:
        for _method, path, _status in PRIVATE[:1] + PRIVATE[3:]:
            assert (await http.get(path)).status_code == 200, path
        assert (await http.get("/healthz")).json()["auth"] is False


async def test_without_keys_the_private_api_stays_closed_and_auto_means_required(live, tmp_path):
    """Revoking the last key never opens the API; a first start creates one admin key."""
    store = Store(f"sqlite:///{tmp_path}/keys.db")
    await store.migrate()
    try:
        async with live.client(app=app_with_auth(live, Auth(store, "required", {"tone"}))) as http:
            assert (await http.get("/v1/capacity")).status_code == 401  # no key exists: still closed
            assert (await http.get("/healthz")).json() == {"status": "ok", "auth": True}  # anonymous: little
        admin = await ensure_admin_key(store)
        assert admin is not None and await ensure_admin_key(store) is None  # once
        [row] = await store.list_keys()
        assert row["scope"] == "private"
        async with live.client(admin, app=app_with_auth(live, Auth(store, "required", {"tone"}))) as http:
            assert (await http.get("/v1/capacity")).status_code == 200
            assert (await http.get("/healthz")).json()["auth"] is True
            assert await store.revoke_key(row["id"])
            assert (await http.get("/v1/capacity")).status_code == 401
            assert (await http.get("/v1/capacity", headers={"Authorization": ""})).status_code == 401
        assert await ensure_admin_key(store) is not None  # the next start makes a new one
        assert Settings(auth="auto").auth == "required"
    finally:
        await store.close()
