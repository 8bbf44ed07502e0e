"""Keep a bot's media sockets inside a configured UDP port range, so a firewall can open exactly it.

aioice (under aiortc) binds every host candidate with ``loop.create_datagram_endpoint(...,
local_addr=(address, 0))`` and the TURN client with ``remote_addr=server`` only, so the kernel
picks any ephemeral port; neither library has a port setting. A bot process hosts one session
and nothing else, so instead of patching aioice, the bot host runs its event loop from
:func:`loop_factory`: a selector loop whose ``create_datagram_endpoint`` binds each UDP socket
that asks for "any port" to a free port of the range. Ports are claimed by ``bind()`` itself, so
bots (separate processes) need no coordination: a port in use is skipped. When every port of
the range is taken, :class:`~voxfleet.exceptions.MediaPortsExhausted` says so, naming the setting.

It is explicit: only a process that chooses this loop factory at start (the bot host, given
``media_ports``) is affected.
"""

from __future__ import annotations

import asyncio
import errno
import random
import socket
from collections.abc import Callable
from typing import Any

from voxfleet.exceptions import MediaPortsExhausted


def parse_port_range(text: str) -> tuple[int, int]:
    """``"40000-40999"`` -> (40000, 40999); ValueError names the value and what is wrong."""
    start, sep, end = text.strip().partition("-")
    if not sep or not start.strip().isdigit() or not end.strip().isdigit():
        raise ValueError(f"{text!r} is not a port range; expected 'FIRST-LAST', e.g. '40000-40999'")
    first, last = int(start), int(end)
    for port in (first, last):
        if not 1 <= port <= 65535:
            raise ValueError(f"{text!r}: port {port} is outside 1-65535")
    if first > last:
        raise ValueError(f"{text!r}: the first port {first} is above the last {last}")
    return first, last


def bind_udp_in_range(host: str, first: int, last: int, *, start_at: int | None = None) -> socket.socket:
    """A UDP socket bound to `host` on a free port of [first, last].

    Tries every port once, beginning at `start_at` (default: a random port, so concurrent bots
    rarely contend for the same one) and wrapping around.
    """
    family, _, _, _, address = socket.getaddrinfo(host, 0, type=socket.SOCK_DGRAM, flags=socket.AI_NUMERICHOST)[0]
    size = last - first + 1
    offset = (start_at - first) % size if start_at is not None else random.randrange(size)
    for i in range(size):
        port = first + (offset + i) % size
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((address[0], port, *address[2:]))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                continue
            raise
        sock.setblocking(False)
        return sock
    raise MediaPortsExhausted(first, last, host)


class PortRangeEventLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose UDP endpoints that ask for any port get one of [first, last]."""

    def __init__(self, first: int, last: int) -> None:
        super().__init__()
        self.media_ports = (first, last)

    async def create_datagram_endpoint(
        self, protocol_factory: Callable[[], Any], local_addr: Any = None, remote_addr: Any = None, **kwargs: Any
    ) -> tuple[asyncio.DatagramTransport, Any]:
        first, last = self.media_ports
        if kwargs.get("sock") is not None or kwargs.get("family") == socket.AF_UNIX:
            return await super().create_datagram_endpoint(protocol_factory, local_addr, remote_addr, **kwargs)
        if local_addr is not None and remote_addr is None and local_addr[1] == 0:
            # A host candidate: bind it ourselves, hand asyncio the bound socket.
            sock = bind_udp_in_range(local_addr[0], first, last)
            return await super().create_datagram_endpoint(protocol_factory, sock=sock)
        if local_addr is None and remote_addr is not None:
            # A client socket (the TURN client): bind the local end inside the range too.
            infos = await self.getaddrinfo(remote_addr[0], remote_addr[1], type=socket.SOCK_DGRAM)
            wildcard = "::" if infos[0][0] == socket.AF_INET6 else "0.0.0.0"
            size = last - first + 1
            offset = random.randrange(size)
            for i in range(size):
                port = first + (offset + i) % size
                try:
                    return await super().create_datagram_endpoint(
                        protocol_factory, local_addr=(wildcard, port), remote_addr=remote_addr, **kwargs
                    )
                except OSError as exc:
                    if exc.errno != errno.EADDRINUSE:
                        raise
            raise MediaPortsExhausted(first, last, wildcard)
        return await super().create_datagram_endpoint(protocol_factory, local_addr, remote_addr, **kwargs)


def loop_factory(media_ports: tuple[int, int] | None) -> Callable[[], asyncio.AbstractEventLoop]:
    """The event loop factory for a bot process: ports confined to `media_ports`, or the default."""
    if media_ports is None:
        return asyncio.new_event_loop
    first, last = media_ports
    return lambda: PortRangeEventLoop(first, last)
