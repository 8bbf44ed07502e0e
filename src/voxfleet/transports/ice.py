"""ICE host-candidate addresses a bot (or a client of ours) offers.

aioice gathers host candidates from every interface but skips 127.0.0.1, and has no setting
for it. A bot must be able to offer exactly the addresses the operator chose (loopback for local
use and tests, the LAN/public address in production), so :func:`advertise_addresses` replaces
aioice's module-level address lookup. It is called explicitly at process start (bot host,
bench/test client), never at import.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import aioice.ice

_original_get_host_addresses = aioice.ice.get_host_addresses


def validate_addresses(addresses: Sequence[str]) -> list[str]:
    """Return the addresses as strings; raise ValueError naming the first bad one."""
    out = []
    for address in addresses:
        try:
            out.append(str(ipaddress.ip_address(address)))
        except ValueError:
            raise ValueError(f"advertised_addresses: {address!r} is not an IP address") from None
    return out


def advertise_addresses(addresses: Sequence[str]) -> None:
    """Make ICE offer `addresses` as host candidates; empty: all interfaces plus loopback."""
    chosen = validate_addresses(addresses)

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        if chosen:
            return [
                a for a in chosen
                if (use_ipv4 and ipaddress.ip_address(a).version == 4)
                or (use_ipv6 and ipaddress.ip_address(a).version == 6)
            ]
        found = _original_get_host_addresses(use_ipv4, use_ipv6)
        return (["127.0.0.1"] if use_ipv4 else []) + found

    aioice.ice.get_host_addresses = host_addresses
