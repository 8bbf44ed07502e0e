"""Short-lived, single-use tokens that admit one media WebSocket to one session.

A token is ``<session_id>.<expiry>.<nonce>.<mac>``: HMAC-SHA256 over the first three parts with
a secret only the control plane holds. It rides in the TwiML ``<Parameter>`` of a phone call's
stream, or in ``?token=`` / the path / a Bearer header of a generic WebSocket session. Pure: the
clock is injected; the set of used tokens lives here, bounded by their lifetime.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

from voxfleet.exceptions import StreamTokenInvalid


class StreamTokens:
    def __init__(self, secret: bytes, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        if len(secret) < 16:
            raise ValueError("stream token secret must be at least 16 bytes")
        self.secret = secret
        self.ttl_s = ttl_s
        self.clock = clock
        self.used: dict[str, float] = {}  # token mac -> expiry

    def mint(self, session_id: str) -> str:
        expiry = int(self.clock() + self.ttl_s)
        body = f"{session_id}.{expiry}.{secrets.token_urlsafe(9)}"
        return f"{body}.{self._mac(body)}"

    def consume(self, token: object) -> str:
        """Check `token` and use it up; return its session id or raise StreamTokenInvalid."""
        if not token:
            raise StreamTokenInvalid("stream token missing")
        if not isinstance(token, str) or not token.isascii() or len(token) > 256:
            raise StreamTokenInvalid("stream token malformed (not a short ASCII string)")
        parts = token.split(".")
        if len(parts) != 4:
            raise StreamTokenInvalid("stream token malformed")
        session_id, expiry, _nonce, mac = parts
        if not hmac.compare_digest(mac, self._mac(".".join(parts[:3]))):
            raise StreamTokenInvalid("stream token forged or from another server")
        now = self.clock()
        if not expiry.isdigit() or int(expiry) < now:
            raise StreamTokenInvalid("stream token expired")
        self._forget_expired(now)
        if mac in self.used:
            raise StreamTokenInvalid("stream token already used")
        self.used[mac] = int(expiry)
        return session_id

    def _mac(self, body: str) -> str:
        digest = hmac.new(self.secret, body.encode(), hashlib.sha256).digest()[:18]
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def _forget_expired(self, now: float) -> None:
        if len(self.used) > 256:
            self.used = {mac: expiry for mac, expiry in self.used.items() if expiry >= now}
