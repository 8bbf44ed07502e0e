"""API keys at the edge: who may call what, and who a caller is.

- start routes (``POST /start``, ``POST /v1/public/{agent}/start``): nothing for agents marked
  public (the website's demo starts them); a private key for the others;
- session signaling (``/sessions/{id}/api/offer``): the session id itself is the capability
  (122 random bits, handed only to whoever started the session), as in Pipecat Cloud;
- everything else under ``/v1``, ``/metrics`` and ``/healthz``'s details: private keys only;
- pages, static files, ``/healthz``'s ready-or-not, ``/livez``, ``/v1/agents`` and the API docs: open.

Keys travel as ``Authorization: Bearer <key>``; a key that is sent is always checked, even where
none is needed (a mistyped key is told, not ignored). Mode ``required`` (the default) checks
keys whether or not one exists: revoking the last key closes the private API, it never opens it.
Mode ``off`` (``--dev``) checks nobody. On first start without a private key the server creates
one, stores only its hash and prints it once (``ensure_admin_key``).

A caller's identity for per-client bounds (``scheduler.client_bounds``) is its public key
(``key:<id>``) if it sent one, else its address (``addr:<ip>``, as uvicorn reports it: behind a
trusted proxy, the forwarded one). A private key is the operator's own: it is not bounded.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from voxfleet.exceptions import Forbidden, Unauthorized
from voxfleet.storage.store import Store

ADMIN_KEY_NAME = "admin (created at first start)"


class Auth:
    def __init__(self, store: Store, mode: str, public_agents: set[str]) -> None:
        self.store = store
        self.mode = mode
        self.public_agents = public_agents

    async def enabled(self) -> bool:
        return self.mode != "off"

    async def _key(self, request: Request) -> dict[str, Any] | None:
        """The row of the key the request sent; None if it sent none (or keys are off)."""
        if self.mode == "off":
            return None
        header = request.headers.get("authorization", "")
        if not header:
            return None
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized("Authorization: expected 'Bearer <API key>'")
        row = await self.store.verify_key(key.strip())
        if row is None:
            raise Unauthorized("Authorization: not a valid API key (unknown, revoked or mistyped)")
        return row

    async def private_key(self, request: Request) -> dict[str, Any] | None:
        """The private key's row; raises unless the request carries one (None: keys are off)."""
        row = await self._key(request)
        if self.mode == "off":
            return None
        if row is None:
            raise Unauthorized("Authorization: missing; send 'Authorization: Bearer <private API key>' "
                               "(voxfleet keys create --scope private)")
        if row["scope"] != "private":
            raise Forbidden(f"a {row['scope']} key cannot {request.method} {request.url.path}; use a private key")
        return row

    async def require_private(self, request: Request) -> None:
        await self.private_key(request)

    async def is_private(self, request: Request) -> bool:
        """True if the request carries a valid private key (or keys are off); never raises for a
        missing key, only for a bad one."""
        if self.mode == "off":
            return True
        row = await self._key(request)
        return row is not None and row["scope"] == "private"

    async def require_start(self, request: Request, agent: str) -> str | None:
        """Check the request may start a session of `agent`; return the caller's identity for
        per-client bounds, or None for a trusted caller (a private key, or keys off)."""
        row = await self._key(request)
        if self.mode == "off" or (row is not None and row["scope"] == "private"):
            return None
        if agent not in self.public_agents:
            if row is None:
                raise Unauthorized(f"agent {agent!r} is not public; starting it needs a private API key "
                                   "(Authorization: Bearer <key>)")
            raise Forbidden(f"agent {agent!r} is not public; starting it needs a private key")
        return client_of(request, row)


def client_of(request: Request, row: dict[str, Any] | None) -> str:
    if row is not None:
        return f"key:{row['id']}"
    return f"addr:{request.client.host if request.client else 'unknown'}"


async def ensure_admin_key(store: Store) -> str | None:
    """Create a private key if no live one exists; return it (to show once), else None."""
    if any(k["scope"] == "private" and k["revokedAt"] is None for k in await store.list_keys()):
        return None
    key, _row = await store.create_key("private", ADMIN_KEY_NAME)
    return key
