"""Telnyx webhook signatures, checked the way Telnyx documents them (pure: time is passed in).

Telnyx signs every webhook (TeXML's voice requests and their ``<Redirect>``s included) with the
account's Ed25519 key: ``telnyx-signature-ed25519`` is the base64 signature and
``telnyx-timestamp`` the Unix time in seconds of ``{timestamp}|{raw body}``; it is verified with
the account's public key (base64, from the Mission Control Portal). A timestamp outside
``tolerance_s`` of now is refused, and so is a signature seen before within that window (a
replayed request: the window bounds how long one must be remembered, and ``max_remembered``
bounds the memory).

Telnyx's own SDK (``telnyx.lib.verify_signature``) does the same check with PyNaCl and a fixed
5-minute window and no replay memory; ``cryptography`` (already a dependency of aiortc and of
voxfleet) verifies Ed25519 as well, so no SDK is needed for one signature.
"""

from __future__ import annotations

import base64
import binascii
from collections import OrderedDict

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from voxfleet.exceptions import TelephonySignatureInvalid

SIGNATURE_HEADER = "telnyx-signature-ed25519"
TIMESTAMP_HEADER = "telnyx-timestamp"
DEFAULT_TOLERANCE_S = 300.0
MAX_REMEMBERED = 100_000  # signatures of the last tolerance window (~100 B each)


def public_key(b64: str) -> Ed25519PublicKey:
    """The account's public key from its base64 text; ValueError naming what is wrong."""
    try:
        raw = base64.b64decode(b64.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not base64 (copy the Public Key from Telnyx's portal, Keys & Credentials)") from None
    if len(raw) != 32:
        raise ValueError(f"decodes to {len(raw)} bytes, not the 32 bytes of an Ed25519 public key")
    return Ed25519PublicKey.from_public_bytes(raw)


class SeenSignatures:
    """Signatures accepted within the tolerance window, oldest first, at most ``max_remembered``
    (beyond that the oldest are forgotten first: only a signature that verified is remembered,
    so filling it takes that many genuine requests in one window)."""

    def __init__(self, max_remembered: int = MAX_REMEMBERED) -> None:
        self.max_remembered = max_remembered
        self.until: OrderedDict[bytes, float] = OrderedDict()  # signature -> when it may be forgotten

    def __len__(self) -> int:
        return len(self.until)

    def seen(self, signature: bytes, now: float) -> bool:
        while self.until and next(iter(self.until.values())) < now:
            self.until.popitem(last=False)
        return signature in self.until

    def remember(self, signature: bytes, until: float) -> None:
        self.until[signature] = until
        while len(self.until) > self.max_remembered:
            self.until.popitem(last=False)


class TelnyxSignatures:
    """Checks the signature of Telnyx webhooks for one account."""

    def __init__(self, public_key_b64: str, *, tolerance_s: float = DEFAULT_TOLERANCE_S,
                 seen: SeenSignatures | None = None) -> None:
        self.key = public_key(public_key_b64)
        self.tolerance_s = tolerance_s
        self.seen = seen if seen is not None else SeenSignatures()

    def verify(self, signature_b64: str | None, timestamp: str | None, body: bytes, now: float) -> None:
        """Accept a request once, or raise TelephonySignatureInvalid saying why not."""
        if not signature_b64:
            raise TelephonySignatureInvalid(f"{SIGNATURE_HEADER} header missing")
        if not timestamp:
            raise TelephonySignatureInvalid(f"{TIMESTAMP_HEADER} header missing")
        if not (timestamp.isascii() and timestamp.isdigit()):
            raise TelephonySignatureInvalid(f"{TIMESTAMP_HEADER} is not Unix seconds (got {timestamp[:40]!r})")
        sent_at = int(timestamp)
        if now - sent_at > self.tolerance_s:
            raise TelephonySignatureInvalid(f"{TIMESTAMP_HEADER} {sent_at} is {now - sent_at:.0f}s old, past the "
                                            f"{self.tolerance_s:.0f}s window (an expired or replayed request)")
        if sent_at - now > self.tolerance_s:
            raise TelephonySignatureInvalid(f"{TIMESTAMP_HEADER} {sent_at} is {sent_at - now:.0f}s in the future, "
                                            f"past the {self.tolerance_s:.0f}s window")
        try:
            signature = base64.b64decode(signature_b64, validate=True)
        except (binascii.Error, ValueError):
            raise TelephonySignatureInvalid(f"{SIGNATURE_HEADER} is not base64") from None
        if len(signature) != 64:
            raise TelephonySignatureInvalid(f"{SIGNATURE_HEADER} is {len(signature)} bytes, not an Ed25519 "
                                            "signature's 64")
        try:
            self.key.verify(signature, signed_payload(timestamp, body))
        except InvalidSignature:
            raise TelephonySignatureInvalid(f"{SIGNATURE_HEADER} does not match this request (not signed by the "
                                            "account of TELNYX_PUBLIC_KEY, or the body was changed)") from None
        if self.seen.seen(signature, now):
            raise TelephonySignatureInvalid(f"{SIGNATURE_HEADER} was already used: a replayed request")
        self.seen.remember(signature, sent_at + self.tolerance_s)


def signed_payload(timestamp: str, body: bytes) -> bytes:
    """What Telnyx signs: ``{timestamp}|{raw body}``."""
    return timestamp.encode() + b"|" + body


def sign(private_key: Ed25519PrivateKey, timestamp: str, body: bytes) -> dict[str, str]:
    """The headers Telnyx sends with a webhook signed by `private_key` (for a test caller)."""
    signature = private_key.sign(signed_payload(timestamp, body))
    return {SIGNATURE_HEADER: base64.b64encode(signature).decode(), TIMESTAMP_HEADER: timestamp}
