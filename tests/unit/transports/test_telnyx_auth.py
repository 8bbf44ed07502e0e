"""Telnyx webhook signatures (transports/telnyx_auth.py): Ed25519 over ``{timestamp}|{body}``,
the tolerance window, replays, bounded memory."""

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from voxfleet.exceptions import TelephonySignatureInvalid
from voxfleet.transports.telnyx_auth import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SeenSignatures,
    TelnyxSignatures,
    public_key,
    sign,
)

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUBLIC = base64.b64encode(KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
BODY = b"AccountSid=a&CallSid=v3%3Acall&From=%2B13122010094"
NOW = 1_800_000_000.0


def headers(timestamp: int = int(NOW), body: bytes = BODY, key: Ed25519PrivateKey = KEY) -> tuple[str, str]:
    signed = sign(key, str(timestamp), body)
    return signed[SIGNATURE_HEADER], signed[TIMESTAMP_HEADER]


def refused(checker: TelnyxSignatures, signature: str | None, timestamp: str | None, body: bytes = BODY,
            now: float = NOW) -> str:
    with pytest.raises(TelephonySignatureInvalid) as raised:
        checker.verify(signature, timestamp, body, now)
    return str(raised.value)


def test_a_request_signed_by_the_account_is_accepted_once():
    checker = TelnyxSignatures(PUBLIC)
    checker.verify(*headers(), BODY, NOW)
    assert "already used: a replayed request" in refused(checker, *headers(), now=NOW + 1)
    checker.verify(*headers(int(NOW) + 1), BODY, NOW + 1)  # the next request: signed anew


def test_the_signed_payload_is_the_timestamp_a_bar_and_the_raw_body():
    signature, timestamp = headers()
    raw = base64.b64decode(signature)
    KEY.public_key().verify(raw, f"{timestamp}|".encode() + BODY)  # as Telnyx documents it


@pytest.mark.parametrize("signature, timestamp, body, reason", [
    (None, str(int(NOW)), BODY, "telnyx-signature-ed25519 header missing"),
    ("c2ln", None, BODY, "telnyx-timestamp header missing"),
    ("c2ln", "yesterday", BODY, "is not Unix seconds"),
    ("%%%", str(int(NOW)), BODY, "is not base64"),
    (base64.b64encode(b"short").decode(), str(int(NOW)), BODY, "5 bytes, not an Ed25519 signature's 64"),
    (headers()[0], str(int(NOW)), BODY + b"&To=%2B1", "does not match this request"),
    (headers(key=Ed25519PrivateKey.generate())[0], str(int(NOW)), BODY, "does not match this request"),
    (headers(int(NOW) - 1)[0], str(int(NOW)), BODY, "does not match"),  # the timestamp is signed too
])
def test_forged_or_malformed_signatures_are_refused_with_the_reason(signature, timestamp, body, reason):
    assert reason in refused(TelnyxSignatures(PUBLIC), signature, timestamp, body)


def test_timestamps_outside_the_window_are_refused():
    checker = TelnyxSignatures(PUBLIC, tolerance_s=300)
    assert "301s old, past the 300s window" in refused(checker, *headers(int(NOW) - 301))
    assert "in the future" in refused(checker, *headers(int(NOW) + 301))
    checker.verify(*headers(int(NOW) - 300), BODY, NOW)  # at the edge of the window: fine


def test_remembered_signatures_are_forgotten_after_the_window_and_bounded():
    seen = SeenSignatures(max_remembered=3)
    checker = TelnyxSignatures(PUBLIC, tolerance_s=10, seen=seen)
    for i in range(5):
        checker.verify(*headers(int(NOW) + i), BODY, NOW + i)
    assert len(seen) == 3  # the oldest forgotten first
    checker.verify(*headers(int(NOW) + 30), BODY, NOW + 30)
    assert len(seen) == 1  # the others' window is over: a replay of them is refused as expired anyway
    assert "past the 10s window" in refused(checker, *headers(int(NOW) + 4), now=NOW + 30)


@pytest.mark.parametrize("key, reason", [
    ("not base64!", "is not base64"),
    (base64.b64encode(b"x" * 31).decode(), "decodes to 31 bytes"),
])
def test_a_public_key_that_is_not_one_is_named(key, reason):
    with pytest.raises(ValueError, match=reason):
        public_key(key)
