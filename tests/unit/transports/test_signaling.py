"""Signaling checks (transports/signaling.py): offers and candidates, and the ICE candidates a caller
may not point the bot at."""

from __future__ import annotations

import pytest

from voxfleet.config import Settings
from voxfleet.exceptions import InvalidRequest
from voxfleet.transports.signaling import CandidateFilter, check_candidates, check_offer_sdp, ice_server_hosts

SDP = ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
       "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
       "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\n")


def test_offer_checks_accept_a_real_offer_shape():
    check_offer_sdp(SDP, "offer")


@pytest.mark.parametrize("sdp,sdp_type,field,fragment", [
    (SDP, "answer", "type", "must be 'offer'"),
    ("", "offer", "sdp", "must start with 'v=0'"),
    (SDP.replace("a=ice-ufrag:abcd\r\n", ""), "offer", "sdp", "no ICE credentials"),
    (SDP.replace("a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\n", ""), "offer", "sdp", "no DTLS fingerprint"),
    ("v=0\r\n" + "a=x\r\n" * 10000, "offer", "sdp", "longer than"),
])
def test_offer_checks_name_field_and_reason(sdp, sdp_type, field, fragment):
    with pytest.raises(InvalidRequest) as caught:
        check_offer_sdp(sdp, sdp_type)
    assert caught.value.field == field
    assert fragment in str(caught.value)
    assert str(caught.value).startswith(f"{field}: ")


def test_candidate_checks():
    check_candidates([{"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 54321 typ host"}, {"candidate": ""}])
    with pytest.raises(InvalidRequest, match=r"candidates\[1\]\.candidate"):
        check_candidates([{"candidate": ""}, {"candidate": "candidate:zzz"}])


DEFAULT = CandidateFilter(Settings().ice_candidate_deny)


@pytest.mark.parametrize("address,allowed", [
    ("203.0.113.7", True), ("192.168.1.20", True), ("10.1.2.3", True), ("2001:db8::1", True),
    ("a1b2c3.local", True),  # an mDNS name of a browser's host candidate
    ("127.0.0.1", False), ("127.9.9.9", False), ("::1", False), ("169.254.169.254", False),
    ("fe80::1", False), ("0.0.0.0", False), ("224.0.0.251", False), ("255.255.255.255", False),
])
def test_default_denies_loopback_link_local_multicast_and_reserved(address, allowed):
    assert DEFAULT.allows(address) is allowed
    line = f"candidate:1 1 udp 2130706431 {address} 50000 typ host"
    assert DEFAULT.allows_line(line) is allowed


def test_the_offer_loses_only_its_denied_candidate_lines():
    sdp = ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
           "a=candidate:1 1 udp 2130706431 192.0.2.2 40000 typ host\r\n"
           "a=candidate:2 1 udp 2130706431 169.254.169.254 40001 typ host\r\n"
           "a=end-of-candidates\r\n")
    kept, dropped = DEFAULT.offer(sdp)
    assert dropped == 1 and "169.254.169.254" not in kept and "192.0.2.2 40000" in kept
    assert kept.endswith("a=end-of-candidates\r\n")
    trickled = [{"candidate": "candidate:3 1 udp 1 127.0.0.1 9 typ host", "sdp_mid": "0", "sdp_mline_index": 0},
                {"candidate": "", "sdp_mid": "0", "sdp_mline_index": 0}]
    assert DEFAULT.trickled(trickled) == ([trickled[1]], 1)


def test_an_operator_may_deny_more_or_nothing_and_bad_networks_are_named():
    assert not CandidateFilter(["10.0.0.0/8"]).allows("10.4.5.6")
    assert CandidateFilter([]).allows("127.0.0.1")
    with pytest.raises(InvalidRequest):
        CandidateFilter(["not-a-network"])
    with pytest.raises(ValueError, match="not a network: 'nope'"):
        Settings(ice_candidate_deny=["nope"])


def test_the_operators_own_turn_servers_are_allowed_even_on_loopback():
    hosts = ice_server_hosts(["turn:127.0.0.1:3478?transport=udp", "turns:turn.example.org:5349",
                              "stun:[::1]:3478", "stun:stun.example.net"])
    assert hosts == {"127.0.0.1", "turn.example.org", "::1", "stun.example.net"}
    allowed = CandidateFilter(Settings().ice_candidate_deny, hosts)
    assert allowed.allows("127.0.0.1") and allowed.allows("::1") and not allowed.allows("127.0.0.2")
