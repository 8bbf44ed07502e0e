"""Media port ranges (transports/media_ports.py): parsing, binding, the port range event loop (loopback
sockets only)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tests.conftest import free_udp_range
from voxfleet.exceptions import MediaPortsExhausted
from voxfleet.transports.media_ports import PortRangeEventLoop, bind_udp_in_range, parse_port_range


@pytest.mark.parametrize("text, message", [
    ("40000-30000", "the first port 40000 is above the last 30000"),
    ("40000", "is not a port range"),
    ("0-10", "port 0 is outside 1-65535"),
    ("a-b", "is not a port range"),
])
def test_bad_port_ranges_are_named(text, message):
    with pytest.raises(ValueError, match=message) as error:
        parse_port_range(text)
    assert repr(text) in str(error.value)


def test_bind_in_range_skips_ports_in_use_and_reports_exhaustion():
    first, last = free_udp_range(3)
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", first))
    socks = [taken]
    try:
        for _ in range(2):
            socks.append(bind_udp_in_range("127.0.0.1", first, last, start_at=first))
        assert sorted(s.getsockname()[1] for s in socks) == [first, first + 1, first + 2]
        with pytest.raises(MediaPortsExhausted) as error:
            bind_udp_in_range("127.0.0.1", first, last)
        assert str(error.value) == (f"media_ports: all 3 UDP ports of {first}-{last} are in use on 127.0.0.1; "
                                    "widen the range or admit fewer sessions")
    finally:
        for sock in socks:
            sock.close()


def test_aioice_candidates_come_from_the_range_with_the_port_range_loop():
    import aioice

    first, last = free_udp_range(4)

    async def gather() -> list[int]:
        connection = aioice.Connection(ice_controlling=True, components=1)
        original = aioice.ice.get_host_addresses
        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
        try:
            await connection.gather_candidates()
        finally:
            aioice.ice.get_host_addresses = original
        ports = [c.port for c in connection.local_candidates]
        await connection.close()
        return ports

    runner = asyncio.Runner(loop_factory=lambda: PortRangeEventLoop(first, last))
    with runner:
        ports = runner.run(gather())
    assert ports and all(first <= p <= last for p in ports)
