"""ICE host-candidate addresses a bot (or a client of ours) offers.

aioice gathers host candidates from every interface but skips 127.0.0.1, and has no setting
for it. A bot must be able to offer exactly the addresses the operator chose (loopback for local
use and tests, the LAN/public address in production), so :func:`advertise_addresses` replaces
aioice's module-level address lookup. It is called explicitly at process start (bot host,
bench/test client), never at import.

Behind 1:1 NAT (a cloud VM whose interface has a private address and whose public address is
mapped onto it) an entry ``"PUBLIC/LOCAL"`` — coturn's ``external-ip`` syntax — binds the host
candidate to LOCAL and offers PUBLIC in the SDP. aiortc turns each aioice candidate into an
SDP candidate with its module-level ``candidate_from_aioice``; for mapped addresses that
conversion is wrapped, so only what is advertised changes, never the socket.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import aioice.ice
import aiortc.rtcicetransport

from voxfleet.transports.addresses import parse_advertised, validate_addresses

_original_get_host_addresses = aioice.ice.get_host_addresses
_original_candidate_from_aioice = aiortc.rtcicetransport.candidate_from_aioice


def advertise_addresses(addresses: Sequence[str]) -> None:
    """Make ICE offer `addresses` as host candidates; empty: all interfaces plus loopback.
    ``"PUBLIC/LOCAL"`` entries bind LOCAL and advertise PUBLIC."""
    chosen = validate_addresses(addresses)
    public_for = {local: public for public, local in map(parse_advertised, addresses) if public != local}

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        if chosen:
            return [
                a for a in chosen
                if (use_ipv4 and ipaddress.ip_address(a).version == 4)
                or (use_ipv6 and ipaddress.ip_address(a).version == 6)
            ]
        found = _original_get_host_addresses(use_ipv4, use_ipv6)
        return (["127.0.0.1"] if use_ipv4 else []) + found

    aioice.ice.get_host_addresses = host_addresses

    def candidate_from_aioice(x: aioice.Candidate) -> aiortc.RTCIceCandidate:  # aiortc's own signature
        converted = _original_candidate_from_aioice(x)
        if converted.type == "host" and converted.ip in public_for:
            converted.ip = public_for[converted.ip]
        return converted

    aiortc.rtcicetransport.candidate_from_aioice = (
        candidate_from_aioice if public_for else _original_candidate_from_aioice
    )
