"""The control <-> bot wire format (runtime/wire.py): one JSON object a line."""

from __future__ import annotations

import pytest

from voxfleet.runtime import wire


def test_wire_round_trip():
    line = wire.encode("offer", id=3, sdp="v=0")
    assert line.endswith(b"\n")
    assert wire.decode(line) == {"t": "offer", "id": 3, "sdp": "v=0"}


@pytest.mark.parametrize("line,reason", [
    (b"{nope", "not JSON"),
    (b"[1,2]", "string field 't'"),
    (b'{"t": 5}', "string field 't'"),
])
def test_wire_rejects_bad_lines(line, reason):
    with pytest.raises(wire.WireError, match=reason):
        wire.decode(line)


def test_wire_refuses_to_shadow_kind():
    with pytest.raises(ValueError, match="reserved"):
        wire.encode("hello", t=1)
