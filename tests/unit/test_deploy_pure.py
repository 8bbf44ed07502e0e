"""Deployment pieces without servers: TURN credential minting, ICE URLs, port ranges, the media
port event loop (loopback sockets only), deployment settings, journald log lines, the systemd unit."""

from __future__ import annotations

import asyncio
import io
import logging
import socket
import sys
from pathlib import Path

import pytest

from tests.conftest import free_udp_range
from voxfleet.config import load_settings
from voxfleet.exceptions import ConfigError, MediaPortsExhausted
from voxfleet.transports.media_ports import PortRangeEventLoop, bind_udp_in_range, parse_port_range
from voxfleet.transports.turn import (
    SessionIceServers,
    credential_expiry,
    mint_turn_credential,
    parse_ice_url,
    turn_rest_credential,
)


# -- TURN REST API credentials ------------------------------------------------------------------
def test_credential_matches_an_independent_hmac_sha1():
    # echo -n "1700000000:session-1" | openssl dgst -sha1 -hmac north-wind -binary | base64
    assert turn_rest_credential("north-wind", "1700000000:session-1") == "3uwMU9/bQab030NBxsnIbQR2cdo="


def test_minted_credential_names_expiry_and_session():
    minted = mint_turn_credential("north-wind", "session-1", now=1_699_996_400.7, ttl_s=3600)
    assert minted.username == "1700000000:session-1"
    assert minted.credential == "3uwMU9/bQab030NBxsnIbQR2cdo="
    assert credential_expiry(minted.username) == 1_700_000_000
    with pytest.raises(ValueError, match="must not contain ':'"):
        mint_turn_credential("s", "a:b", now=0, ttl_s=60)
    with pytest.raises(ValueError, match="lifetime must be positive"):
        mint_turn_credential("s", "a", now=0, ttl_s=0)


def test_session_ice_servers_mint_per_session_and_keep_static_ones():
    servers = [
        {"urls": ["stun:stun.example.net"]},
        {"urls": ["turn:turn.example.net:3478?transport=udp", "turns:turn.example.net:5349"]},
        {"urls": ["turn:other.example.net"], "username": "static", "credential": "pw"},
    ]
    ice = SessionIceServers(servers, shared_secret="top-secret", ttl_s=600, clock=lambda: 1000.0)
    first, second = ice.for_session("s1"), ice.for_session("s2")
    assert first[0] == {"urls": ["stun:stun.example.net"]}
    assert first[1]["username"] == "1600:s1" and second[1]["username"] == "1600:s2"
    assert first[1]["credential"] == turn_rest_credential("top-secret", "1600:s1")
    assert first[2] == servers[2]
    assert "top-secret" not in repr(first) + repr(second) + repr(ice)
    assert [u.port for u, _ in ice.turn_urls()] == [3478, 5349, 3478]
    with pytest.raises(ValueError, match="no credentials and no shared secret"):
        SessionIceServers(servers[1:2], clock=lambda: 0.0)


@pytest.mark.parametrize("url, parsed", [
    ("stun:stun.example.net", ("stun", "stun.example.net", 3478, None)),
    ("turn:127.0.0.1:3479", ("turn", "127.0.0.1", 3479, "udp")),
    ("turn:[::1]?transport=tcp", ("turn", "::1", 3478, "tcp")),
    ("turns:turn.example.net", ("turns", "turn.example.net", 5349, "tcp")),
])
def test_ice_urls_parse(url, parsed):
    got = parse_ice_url(url)
    assert (got.scheme, got.host, got.port, got.transport) == parsed


@pytest.mark.parametrize("url, message", [
    ("http://example.net", "is not a STUN/TURN URL"),
    ("turn:host:70000", "port 70000 is out of range"),
    ("stun:host?transport=udp", "a STUN URL takes no"),
])
def test_bad_ice_urls_are_named(url, message):
    with pytest.raises(ValueError, match=message) as error:
        parse_ice_url(url)
    assert repr(url) in str(error.value)


# -- media ports -----------------------------------------------------------------------------------
@pytest.mark.parametrize("text, message", [
    ("40000-30000", "the first port 40000 is above the last 30000"),
    ("40000", "is not a port range"),
    ("0-10", "port 0 is outside 1-65535"),
    ("a-b", "is not a port range"),
])
def test_bad_port_ranges_are_named(text, message):
    with pytest.raises(ValueError, match=message) as error:
        parse_port_range(text)
    assert repr(text) in str(error.value)


def test_bind_in_range_skips_ports_in_use_and_reports_exhaustion():
    first, last = free_udp_range(3)
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", first))
    socks = [taken]
    try:
        for _ in range(2):
            socks.append(bind_udp_in_range("127.0.0.1", first, last, start_at=first))
        assert sorted(s.getsockname()[1] for s in socks) == [first, first + 1, first + 2]
        with pytest.raises(MediaPortsExhausted) as error:
            bind_udp_in_range("127.0.0.1", first, last)
        assert str(error.value) == (f"media_ports: all 3 UDP ports of {first}-{last} are in use on 127.0.0.1; "
                                    "widen the range or admit fewer sessions")
    finally:
        for sock in socks:
            sock.close()


def test_aioice_candidates_come_from_the_range_with_the_port_range_loop():
    import aioice

    first, last = free_udp_range(4)

    async def gather() -> list[int]:
        connection = aioice.Connection(ice_controlling=True, components=1)
        original = aioice.ice.get_host_addresses
        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
        try:
            await connection.gather_candidates()
        finally:
            aioice.ice.get_host_addresses = original
        ports = [c.port for c in connection.local_candidates]
        await connection.close()
        return ports

    runner = asyncio.Runner(loop_factory=lambda: PortRangeEventLoop(first, last))
    with runner:
        ports = runner.run(gather())
    assert ports and all(first <= p <= last for p in ports)


# -- deployment settings -------------------------------------------------------------------------------
def _config_error(monkeypatch, **env) -> str:
    monkeypatch.setenv("VOXFLEET_CONFIG", "/nonexistent.toml")
    for key, value in env.items():
        monkeypatch.setenv(f"VOXFLEET_{key.upper()}", value)
    with pytest.raises(ConfigError) as error:
        load_settings()
    return str(error.value)


def test_deployment_settings_errors_name_setting_and_value(monkeypatch, tmp_path):
    assert "media_ports: '40000-30000': the first port 40000 is above the last 30000" in _config_error(
        monkeypatch, media_ports="40000-30000")
    monkeypatch.delenv("VOXFLEET_MEDIA_PORTS")
    assert "ssl_keyfile: no such file '/nope/key.pem'" in _config_error(
        monkeypatch, ssl_certfile="/etc/hostname", ssl_keyfile="/nope/key.pem")
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    monkeypatch.setenv("VOXFLEET_SSL_CERTFILE", str(not_pem))
    monkeypatch.setenv("VOXFLEET_SSL_KEYFILE", str(not_pem))
    assert f"{str(not_pem)!r} with key {str(not_pem)!r} do not load" in _config_error(monkeypatch)
    for key in ("SSL_CERTFILE", "SSL_KEYFILE"):
        monkeypatch.delenv(f"VOXFLEET_{key}")
    message = _config_error(monkeypatch, ice_servers='[{"urls": ["turn:t.example.net"]}]',
                            turn_secret="very-secret-value", turn_credential_ttl_s="60")
    assert "turn_credential_ttl_s: 60 is shorter than max_session_s 3600" in message
    assert "very-secret-value" not in message


def test_deployment_settings_defaults_and_values(monkeypatch):
    monkeypatch.setenv("VOXFLEET_CONFIG", "/nonexistent.toml")
    settings = load_settings()
    assert settings.media_port_range is None and not settings.https
    assert settings.proxy_headers and settings.forwarded_allow_ips == "127.0.0.1"  # uvicorn's defaults
    monkeypatch.setenv("VOXFLEET_MEDIA_PORTS", " 40000-40099 ")
    monkeypatch.setenv("VOXFLEET_TURN_SECRET", "hush")
    settings = load_settings()
    assert settings.media_port_range == (40000, 40099)
    assert settings.turn_ttl_s == 3600 + 30 + 10 + 300
    assert "hush" not in repr(settings)


# -- logs ------------------------------------------------------------------------------------------------
def test_journald_lines_carry_priority_and_no_timestamp(monkeypatch):
    from voxfleet.observability.logs import configure_logging

    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    from loguru import logger

    configure_logging("INFO", process="control", log_format="journald")
    try:
        logging.getLogger("voxfleet.test").warning("session %s: no media", "s1")
        logging.getLogger("voxfleet.test").info("ready")
        logger.error("pipecat says <b>{x}</b>")  # Pipecat logs through loguru
    finally:
        configure_logging("INFO", process="control", log_format="text")
    assert out.getvalue().splitlines() == [
        "<4>[control] WARNING voxfleet.test: session s1: no media",
        "<6>[control] INFO voxfleet.test: ready",
        f"<3>[control] ERROR {__name__}: pipecat says <b>{{x}}</b>",
    ]


# -- systemd ---------------------------------------------------------------------------------------------
def test_unit_env_file_and_notify(tmp_path, monkeypatch):
    from voxfleet import systemd

    unit = systemd.render_unit(systemd.UnitOptions(user="voxfleet", python="/opt/voxfleet/.venv/bin/python",
                                                   drain_timeout_s=60))
    assert "ExecStart=/opt/voxfleet/.venv/bin/python -m voxfleet.cli serve" in unit
    assert "User=voxfleet" in unit and "TimeoutStopSec=75" in unit and "Type=notify" in unit
    env = systemd.render_env_file({"VOXFLEET_TURN_SECRET": "abc"})
    assert "VOXFLEET_TURN_SECRET=abc\n" in env and "#DEEPGRAM_API_KEY=\n" in env

    address = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", address)
        assert systemd.notify("READY=1")
        assert listener.recv(100) == b"READY=1"
    finally:
        listener.close()
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert systemd.notify("READY=1") is False
    assert Path(address).exists()


# -- 1:1 NAT -----------------------------------------------------------------------------------------------
def test_nat_entries_parse_and_bad_ones_are_named(monkeypatch):
    from voxfleet.transports.addresses import parse_advertised, validate_addresses

    assert parse_advertised("203.0.113.7/10.0.0.5") == ("203.0.113.7", "10.0.0.5")
    assert validate_addresses(["203.0.113.7/10.0.0.5", "::1"]) == ["10.0.0.5", "::1"]
    with pytest.raises(ValueError, match=r"'203.0.113.7/fe80::1' maps IPv4 onto IPv6"):
        parse_advertised("203.0.113.7/fe80::1")
    assert "advertised_addresses: 'public/10.0.0.5' is not an IP address" in _config_error(
        monkeypatch, advertised_addresses='["public/10.0.0.5"]')


async def test_nat_mapping_offers_the_public_address_on_a_locally_bound_socket():
    from aiortc import RTCPeerConnection

    from voxfleet.transports.ice import advertise_addresses

    advertise_addresses(["127.0.0.3/127.0.0.1"])  # "public" 127.0.0.3 mapped onto 127.0.0.1
    pc = RTCPeerConnection()
    try:
        pc.addTransceiver("audio")
        await pc.setLocalDescription(await pc.createOffer())
        candidates = [line for line in pc.localDescription.sdp.splitlines() if line.startswith("a=candidate")]
        assert candidates and all(" 127.0.0.3 " in line and "typ host" in line for line in candidates)
        assert "c=IN IP4 127.0.0.3" in pc.localDescription.sdp
        connection = pc.getTransceivers()[0].sender.transport.transport._connection  # aioice, for the socket
        assert {p.transport.get_extra_info("sockname")[0] for p in connection._protocols} == {"127.0.0.1"}
    finally:
        await pc.close()
        advertise_addresses(["127.0.0.1"])
