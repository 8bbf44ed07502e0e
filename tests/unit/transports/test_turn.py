"""TURN REST API credentials and ICE URLs (transports/turn.py)."""

from __future__ import annotations

import pytest

from voxfleet.transports.turn import (
    SessionIceServers,
    credential_expiry,
    mint_turn_credential,
    parse_ice_url,
    turn_rest_credential,
)


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
