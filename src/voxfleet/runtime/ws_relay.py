"""The bot's end of a relayed media WebSocket.

The control plane holds the caller's WebSocket (Twilio's media stream, or a generic Pipecat
client) and relays each frame over the bot's control link. Here those frames become the ASGI
messages of a real ``starlette.websockets.WebSocket`` (the class FastAPI hands Pipecat's own
runner), so the unchanged bot gets ``WebSocketRunnerArguments`` and Pipecat's
``FastAPIWebsocketTransport`` and serializers work exactly as under Pipecat's runner.

Every relayed frame carries the sender's ``time.monotonic()`` (one clock for all processes of
a machine), so each side measures the relay's added latency per frame.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from typing import Any

from starlette.websockets import WebSocket

from voxfleet.runtime.messages import Message, WsClose, WsIn, WsOpen, WsOut
from voxfleet.runtime.streams import LatencySamples, clock_id

Send = Callable[[Message], None]  # BotSession.emit
MAX_INBOX = 1500  # caller frames the bot has not read yet (30 s of 20 ms audio); older ones are dropped


class RelayedWebSocket:
    def __init__(self, send: Send, request: WsOpen) -> None:
        self._send = send
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._inbox.put_nowait({"type": "websocket.connect"})
        self.closed_by_bot = False
        self.closed_by_peer: int | None = None
        self.inbound_ms = LatencySamples()
        self.dropped = 0  # caller frames dropped because the bot did not read them
        self.same_clock = request.clock == clock_id()  # else relay latency is not measured
        client = request.client or ["0.0.0.0", 0]
        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "scheme": request.scheme,
            "path": request.path,
            "raw_path": request.path.encode(),
            "query_string": b"",
            "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in request.headers],
            "client": (client[0], int(client[1])),
            "server": None,
            "subprotocols": [],
            "state": {},
        }
        self.websocket = WebSocket(scope, self._receive, self._asgi_send)

    # -- from the control plane -------------------------------------------------------------
    def deliver(self, message: WsIn) -> None:
        if message.at is not None and self.same_clock:
            self.inbound_ms.add((time.monotonic() - message.at) * 1000)
        if self._inbox.qsize() >= MAX_INBOX:  # the bot is not reading: stale audio is worth nothing
            self._inbox.get_nowait()
            self.dropped += 1
        if message.bytes is not None:
            self._inbox.put_nowait({"type": "websocket.receive", "bytes": base64.b64decode(message.bytes)})
        else:
            self._inbox.put_nowait({"type": "websocket.receive", "text": message.text or ""})

    def peer_closed(self, code: int) -> None:
        self.closed_by_peer = code
        self._inbox.put_nowait({"type": "websocket.disconnect", "code": code})

    # -- ASGI, for Starlette's WebSocket ------------------------------------------------------
    async def _receive(self) -> dict[str, Any]:
        return await self._inbox.get()

    async def _asgi_send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "websocket.send":
            at = time.monotonic() if self.same_clock else None
            if message.get("bytes") is not None:
                self._send(WsOut(bytes=base64.b64encode(message["bytes"]).decode(), at=at))
            else:
                self._send(WsOut(text=message.get("text") or "", at=at))
        elif kind == "websocket.close" and not self.closed_by_bot:
            self.closed_by_bot = True
            self._send(WsClose(code=message.get("code", 1000), reason=message.get("reason") or ""))
        # websocket.accept: the control plane accepted the caller's socket already

    def stats(self) -> dict[str, Any]:
        """Inbound relay latency (control plane received -> bot delivered), ms; frames dropped."""
        return {**self.inbound_ms.summary(), "dropped": self.dropped}
