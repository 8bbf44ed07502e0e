"""Checks on SmallWebRTC signaling input, made at the edge before anything reaches a bot (pure)."""

from __future__ import annotations

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
