"""API keys at the edge: who may call what.

- start routes (``POST /start``, ``POST /v1/public/{agent}/start``): a public key for agents
  marked public, or a private key;
- session signaling (``/sessions/{id}/api/offer``): the session id itself is the capability
  (122 random bits, handed only to whoever started the session), as in Pipecat Cloud;
- everything else under ``/v1`` and ``/metrics``: private keys only;
- pages, static files, ``/healthz``, ``/livez``, ``/v1/agents`` and the API docs: open.

Keys travel as ``Authorization: Bearer <key>``. Mode ``auto`` checks keys as soon as one exists
(the answer is cached for a few seconds, so ``voxfleet keys create`` takes effect while running).
"""

from __future__ import annotations

import time

from fastapi import Request

from voxfleet.exceptions import Forbidden, Unauthorized
from voxfleet.storage.store import Store

KEYS_EXIST_TTL_S = 5.0


class Auth:
    def __init__(self, store: Store, mode: str, public_agents: set[str]) -> None:
        self.store = store
        self.mode = mode
        self.public_agents = public_agents
        self._keys_exist: tuple[float, bool] = (0.0, False)

    async def enabled(self) -> bool:
        if self.mode != "auto":
            return self.mode == "required"
        checked_at, exist = self._keys_exist
        if time.monotonic() - checked_at > KEYS_EXIST_TTL_S:
            exist = await self.store.count_live_keys() > 0
            self._keys_exist = (time.monotonic(), exist)
        return exist

    async def _key(self, request: Request) -> dict | None:
        if not await self.enabled():
            return None
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if not header:
            raise Unauthorized("Authorization: missing; send 'Authorization: Bearer <API key>'")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized("Authorization: expected 'Bearer <API key>'")
        row = await self.store.verify_key(key.strip())
        if row is None:
            raise Unauthorized("Authorization: not a valid API key (unknown, revoked or mistyped)")
        return row

    async def require_private(self, request: Request) -> None:
        row = await self._key(request)
        if row is not None and row["scope"] != "private":
            raise Forbidden(f"a {row['scope']} key cannot {request.method} {request.url.path}; use a private key")

    async def require_start(self, request: Request, agent: str) -> None:
        row = await self._key(request)
        if row is not None and row["scope"] == "public" and agent not in self.public_agents:
            raise Forbidden(f"agent {agent!r} is not public; starting it needs a private key")
