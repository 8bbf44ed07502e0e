"""The addresses bots advertise as ICE host candidates, parsed (pure; see ``ice.py``).

An entry is an IP address, or ``"PUBLIC/LOCAL"`` behind 1:1 NAT (coturn's ``external-ip``
syntax): bind LOCAL, offer PUBLIC.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence


def parse_advertised(entry: str) -> tuple[str, str]:
    """``"PUBLIC/LOCAL"`` -> (PUBLIC, LOCAL); a plain address is both. ValueError names the entry."""
    public, _, local = entry.partition("/")
    try:
        advertised = ipaddress.ip_address(public.strip())
        bound = ipaddress.ip_address(local.strip()) if local else advertised
    except ValueError:
        raise ValueError(f"advertised_addresses: {entry!r} is not an IP address "
                         "(or 'PUBLIC/LOCAL' for 1:1 NAT)") from None
    if advertised.version != bound.version:
        raise ValueError(f"advertised_addresses: {entry!r} maps IPv{advertised.version} onto IPv{bound.version}")
    return str(advertised), str(bound)


def validate_addresses(addresses: Sequence[str]) -> list[str]:
    """Return the addresses to bind as strings; raise ValueError naming the first bad entry."""
    return [parse_advertised(entry)[1] for entry in addresses]
