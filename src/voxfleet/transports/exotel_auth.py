"""How voxfleet knows a request or a media stream comes from Exotel, the way Exotel documents it.

Exotel signs nothing: its Voicebot applet has no webhook signature like Twilio's. Exotel's
"Working with the Stream and Voicebot Applet" names two ways to authenticate its connections:
IP allow-listing (arranged with Exotel; a firewall's job, not voxfleet's) and **Basic auth**:
the applet's URL carries credentials, ``wss://<API_KEY>:<API_TOKEN>@host/path``, sent as
``Authorization: Basic base64(API_KEY:API_TOKEN)`` on the WebSocket handshake. The same
user-info in the applet's ``https://`` URLs (the dynamic stream URL, Passthru, Greeting text from
a URL) is sent the same way by Exotel's HTTP client. voxfleet checks that header, on every Exotel
route and stream handshake, against ``EXOTEL_API_KEY`` and ``EXOTEL_API_TOKEN``; with either
unset, every Exotel request and stream is refused.

Basic auth has no timestamp or nonce, so a request cannot expire and a replay of one carries
the same valid header: what bounds a replay is elsewhere. The stream URL handed to Exotel holds
a single-use, short-lived token (``transports/stream_tokens.py``): an expired or reused one is
refused at the handshake; a replayed dynamic-URL request maps to the call's one session
(``control/calls.py``) and never starts a second.

Pure: no I/O, nothing read from the environment (the settings are passed in).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ExotelCredentials:
    """The API key and token of an Exotel account (Exotel's dashboard: API settings)."""

    api_key: str
    api_token: str = field(repr=False)

    def authorization(self) -> str:
        """The ``Authorization`` header Exotel sends for a URL carrying these credentials."""
        return basic_authorization(self.api_key, self.api_token)


def basic_authorization(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def authorization_problem(header: str | None, credentials: ExotelCredentials | None) -> str | None:
    """Why a request or stream handshake with this ``Authorization`` header is not Exotel's,
    or None when it carries the configured credentials."""
    if credentials is None:
        return "EXOTEL_API_KEY and EXOTEL_API_TOKEN are not configured"
    if not header:
        return "Authorization header missing (the applet's URL must carry KEY:TOKEN@)"
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return f"Authorization is not Basic (got scheme {scheme[:20]!r})"
    try:
        user, colon, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, ValueError):
        return "Basic credentials malformed (not base64 of user:password)"
    if not colon:
        return "Basic credentials malformed (not base64 of user:password)"
    # both compared, in constant time, whatever the first shows
    key_ok = hmac.compare_digest(user.encode(), credentials.api_key.encode())
    token_ok = hmac.compare_digest(password.encode(), credentials.api_token.encode())
    if not (key_ok and token_ok):
        return "Basic credentials are not EXOTEL_API_KEY:EXOTEL_API_TOKEN"
    return None
