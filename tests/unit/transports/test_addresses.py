"""Advertised addresses and 1:1 NAT entries (transports/addresses.py)."""

from __future__ import annotations

import pytest

from tests.unit.test_config import _config_error
from voxfleet.transports.addresses import validate_addresses


def test_advertised_addresses_are_validated():
    assert validate_addresses(["127.0.0.1", "::1"]) == ["127.0.0.1", "::1"]
    with pytest.raises(ValueError, match="'my-host' is not an IP address"):
        validate_addresses(["my-host"])


def test_nat_entries_parse_and_bad_ones_are_named(monkeypatch):
    from voxfleet.transports.addresses import parse_advertised, validate_addresses

    assert parse_advertised("203.0.113.7/10.0.0.5") == ("203.0.113.7", "10.0.0.5")
    assert validate_addresses(["203.0.113.7/10.0.0.5", "::1"]) == ["10.0.0.5", "::1"]
    with pytest.raises(ValueError, match=r"'203.0.113.7/fe80::1' maps IPv4 onto IPv6"):
        parse_advertised("203.0.113.7/fe80::1")
    assert "advertised_addresses: 'public/10.0.0.5' is not an IP address" in _config_error(
        monkeypatch, advertised_addresses='["public/10.0.0.5"]')
