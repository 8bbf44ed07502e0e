"""The exception tree (exceptions.py): messages that name the field and the value."""

from __future__ import annotations

from voxfleet.exceptions import InvalidRequest


def test_invalid_request_message_truncates_long_values():
    message = str(InvalidRequest("sdp", "x" * 500, "is bad"))
    assert message.startswith("sdp: is bad (got 'xxx") and len(message) < 120
