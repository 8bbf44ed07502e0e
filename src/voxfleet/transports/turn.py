"""STUN/TURN servers for one session: static credentials, or short-lived ones minted per session.

Short-lived credentials follow the TURN REST API scheme (draft-uberti-behave-turn-rest) that
coturn implements with ``use-auth-secret`` / ``static-auth-secret``::

    username   = "<expiry unix time>:<session id>"
    credential = base64(HMAC-SHA1(shared secret, username))

The TURN server recomputes the credential from the username and its copy of the secret, and
refuses it once the expiry has passed. Clients and bots only ever see minted credentials; the
long-term secret stays in the control plane.

Pure: no I/O, the clock is an argument. The control plane hands ``for_session(...)`` to the
client in ``iceConfig`` and, with the session, to the bot process.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

_ICE_URL = re.compile(
    r"^(?P<scheme>stuns?|turns?):(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::(?P<port>\d{1,5}))?"
    r"(?:\?transport=(?P<transport>udp|tcp))?$"
)
DEFAULT_PORTS = {"stun": 3478, "turn": 3478, "stuns": 5349, "turns": 5349}


@dataclass(frozen=True)
class IceUrl:
    """One parsed ``stun:``/``turn:`` URL (RFC 7064 / RFC 7065)."""

    scheme: str
    host: str
    port: int
    transport: str | None  # turn(s) only: "udp" or "tcp"

    @property
    def is_turn(self) -> bool:
        return self.scheme in ("turn", "turns")


def parse_ice_url(url: str) -> IceUrl:
    """Parse a STUN/TURN URL; raise ValueError naming the URL and what is wrong with it."""
    match = _ICE_URL.match(url)
    if match is None:
        raise ValueError(
            f"{url!r} is not a STUN/TURN URL (expected e.g. 'stun:host:3478' or "
            "'turn:host:3478?transport=udp')"
        )
    scheme, host = match["scheme"], match["host"].strip("[]")
    port = int(match["port"]) if match["port"] else DEFAULT_PORTS[scheme]
    if not 1 <= port <= 65535:
        raise ValueError(f"{url!r}: port {port} is out of range 1-65535")
    transport = match["transport"]
    if scheme.startswith("stun") and transport is not None:
        raise ValueError(f"{url!r}: a STUN URL takes no ?transport=")
    if scheme == "turn":
        transport = transport or "udp"
    elif scheme == "turns":
        transport = transport or "tcp"
    return IceUrl(scheme, host, port, transport)


@dataclass(frozen=True)
class TurnCredential:
    username: str
    credential: str


def turn_rest_username(expires_at: int, user: str) -> str:
    """The TURN REST API username: expiry first, so the server can check it without state."""
    if ":" in user:
        raise ValueError(f"TURN REST user part must not contain ':' (got {user!r})")
    return f"{expires_at}:{user}"


def turn_rest_credential(secret: str, username: str) -> str:
    """base64(HMAC-SHA1(secret, username)), as coturn's static-auth-secret expects."""
    if not secret:
        raise ValueError("TURN shared secret is empty")
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def mint_turn_credential(secret: str, user: str, *, now: float, ttl_s: float) -> TurnCredential:
    """A credential for `user` (the session id) valid until `now + ttl_s`."""
    if ttl_s <= 0:
        raise ValueError(f"TURN credential lifetime must be positive (got {ttl_s})")
    username = turn_rest_username(int(now + ttl_s), user)
    return TurnCredential(username, turn_rest_credential(secret, username))


def credential_expiry(username: str) -> int | None:
    """The expiry encoded in a TURN REST username, or None if it has none."""
    head, _, _ = username.partition(":")
    return int(head) if head.isdigit() else None


class SessionIceServers:
    """The ICE servers of one session, as RTCIceServer-shaped dicts (``urls``, ``username``,
    ``credential``) — the format of the browser's RTCConfiguration and of aiortc.

    `servers` are the configured ones; a server with TURN URLs and no static username gets a
    credential minted from `shared_secret` for each session.
    """

    def __init__(
        self,
        servers: Sequence[dict[str, Any]],
        *,
        shared_secret: str | None = None,
        ttl_s: float = 86400.0,
        clock: Callable[[], float],
    ) -> None:
        self.servers = [dict(s) for s in servers]
        self._secret = shared_secret
        self.ttl_s = ttl_s
        self.clock = clock
        for server in self.servers:
            if self.mints_for(server) and not shared_secret:
                raise ValueError(f"TURN server {server['urls']} has no credentials and no shared secret")

    @staticmethod
    def mints_for(server: dict[str, Any]) -> bool:
        """True when the server has TURN URLs and no static credentials: we mint them."""
        urls = server["urls"] if isinstance(server["urls"], list) else [server["urls"]]
        return server.get("username") is None and any(parse_ice_url(u).is_turn for u in urls)

    def for_session(self, session_id: str) -> list[dict[str, Any]]:
        now = self.clock()
        out = []
        for server in self.servers:
            if self.mints_for(server):
                assert self._secret is not None
                minted = mint_turn_credential(self._secret, session_id, now=now, ttl_s=self.ttl_s)
                server = {**server, "username": minted.username, "credential": minted.credential}
            out.append(server)
        return out

    def turn_urls(self) -> list[tuple[IceUrl, dict[str, Any]]]:
        """Every TURN URL with the server entry it belongs to (for start-up checks)."""
        out = []
        for server in self.servers:
            urls = server["urls"] if isinstance(server["urls"], list) else [server["urls"]]
            out += [(parsed, server) for parsed in map(parse_ice_url, urls) if parsed.is_turn]
        return out

    def __repr__(self) -> str:
        return f"SessionIceServers({len(self.servers)} servers, secret={'set' if self._secret else 'none'})"
