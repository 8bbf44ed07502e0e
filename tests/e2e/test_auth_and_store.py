"""API keys at the edge (auth matrix), and session records that survive a restart."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, Server, wait_for
from voxfleet.bench.webrtc_client import WebRTCCaller
from voxfleet.bots import tone
from voxfleet.transports.ice import advertise_addresses

pytestmark = pytest.mark.e2e


def keys_cli(database_url: str, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "voxfleet.cli", "keys", *args], capture_output=True, text=True,
                         env={**os.environ, "VOXFLEET_DATABASE_URL": database_url,
                              "VOXFLEET_CONFIG": "/nonexistent.toml"}, cwd=ROOT, check=True)
    return out.stdout


def tone_config(tmp_path: Path, public: bool = True) -> str:
    config = tmp_path / "voxfleet.toml"
    config.write_text(f'[[agents]]\nname = "tone"\nbot = "{Path(tone.__file__)}"\nmin_warm = 0\n'
                      f'pool_policy = "fixed"\npublic = {"true" if public else "false"}\n'
                      f'[[agents]]\nname = "private-tone"\nbot = "{Path(tone.__file__)}"\nmin_warm = 0\n'
                      'pool_policy = "fixed"\npublic = false\n')
    return str(config)


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    """A server as a fresh install runs it (no --dev, no key yet): it creates its admin key."""
    advertise_addresses(["127.0.0.1"])
    tmp = tmp_path_factory.mktemp("auth")
    server = Server(env={"VOXFLEET_CONFIG": tone_config(tmp)})
    public = keys_cli(server.database_url, "create", "--scope", "public", "--name", "web").split()[0]
    private = keys_cli(server.database_url, "create", "--scope", "private").split()[0]
    yield server, public, private
    server.stop()


def test_a_first_start_creates_one_admin_key_and_a_dashboard_login_link(keyed_server):
    server, _public, _private = keyed_server
    assert server.key and server.key.startswith("vf_priv_")
    assert f"dashboard, logged in with it: {server.url}/dashboard#key={server.key}" in server.log_tail(200)
    listed = keys_cli(server.database_url, "list")
    assert "admin (created at first start)" in listed and server.key not in listed  # only its hash is kept
    db = Path(server.database_url.removeprefix("sqlite:///"))
    assert oct(db.stat().st_mode & 0o777) == "0o600"
    with server.client() as http:
        assert http.get("/v1/capacity").status_code == 200


def test_auth_matrix(keyed_server):
    server, public, private = keyed_server
    bearer = lambda key: {"Authorization": f"Bearer {key}"}  # noqa: E731
    with server.client(anonymous=True) as http:
        # nothing private is readable without a key: sessions (the dashboard's data), capacity, metrics
        for method, path in (("GET", "/v1/sessions"), ("GET", "/v1/sessions/x"), ("GET", "/v1/capacity"),
                             ("GET", "/metrics"), ("DELETE", "/v1/sessions/x")):
            reply = http.request(method, path)
            assert reply.status_code == 401 and reply.json()["code"] == "UNAUTHORIZED", (method, path)
            assert "Authorization: missing" in reply.json()["error"]
        # a public agent starts without a key (the website's demo); the others need a private one
        started = http.post("/start", json={"agent": "tone"})
        assert started.status_code == 200, started.text
        reply = http.post("/start", json={"agent": "private-tone"})
        assert reply.status_code == 401 and "not public" in reply.json()["error"]
        # a key that is sent is checked, even where none is needed
        assert http.post("/start", json={}, headers=bearer("vf_pub_nope_nope")).status_code == 401
        assert "expected 'Bearer" in http.get("/v1/capacity", headers={"Authorization": "Basic x"}).json()["error"]
        # public key: may start public agents only, may not administer
        assert http.post("/start", json={"agent": "tone"}, headers=bearer(public)).status_code == 200
        denied = http.post("/start", json={"agent": "private-tone"}, headers=bearer(public))
        assert denied.status_code == 403 and "not public" in denied.json()["error"]
        for method, path in (("GET", "/v1/sessions"), ("GET", "/v1/capacity"), ("GET", "/metrics"),
                             ("DELETE", f"/v1/sessions/{started.json()['sessionId']}")):
            reply = http.request(method, path, headers=bearer(public))
            assert reply.status_code == 403 and reply.json()["code"] == "FORBIDDEN", (method, path)
        # private key: everything
        assert http.post("/v1/public/private-tone/start", json={}, headers=bearer(private)).status_code == 200
        assert http.get("/v1/sessions", headers=bearer(private)).status_code == 200
        assert http.delete(f"/v1/sessions/{started.json()['sessionId']}", headers=bearer(private)).status_code == 200
        # open routes; /healthz tells anonymous callers only whether it is ready
        for path in ("/healthz", "/livez", "/v1/agents", "/", "/dashboard"):
            assert http.get(path).status_code == 200, path
        assert http.get("/healthz").json() == {"status": "ok", "auth": True}
        assert set(http.get("/healthz", headers=bearer(private)).json()) >= {"checks", "runtime", "sessions"}
        # a revoked key stops working
        keys_cli(server.database_url, "revoke", private.split("_")[2])
        assert http.get("/v1/capacity", headers=bearer(private)).status_code == 401


def test_cors_answers_only_the_configured_origins_and_never_for_private_routes(keyed_server):
    server, _public, _private = keyed_server
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "GET",
                 "Access-Control-Request-Headers": "authorization"}
    with server.client(anonymous=True) as http:
        for path in ("/v1/sessions", "/v1/capacity", "/metrics", "/start"):
            reply = http.options(path, headers=preflight)
            assert "access-control-allow-origin" not in reply.headers, (path, reply.headers)
        reply = http.get("/v1/agents", headers={"Origin": "https://evil.example"})
        assert reply.status_code == 200 and "access-control-allow-origin" not in reply.headers
        # the website's own origin needs no CORS: it is the same origin
        assert http.get("/v1/agents", headers={"Origin": server.url}).status_code == 200


def test_revoking_the_last_key_closes_the_private_api(tmp_path):
    advertise_addresses(["127.0.0.1"])
    server = Server(env={"VOXFLEET_CONFIG": tone_config(tmp_path), "VOXFLEET_AUTH": "auto"})  # read as required
    try:
        keys_cli(server.database_url, "revoke", server.key.split("_")[2])
        with server.client() as http:
            reply = http.get("/v1/sessions")
            assert reply.status_code == 401 and "revoked" in reply.json()["error"]
        with server.client(anonymous=True) as http:
            assert http.get("/v1/sessions").status_code == 401
    finally:
        server.stop()


async def test_session_records_survive_a_restart(tmp_path):
    advertise_addresses(["127.0.0.1"])
    config = tone_config(tmp_path)
    first = Server(env={"VOXFLEET_CONFIG": config})
    caller = WebRTCCaller(first.url, agent="tone")
    try:
        result = await caller.connect()
        await caller.wait_first_audio(timeout=20)
        finished = WebRTCCaller(first.url, agent="tone")
        done = await finished.connect()
        await finished.wait_first_audio(timeout=20)
        await finished.close()
        with first.client() as http:
            wait_for(lambda: http.get(f"/v1/sessions/{done.session_id}").json()["state"] == "ended", timeout=10)
        time.sleep(0.5)  # records reach the store in the background, milliseconds after each change
        first.proc.kill()  # the control plane dies with a call live
        first.proc.wait()
    finally:
        await caller.close()
    # a new runtime directory: the orphaned bot cannot rejoin, so its session is recorded as cut
    second = Server(env={"VOXFLEET_CONFIG": config, "VOXFLEET_DATABASE_URL": first.database_url,
                         "VOXFLEET_RESUME_WINDOW_S": "1"}, key=first.key)
    try:
        with second.client() as http:
            kept = http.get(f"/v1/sessions/{done.session_id}").json()
            assert kept["state"] == "ended" and kept["endReason"] == "hangup" and kept["start"] == "cold"
            assert [e["kind"] for e in kept["events"]] == ["starting", "active", "ended"]
            assert kept["events"][-1]["data"]["endReason"] == "hangup"
            cut = wait_for(lambda: (r := http.get(f"/v1/sessions/{result.session_id}").json())["state"] == "ended"
                           and r, timeout=10)
            assert cut["endReason"] == "control_restart"
            listed = {s["sessionId"] for s in http.get("/v1/sessions").json()["sessions"]}
            assert {done.session_id, result.session_id} <= listed
    finally:
        second.stop()


async def test_live_call_survives_a_control_plane_restart(tmp_path):
    """kill -9 of the control plane mid-call: the bot keeps the call (media is direct), rejoins the
    next control plane on the same socket, and that one can still manage and end it."""
    advertise_addresses(["127.0.0.1"])
    env = {"VOXFLEET_CONFIG": tone_config(tmp_path), "VOXFLEET_RUNTIME_DIR": str(tmp_path / "run")}
    first = Server(env=env)
    caller = WebRTCCaller(first.url, agent="tone")
    try:
        result = await caller.connect()
        await caller.wait_first_audio(timeout=20)
        first.proc.kill()
        first.proc.wait()
        second = Server(env={**env, "VOXFLEET_DATABASE_URL": first.database_url}, key=first.key)
        try:
            with second.client() as http:
                record = wait_for(lambda: (r := http.get(f"/v1/sessions/{result.session_id}").json())
                                  .get("timingsMs", {}).get("resumed") and r, timeout=15)
                assert record["state"] == "active" and record["pid"]
                assert caller.pc.connectionState == "connected"
                capacity = http.get("/v1/capacity").json()
                assert capacity["agents"]["tone"]["active"] == 1 and capacity["reservations"] == 1
                http.delete(f"/v1/sessions/{result.session_id}")
                ended = wait_for(lambda: (r := http.get(f"/v1/sessions/{result.session_id}").json())["state"]
                                 == "ended" and r, timeout=10)
                assert ended["endReason"] == "hangup"
                capacity = wait_for(lambda: (c := http.get("/v1/capacity").json())["reservations"] == 0 and c, 10)
                assert capacity["invariant_ok"]
        finally:
            second.stop()
    finally:
        await caller.close()
