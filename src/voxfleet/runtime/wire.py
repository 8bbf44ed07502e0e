"""Messages between the control plane, template processes and bot processes.

One JSON object per line over a UNIX stream socket. Pure encode/decode; the transports that
move the bytes live with their users (asyncio in the backend, blocking I/O in the template).
"""

from __future__ import annotations

import json
from typing import Any

MAX_LINE = 1024 * 1024


class WireError(ValueError):
    """A line that is not a valid message."""


def encode(kind: str, **fields: Any) -> bytes:
    if "t" in fields:
        raise ValueError("field name 't' is reserved for the message kind")
    return (json.dumps({"t": kind, **fields}, separators=(",", ":")) + "\n").encode()


def decode(line: bytes) -> dict[str, Any]:
    if len(line) > MAX_LINE:
        raise WireError(f"message of {len(line)} bytes is over the {MAX_LINE}-byte limit")
    try:
        message = json.loads(line)
    except json.JSONDecodeError as exc:
        raise WireError(f"message is not JSON: {exc.msg} at {exc.pos}") from None
    if not isinstance(message, dict) or not isinstance(message.get("t"), str):
        raise WireError("message must be an object with a string field 't'")
    return message
