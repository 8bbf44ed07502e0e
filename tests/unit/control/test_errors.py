"""The exception tree mapped to HTTP statuses and WebSocket close codes (control/errors.py)."""

from __future__ import annotations

import pytest

from voxfleet.control.errors import status_for, ws_close_for
from voxfleet.exceptions import (
    AgentNotFound,
    BotError,
    InvalidRequest,
    NotReady,
    RequestTooLarge,
    SessionConflict,
    SessionNotFound,
    SignalingTimeout,
    StreamTokenInvalid,
)


@pytest.mark.parametrize("exc,status", [
    (InvalidRequest("f", 1, "bad"), 400),
    (RequestTooLarge(10, 5), 413),
    (AgentNotFound("x", ["a"]), 404),
    (SessionNotFound("s"), 404),
    (SessionConflict("s", "ended", "offer"), 409),
    (NotReady("warming"), 503),
    (BotError("gone"), 502),
    (SignalingTimeout("s", 1.0), 504),
])
def test_every_error_has_one_status(exc, status):
    assert status_for(exc) == status


def test_close_codes_come_from_one_table():
    assert ws_close_for(StreamTokenInvalid("stream token expired")) == (4003, "STREAM_TOKEN_INVALID: stream token expired")
