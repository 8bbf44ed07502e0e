"""Checks on SmallWebRTC signaling input, made at the edge before anything reaches a bot (pure)."""

from __future__ import annotations

import ipaddress
from typing import Any

from aiortc.sdp import SessionDescription

from voxfleet.exceptions import InvalidRequest

MAX_SDP_BYTES = 32 * 1024


def check_offer_sdp(sdp: str, sdp_type: str) -> None:
    """Raise InvalidRequest naming the field unless `sdp` is a parseable offer with media."""
    if sdp_type != "offer":
        raise InvalidRequest("type", sdp_type, "must be 'offer'")
    if len(sdp) > MAX_SDP_BYTES:
        raise InvalidRequest("sdp", f"<{len(sdp)} bytes>", f"is longer than {MAX_SDP_BYTES} bytes")
    if not sdp.lstrip().startswith("v=0"):
        raise InvalidRequest("sdp", sdp, "is not an SDP session description (must start with 'v=0')")
    try:
        description = SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc raises assorted errors (even AssertionError) on bad SDP
        raise InvalidRequest("sdp", sdp, f"cannot be parsed: {type(exc).__name__} {exc}".strip()) from None
    if not description.media:
        raise InvalidRequest("sdp", sdp, "has no media section (m=) to answer")
    for media in description.media:
        if media.kind in ("audio", "video") and (media.dtls is None or not media.dtls.fingerprints):
            raise InvalidRequest("sdp", sdp, f"{media.kind} section has no DTLS fingerprint")
        if media.ice is None or not media.ice.usernameFragment:
            raise InvalidRequest("sdp", sdp, f"{media.kind} section has no ICE credentials (a=ice-ufrag)")


def check_candidates(candidates: list[dict[str, Any]]) -> None:
    """Each trickled candidate must be an SDP 'candidate:' line (or empty: end of candidates)."""
    from aiortc.sdp import candidate_from_sdp

    for index, item in enumerate(candidates):
        line = item.get("candidate") or ""
        if not line:
            continue
        text = line.split(":", 1)[1] if line.startswith("candidate:") else line
        try:
            candidate_from_sdp(text)
        except Exception:
            raise InvalidRequest(f"candidates[{index}].candidate", line, "is not an ICE candidate line") from None


class CandidateFilter:
    """Which ICE candidates of a caller the bot may use: any address outside the denied networks
    (an mDNS ``.local`` name or other host name is kept; the bot resolves it), and always the
    hosts of the operator's own STUN/TURN servers (``allow``: a relayed candidate comes from them,
    even when they run on loopback)."""

    def __init__(self, deny: list[str], allow: set[str] | None = None) -> None:
        try:
            self.deny = [ipaddress.ip_network(net, strict=False) for net in deny]
        except ValueError as exc:
            raise InvalidRequest("ice_candidate_deny", deny, f"is not a list of networks: {exc}") from None
        self.allow = set(allow or ())

    def allows(self, address: str) -> bool:
        address = address.strip("[]")
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return True  # a host name, not an address
        if address in self.allow:
            return True
        return not any(ip.version == net.version and ip in net for net in self.deny)

    def allows_line(self, line: str) -> bool:
        """``candidate:<foundation> <component> <transport> <priority> <address> <port> typ ...``"""
        fields = line.removeprefix("a=").removeprefix("candidate:").split()
        return len(fields) < 5 or self.allows(fields[4])

    def offer(self, sdp: str) -> tuple[str, int]:
        """The offer without its denied ``a=candidate`` lines, and how many were dropped."""
        lines = sdp.splitlines(keepends=True)
        kept = [line for line in lines if not line.startswith("a=candidate:") or self.allows_line(line.strip())]
        return "".join(kept), len(lines) - len(kept)

    def trickled(self, candidates: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
        kept = [c for c in candidates if not c.get("candidate") or self.allows_line(str(c["candidate"]))]
        return kept, len(candidates) - len(kept)


def ice_server_hosts(urls: list[str]) -> set[str]:
    """The hosts of ``stun:``/``turn:``/``turns:`` URLs (``turn:host:port?transport=udp``)."""
    hosts = set()
    for url in urls:
        rest = url.partition(":")[2].partition("?")[0]  # host[:port]
        if rest.startswith("["):  # [IPv6]:port
            hosts.add(rest[1:].partition("]")[0])
        else:
            hosts.add(rest.rpartition(":")[0] if ":" in rest else rest)
    return hosts
