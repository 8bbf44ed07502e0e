"""Deploying on a VM: a call relayed by a real TURN server (coturn, use-auth-secret) with
credentials voxfleet mints per session, wrong/expired credentials, bots' media inside the
configured UDP port range and a clear error when it is exhausted, HTTPS in headless Chromium,
X-Forwarded-* from a trusted proxy, liveness, bad deployment settings, the systemd unit.

Everything listens on 127.0.0.1. The bot is the model-free tone bot.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ARTIFACTS, ROOT, Server, free_udp_range, wait_for
from voxfleet.bench.webrtc_client import WebRTCCaller
from voxfleet.bots import tone
from voxfleet.exceptions import TurnCheckFailed
from voxfleet.transports.ice import advertise_addresses
from voxfleet.transports.turn import mint_turn_credential, parse_ice_url
from voxfleet.transports.turn_check import check_turn

pytestmark = pytest.mark.e2e

TONE_BOT = Path(tone.__file__)
TURN_SECRET = "north-wind-" + os.urandom(6).hex()


class Coturn:
    """coturn on 127.0.0.1 with the TURN REST API secret (use-auth-secret)."""

    def __init__(self, workdir: Path, secret: str) -> None:
        binary = shutil.which("turnserver")
        assert binary, "turnserver not found: scripts/setup.sh --test installs the coturn package"
        self.port, _ = free_udp_range(1)
        relay_first, relay_last = free_udp_range(40)
        config = workdir / "turnserver.conf"
        config.write_text("\n".join([
            "listening-ip=127.0.0.1", "relay-ip=127.0.0.1", f"listening-port={self.port}",
            f"min-port={relay_first}", f"max-port={relay_last}", "use-auth-secret",
            f"static-auth-secret={secret}", "realm=voxfleet.test", "fingerprint", "no-tls", "no-dtls",
            "no-tcp-relay", "no-cli", "allow-loopback-peers", "log-file=stdout", "simple-log",
            f"pidfile={workdir / 'turnserver.pid'}", f"userdb={workdir / 'turndb'}",
        ]) + "\n")
        self.log = open(workdir / "turnserver.log", "w")
        self.proc = subprocess.Popen([binary, "-c", str(config)], stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"turn:127.0.0.1:{self.port}?transport=udp"

        async def allocates() -> bool:
            minted = mint_turn_credential(secret, "probe", now=time.time(), ttl_s=60)
            try:
                await check_turn(parse_ice_url(self.url), minted.username, minted.credential, timeout=1)
                return True
            except TurnCheckFailed:
                return False

        wait_for(lambda: self.proc.poll() is None and asyncio.run(allocates()), timeout=15, interval=0.2)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def write_config(path: Path, lines: list[str], min_warm: int = 1) -> Path:
    path.write_text("\n".join(lines + [
        "[[agents]]", 'name = "tone"', f'bot = "{TONE_BOT}"', f"min_warm = {min_warm}", 'pool_policy = "fixed"',
    ]) + "\n")
    return path


@pytest.fixture(scope="module")
def coturn(tmp_path_factory):
    server = Coturn(tmp_path_factory.mktemp("coturn"), TURN_SECRET)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def media_ports():
    return free_udp_range(8)


@pytest.fixture(scope="module")
def relay_server(coturn, media_ports, tmp_path_factory):
    """A tone server whose sessions get TURN credentials minted from coturn's secret, and whose
    bots' media stays inside `media_ports`."""
    advertise_addresses(["127.0.0.1"])
    first, last = media_ports
    config = write_config(tmp_path_factory.mktemp("relay") / "voxfleet.toml", [
        f'turn_secret = "{TURN_SECRET}"', f'media_ports = "{first}-{last}"', "[[ice_servers]]",
        f'urls = ["{coturn.url}"]',
    ])
    server = Server(env={"VOXFLEET_CONFIG": str(config)})
    yield server
    server.stop()
    (ARTIFACTS / "deploy-relay-server.log").write_text("\n".join(server.log_lines))


def session(server: Server, session_id: str) -> dict:
    with server.client() as http:
        return http.get(f"/v1/sessions/{session_id}").json()


def udp_ports_of(pid: int) -> set[int]:
    """Local ports of the UDP sockets process `pid` holds (its fds matched to /proc/net/udp*)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("udp", "udp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def nominated_types(caller: WebRTCCaller) -> tuple[str, str]:
    """(local, remote) candidate types of the caller's selected ICE pair."""
    transport = caller.pc.getTransceivers()[0].sender.transport.transport
    pair = transport._connection._nominated[1]  # aioice: component 1 (no public accessor)
    return pair.local_candidate.type, pair.remote_candidate.type


# -- TURN --------------------------------------------------------------------------------------
async def test_relay_only_call_gets_bot_audio_through_coturn(relay_server, coturn):
    caller = WebRTCCaller(relay_server.url, ice_transport_policy="relay")
    try:
        started = time.time()
        result = await caller.connect()
        assert await caller.wait_first_audio(timeout=20) > 0
        assert nominated_types(caller)[0] == "relay"  # the caller only ever sent through coturn
    finally:
        await caller.close()
    # The client got minted credentials for its session: "<expiry>:<session id>", HMAC-SHA1.
    (server,) = result.ice_servers
    assert server["urls"] == [coturn.url]
    expiry, user = server["username"].split(":")
    assert user == result.session_id
    assert int(expiry) > started + 3600  # outlives the longest session (max_session_s)
    expected = base64.b64encode(hmac.new(TURN_SECRET.encode(), server["username"].encode(), hashlib.sha1).digest())
    assert server["credential"] == expected.decode()
    # The bot's peer connection used the TURN server too (its own minted credentials).
    assert " typ relay" in result.answer_sdp
    with relay_server.client() as http:
        raw = http.post("/start", json={"transport": "webrtc"}).text
        http.delete(f"/v1/sessions/{json.loads(raw)['sessionId']}")
    assert TURN_SECRET not in raw  # the long-term secret never reaches a client
    assert any("allocation ok" in line for line in relay_server.log_lines)


async def test_wrong_or_expired_turn_credentials_fail_clearly(relay_server, coturn, tmp_path):
    url = parse_ice_url(coturn.url)
    wrong = mint_turn_credential("not-the-secret", "s1", now=time.time(), ttl_s=600)
    with pytest.raises(TurnCheckFailed, match=r"401 Unauthorized.*turn_secret match the server's static-auth-secret"):
        await check_turn(url, wrong.username, wrong.credential, now=time.time())
    expired = mint_turn_credential(TURN_SECRET, "s1", now=time.time() - 7200, ttl_s=3600)
    with pytest.raises(TurnCheckFailed, match=r"401 Unauthorized.*credential expired at"):
        await check_turn(url, expired.username, expired.credential, now=time.time())

    # A relay-only caller with a bad credential gets no relay, so the call cannot connect.
    caller = WebRTCCaller(relay_server.url, ice_transport_policy="relay",
                          ice_servers=[{"urls": [coturn.url], "username": wrong.username,
                                        "credential": wrong.credential}])
    try:
        result = await caller.connect()
        assert "a=candidate" not in caller.pc.localDescription.sdp  # coturn refused: nothing to offer
        with pytest.raises(asyncio.TimeoutError):
            await caller.wait_first_audio(timeout=3)
        assert caller.pc.connectionState != "connected"
    finally:
        await caller.close()
    with relay_server.client() as http:
        http.delete(f"/v1/sessions/{result.session_id}")

    # voxfleet configured with the wrong secret says so at start, naming the setting.
    config = write_config(tmp_path / "voxfleet.toml", [
        'turn_secret = "not-the-secret"', "[[ice_servers]]", f'urls = ["{coturn.url}"]'], min_warm=0)
    server = Server(env={"VOXFLEET_CONFIG": str(config)})
    server.stop()
    errors = [line for line in server.log_lines if "refused the allocation" in line]
    assert errors, server.log_tail()
    assert f"ice_servers: TURN server {coturn.url}" in errors[0] and "turn_secret" in errors[0]


# -- media ports -------------------------------------------------------------------------------
async def test_bot_media_stays_in_the_port_range_and_exhaustion_is_clear(relay_server, media_ports):
    first, last = media_ports
    callers = [WebRTCCaller(relay_server.url, headers=relay_server.headers) for _ in range(2)]  # one client, both
    held: list[socket.socket] = []
    try:
        results = await asyncio.gather(*(c.connect() for c in callers))
        for caller in callers:
            await caller.wait_first_audio(timeout=20)
        for result in results:
            record = session(relay_server, result.session_id)
            ports = udp_ports_of(record["pid"])
            assert ports, f"bot {record['pid']} has no UDP socket"
            assert all(first <= p <= last for p in ports), (ports, media_ports, record["start"])
            assert " typ relay" in result.answer_sdp  # warm or cold, the bot got its TURN credentials
        # Take every port of the range that is still free: the next bot has none left.
        for port in range(first, last + 1):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.bind(("127.0.0.1", port))
                held.append(sock)
            except OSError:
                sock.close()
        starved = WebRTCCaller(relay_server.url)
        try:
            with pytest.raises(httpx.HTTPStatusError) as failure:
                await starved.connect()
        finally:
            await starved.close()
        response = failure.value.response
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "MEDIA_PORTS_EXHAUSTED"
        assert f"media_ports: all {last - first + 1} UDP ports of {first}-{last} are in use" in response.json()["error"]
        # the starved session ends at once (its reservation is not held until the offer timeout)
        with relay_server.client() as http:
            ended = wait_for(lambda: (r := http.get(f"/v1/sessions/{starved.result.session_id}").json())["state"]
                             == "ended" and r, timeout=10)
        assert ended["endReason"] == "media_ports_exhausted"
    finally:
        for sock in held:
            sock.close()
        for caller in callers:
            await caller.close()
    # Freed ports serve the next call.
    again = WebRTCCaller(relay_server.url)
    try:
        await again.connect()
        assert await again.wait_first_audio(timeout=20) > 0
    finally:
        await again.close()


# -- HTTP side: proxy headers, liveness ----------------------------------------------------------
def test_forwarded_proto_from_a_trusted_proxy_and_livez(relay_server):
    with relay_server.client() as http:
        assert http.get("/livez").json() == {"status": "alive"}
        assert http.get("/healthz").status_code == 200
        # A redirect (trailing slash) is built from the scheme the proxy saw.
        behind = http.get("/v1/agents/", headers={"X-Forwarded-Proto": "https",
                                                   "X-Forwarded-For": "203.0.113.9"})
        assert behind.status_code == 307 and behind.headers["location"].startswith("https://")
        direct = http.get("/v1/agents/")
        assert direct.headers["location"].startswith("http://")


# -- HTTPS in a browser ---------------------------------------------------------------------------
def self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=voxfleet.test", "-addext", "subjectAltName=DNS:voxfleet.test,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


async def test_https_website_gets_the_microphone_and_connects(tmp_path):
    from playwright.async_api import async_playwright, expect

    from tests.e2e.test_browser import CHROMIUM, chromium_args

    cert, key = self_signed(tmp_path)
    config = write_config(tmp_path / "voxfleet.toml", ['forwarded_allow_ips = "192.0.2.1"'])
    server = Server("--ssl-certfile", str(cert), "--ssl-keyfile", str(key), env={"VOXFLEET_CONFIG": str(config)})
    try:
        assert server.url.startswith("https://127.0.0.1:")
        port = server.url.rsplit(":", 1)[1]
        with httpx.Client(base_url=server.url, verify=ssl.create_default_context(cafile=str(cert))) as http:
            assert http.get("/livez").status_code == 200
            # X-Forwarded-Proto from an untrusted address (not in forwarded_allow_ips) is ignored.
            ignored = http.get("/v1/agents/", headers={"X-Forwarded-Proto": "http"})
            assert ignored.headers["location"].startswith("https://")
        wav = tmp_path / "quiet.wav"
        subprocess.run(["sox", "-n", "-r", "48000", "-c", "1", "-b", "16", str(wav), "trim", "0", "3"], check=True)
        # A real host name (mapped to loopback) so the page is a secure context only through TLS.
        args = chromium_args(str(wav)) + ["--ignore-certificate-errors",
                                          "--host-resolver-rules=MAP voxfleet.test 127.0.0.1"]
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
            page = await browser.new_page(viewport={"width": 1200, "height": 760})
            try:
                await page.goto(f"https://voxfleet.test:{port}/")
                assert await page.evaluate("window.isSecureContext") is True
                assert await page.evaluate("location.protocol") == "https:"
                await page.click("#talk")
                await expect(page.locator("#state-text")).to_contain_text("Live", timeout=20_000)
                await expect(page.locator("#ttfw")).to_have_attribute("data-ready", "1", timeout=10_000)
                await page.screenshot(path=str(ARTIFACTS / "website-https.png"))
                await page.click("#talk")
            finally:
                await browser.close()
    finally:
        server.stop()
        (ARTIFACTS / "deploy-https-server.log").write_text("\n".join(server.log_lines))


# -- bad deployment settings -----------------------------------------------------------------------
@pytest.mark.parametrize("env, message", [
    ({"VOXFLEET_MEDIA_PORTS": "40000-30000"},
     "media_ports: '40000-30000': the first port 40000 is above the last 30000"),
    ({"VOXFLEET_MEDIA_PORTS": "40000"}, "media_ports: '40000' is not a port range"),
    ({"VOXFLEET_SSL_CERTFILE": "/nonexistent/cert.pem", "VOXFLEET_SSL_KEYFILE": "/nonexistent/key.pem"},
     "ssl_certfile: no such file '/nonexistent/cert.pem'"),
    ({"VOXFLEET_SSL_CERTFILE": "/etc/hostname"}, "ssl_certfile is set but not its pair"),
    ({"VOXFLEET_ICE_SERVERS": '[{"urls": ["turn:127.0.0.1:3478"]}]'},
     "ice_servers[0]: TURN server ['turn:127.0.0.1:3478'] needs username and credential, or turn_secret"),
    ({"VOXFLEET_FORWARDED_ALLOW_IPS": "127.0.0.1,proxy"}, "forwarded_allow_ips: 'proxy' in '127.0.0.1,proxy'"),
])
def test_bad_deployment_settings_stop_serve_at_start_naming_setting_and_value(env, message):
    done = subprocess.run([sys.executable, "-m", "voxfleet.cli", "serve", "--port", "0"], cwd=ROOT, timeout=60,
                          capture_output=True, text=True,
                          env={**os.environ, "VOXFLEET_CONFIG": "/nonexistent.toml", **env})
    assert done.returncode == 2, done.stderr
    assert message in done.stderr


# -- systemd -------------------------------------------------------------------------------------------
def test_service_install_writes_a_valid_unit_and_a_private_env_file(tmp_path):
    config = write_config(tmp_path / "voxfleet.toml", ["drain_timeout_s = 20"])
    env_file = tmp_path / "etc" / "voxfleet.env"
    command = [sys.executable, "-m", "voxfleet.cli", "service", "install", "--unit-dir", str(tmp_path / "units"),
               "--config", str(config), "--env-file", str(env_file), "--user", "root"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "VOXFLEET_TURN_SECRET": "s3cret-value"})
    assert done.returncode == 0, done.stderr
    unit = (tmp_path / "units" / "voxfleet.service").read_text()
    assert f"ExecStart={sys.executable} -m voxfleet.cli serve" in unit
    assert f"Environment=VOXFLEET_CONFIG={config}" in unit and f"EnvironmentFile=-{env_file}" in unit
    assert "Type=notify" in unit and "KillMode=mixed" in unit and "TimeoutStopSec=35" in unit
    assert "s3cret-value" not in unit
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert "VOXFLEET_TURN_SECRET=s3cret-value" in env_file.read_text()
    # Installing again keeps the secrets file, and validates with it: TURN needs the secret.
    env_file.write_text("VOXFLEET_TURN_SECRET=edited\n")
    config.write_text(config.read_text().replace("drain_timeout_s = 20",
                                                 'drain_timeout_s = 20\n[[ice_servers]]\nurls = ["turn:127.0.0.1"]'))
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "kept" in again.stdout
    assert env_file.read_text() == "VOXFLEET_TURN_SECRET=edited\n"
    # An unknown user is refused before anything is written.
    nobody = subprocess.run(command[:-1] + ["no-such-user-x"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert nobody.returncode == 2 and "--user: no user named 'no-such-user-x'" in nobody.stderr

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed; the unit's content was checked above")
    verified = subprocess.run([analyze, "verify", str(tmp_path / "units" / "voxfleet.service")],
                              capture_output=True, text=True, timeout=60)
    # verify exits 0 even on unknown directives; it prints a line for each, so demand silence.
    assert verified.returncode == 0 and verified.stdout + verified.stderr == "", verified.stdout + verified.stderr
