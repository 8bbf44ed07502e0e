"""Plivo's request signatures (signature V3), checked the documented way, and replays refused.

Every request Plivo makes to voxfleet (the voice webhook, ``<Redirect>``s) carries
``X-Plivo-Signature-V3`` (and ``X-Plivo-Signature-Ma-V3``, made with the main account's token)
and ``X-Plivo-Signature-V3-Nonce``: HMAC-SHA256, keyed by the auth token, over the URL (for a
POST, with its parameters sorted) and the nonce, base64. The HMAC is Plivo's own SDK's
(``plivo.utils.validate_v3_signature``).

V3 carries no timestamp, so two more checks are voxfleet's:

- **replay**: a nonce is used once; nonces are remembered for 10 minutes (at most 100,000 of
  them, oldest forgotten first);
- **expiry**: the URLs voxfleet hands Plivo (hold redirects, the stream-ended redirect) carry
  ``exp=<unix seconds>``, covered by Plivo's signature: a request to one after ``exp`` is refused.
  The voice webhook's own URL (set in Plivo's console) has none; a replay of it once its nonce
  is forgotten reaches a call that already has its session, which never starts a second one
  (``control/calls.py``).

Pure: the time is passed in; no I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from urllib.parse import parse_qs, urlsplit

from plivo.utils import validate_v3_signature  # type: ignore[import-untyped]

from voxfleet.exceptions import TelephonySignatureInvalid

SIGNATURE_HEADERS = ("X-Plivo-Signature-V3", "X-Plivo-Signature-Ma-V3")
NONCE_HEADER = "X-Plivo-Signature-V3-Nonce"
EXPIRY_PARAM = "exp"
MAX_NONCE_CHARS = 128


class NonceLedger:
    """Nonces seen recently, each kept for `ttl_s`, at most `max_entries` (oldest dropped)."""

    def __init__(self, ttl_s: float = 600.0, max_entries: int = 100_000) -> None:
        self.ttl_s, self.max_entries = ttl_s, max_entries
        self.seen: OrderedDict[str, float] = OrderedDict()  # nonce -> forget at; in arrival order

    def use(self, nonce: str, now: float) -> bool:
        """Record `nonce`; False if it was already used (within its time)."""
        while self.seen and next(iter(self.seen.values())) <= now:
            self.seen.popitem(last=False)
        if nonce in self.seen:
            return False
        self.seen[nonce] = now + self.ttl_s
        while len(self.seen) > self.max_entries:
            self.seen.popitem(last=False)
        return True


def verify_request(auth_token: str, nonces: NonceLedger, method: str, url: str, params: Mapping[str, str],
                   headers: Mapping[str, str], now: float) -> None:
    """Check one Plivo request to `url`: its signature against `auth_token`, its nonce never
    used before (recorded in `nonces` once the signature holds), and, on voxfleet's own URLs,
    its expiry. Raises TelephonySignatureInvalid naming the reason."""
    signatures = [headers.get(name) for name in SIGNATURE_HEADERS]
    if not any(signatures):
        raise TelephonySignatureInvalid("X-Plivo-Signature-V3 header missing")
    nonce = headers.get(NONCE_HEADER)
    if not nonce:
        raise TelephonySignatureInvalid(f"{NONCE_HEADER} header missing")
    if not nonce.isascii() or len(nonce) > MAX_NONCE_CHARS:
        raise TelephonySignatureInvalid(f"{NONCE_HEADER} malformed (not a short ASCII string)")
    if not any(signature and signature.isascii() and _matches(method, url, nonce, auth_token, signature, params)
               for signature in signatures):
        raise TelephonySignatureInvalid(f"X-Plivo-Signature-V3 does not match this request to {url} "
                                        "(wrong PLIVO_AUTH_TOKEN, or public_url is not the URL Plivo calls)")
    expiry = parse_qs(urlsplit(url).query).get(EXPIRY_PARAM)
    if expiry is not None:
        if not expiry[0].isdigit():
            raise TelephonySignatureInvalid(f"{EXPIRY_PARAM}={expiry[0][:20]!r} in the URL is not a time")
        if int(expiry[0]) < now:
            raise TelephonySignatureInvalid(f"expired: this URL was valid until {expiry[0]} "
                                            f"({now - int(expiry[0]):.0f}s ago)")
    if not nonces.use(nonce, now):
        raise TelephonySignatureInvalid(f"replayed: {NONCE_HEADER} {nonce[:40]!r} was already used")


def _matches(method: str, url: str, nonce: str, auth_token: str, signature: str,
             params: Mapping[str, str]) -> bool:
    return bool(validate_v3_signature(method.upper(), url, nonce, auth_token, signature, dict(params)))
