"""What running on a VM needs from the control plane: HTTPS and proxy options for uvicorn, the
ICE servers of each session (TURN credentials minted per session) and a start-up check of the
TURN servers (the liveness route is in ``control/ops.py``). See docs/deploy.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from voxfleet.config import Settings
from voxfleet.exceptions import TurnCheckFailed
from voxfleet.transports.turn import SessionIceServers

log = logging.getLogger(__name__)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn.Config keyword arguments for TLS and for running behind a reverse proxy."""
    options: dict[str, Any] = {
        "proxy_headers": settings.proxy_headers,
        "forwarded_allow_ips": settings.forwarded_allow_ips,
    }
    if settings.https:
        options.update(ssl_certfile=str(settings.ssl_certfile), ssl_keyfile=str(settings.ssl_keyfile))
    return options


def session_ice_servers(settings: Settings) -> SessionIceServers:
    """The configured STUN/TURN servers, with TURN credentials minted per session when
    `turn_secret` is set. The same object shape goes to the client (`iceConfig`) and the bot."""
    return SessionIceServers(
        [s.model_dump(include={"urls", "username", "credential"}, exclude_none=True) for s in settings.ice_servers],
        shared_secret=settings.turn_secret,
        ttl_s=settings.turn_ttl_s,
        clock=time.time,
    )


async def check_turn_servers(ice: SessionIceServers, timeout: float = 5.0) -> list[TurnCheckFailed]:
    """Allocate a relay on every configured TURN server with the credentials a session would
    get; log each outcome and return the failures (start-up goes on: direct calls still work)."""
    from voxfleet.transports.turn_check import check_turn

    servers = ice.turn_urls()
    probe = ice.for_session("voxfleet-startup-check")
    minted = {id(orig): given for orig, given in zip(ice.servers, probe)}
    results = await asyncio.gather(*(
        check_turn(url, minted[id(server)]["username"], minted[id(server)]["credential"],
                   timeout=timeout, now=ice.clock())
        for url, server in servers
    ), return_exceptions=True)
    failures = []
    for (url, _), result in zip(servers, results):
        if isinstance(result, TurnCheckFailed):
            log.error("%s; relayed calls through it will fail", result)
            failures.append(result)
        elif isinstance(result, BaseException):
            log.error("TURN server %s:%d: check failed unexpectedly", url.host, url.port, exc_info=result)
        else:
            log.info("TURN server %s:%d (%s): allocation ok, relayed address %s:%d",
                     url.host, url.port, url.transport, *result)
    return failures
