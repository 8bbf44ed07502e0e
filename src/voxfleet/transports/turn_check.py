"""Check a TURN server the way a bot will use it: allocate a relay with real credentials.

A TURN server that refuses our credentials (a shared secret that does not match coturn's
``static-auth-secret``, a credential past its expiry) or does not answer makes relayed calls
fail much later and far less clearly, as an ICE failure in someone's browser. The control plane
runs this once at start for every configured TURN server and logs the outcome.
"""

from __future__ import annotations

import asyncio
import ssl

from aioice import stun, turn

from voxfleet.exceptions import TurnCheckFailed
from voxfleet.transports.turn import IceUrl, credential_expiry


class _Probe(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.closed = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


def _shown(url: IceUrl) -> str:
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{url.scheme}:{host}:{url.port}?transport={url.transport}"


async def check_turn(url: IceUrl, username: str, credential: str, *, timeout: float = 5.0,
                     now: float | None = None) -> tuple[str, int]:
    """Allocate (and release) one relay on the TURN server; return the relayed address.

    Raises TurnCheckFailed with the reason: credentials refused (and why they may be), no
    answer, or the server cannot be reached.
    """
    if not url.is_turn:
        raise ValueError(f"{_shown(url)} is not a TURN URL")
    context: ssl.SSLContext | None = ssl.create_default_context() if url.scheme == "turns" else None
    try:
        transport, probe = await asyncio.wait_for(
            turn.create_turn_endpoint(
                _Probe, server_addr=(url.host, url.port), username=username,
                password=credential, ssl=context, transport=url.transport or "udp",
            ),
            timeout,
        )
    except stun.TransactionFailed as exc:
        code, reason = exc.response.attributes.get("ERROR-CODE", (0, "refused"))
        detail = f"refused the allocation ({code} {reason})"
        if code == 401:
            expiry = credential_expiry(username)
            if expiry is not None and now is not None and expiry <= now:
                detail += f"; the credential expired at {expiry} (now {int(now)})"
            else:
                detail += ("; the credentials are wrong: does turn_secret match the server's "
                           "static-auth-secret (or username/credential its user database)?")
        raise TurnCheckFailed(_shown(url), detail) from None
    except (stun.TransactionTimeout, asyncio.TimeoutError):
        raise TurnCheckFailed(_shown(url), f"no answer within {timeout:.0f}s (server down or port blocked?)") from None
    except (OSError, ssl.SSLError) as exc:
        raise TurnCheckFailed(_shown(url), f"cannot reach it: {exc}") from None
    relayed: tuple[str, int] = transport.get_extra_info("sockname")  # the relayed address
    transport.close()  # deletes the allocation
    try:
        await asyncio.wait_for(asyncio.shield(probe.closed), timeout)
    except asyncio.TimeoutError:
        pass
    return relayed
