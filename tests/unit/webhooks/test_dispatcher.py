"""The webhook dispatcher's retry backoff (webhooks/dispatcher.py)."""

from __future__ import annotations

from voxfleet.webhooks.dispatcher import MAX_BACKOFF_S, backoff_s


def test_backoff_grows_and_is_capped():
    assert 0.8 <= backoff_s(1) <= 1.2 and 3.2 <= backoff_s(3) <= 4.8
    assert backoff_s(50) <= MAX_BACKOFF_S * 1.2
