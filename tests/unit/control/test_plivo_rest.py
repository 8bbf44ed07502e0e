"""Plivo's REST requests of outbound calls and transfers (control/plivo_rest.py), without Plivo:
the numbers in Plivo's format, the transfer URL, and what is refused before any request."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from voxfleet.config import Settings
from voxfleet.control import plivo_rest
from voxfleet.exceptions import CarrierNotConfigured


def settings(**values) -> Settings:
    return Settings(plivo_auth_id="MA" + "1" * 18, plivo_auth_token="token", **values)


def test_numbers_are_written_as_plivo_writes_them():
    assert plivo_rest.plivo_number("+14157654321") == "14157654321"


def test_a_call_needs_both_credentials():
    with pytest.raises(CarrierNotConfigured, match="PLIVO_AUTH_ID and PLIVO_AUTH_TOKEN"):
        plivo_rest.check(Settings(plivo_auth_id="MA" + "1" * 18))
    plivo_rest.check(settings())


def test_the_transfer_url_is_voxfleets_own_expiring_and_needs_public_url(monkeypatch):
    monkeypatch.setattr(plivo_rest.time, "time", lambda: 1_000_000.0)
    url = plivo_rest.transfer_url(settings(public_url="https://voice.example.com/"), "+15005550999", "+14155550006")
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "https://voice.example.com" + plivo_rest.TRANSFER_PATH
    assert parse_qs(parts.query) == {"to": ["15005550999"], "from": ["14155550006"],
                                     "exp": [str(1_000_000 + plivo_rest.TRANSFER_URL_VALID_S)]}
    assert "from" not in parse_qs(urlsplit(plivo_rest.transfer_url(settings(public_url="https://v.example"),
                                                                   "+15005550999", None)).query)
    with pytest.raises(CarrierNotConfigured, match="need public_url"):
        plivo_rest.transfer_url(settings(), "+15005550999", None)
