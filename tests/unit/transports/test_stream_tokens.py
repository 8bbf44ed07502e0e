"""Single-use stream tokens (transports/stream_tokens.py)."""

import pytest

from voxfleet.exceptions import StreamTokenInvalid
from voxfleet.transports.stream_tokens import StreamTokens

SECRET = b"0123456789abcdef0123"


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_token_admits_its_session_once():
    tokens = StreamTokens(SECRET, ttl_s=30, clock=Clock())
    token = tokens.mint("session-1")
    assert tokens.consume(token) == "session-1"
    with pytest.raises(StreamTokenInvalid, match="already used"):
        tokens.consume(token)


def test_token_expires():
    clock = Clock()
    tokens = StreamTokens(SECRET, ttl_s=30, clock=clock)
    token = tokens.mint("s")
    clock.now += 31
    with pytest.raises(StreamTokenInvalid, match="expired"):
        tokens.consume(token)


@pytest.mark.parametrize("token, reason", [
    (None, "missing"), ("", "missing"), ("abc", "malformed"), ("a.b.c.d.e", "malformed"),
    (12345, "not a short ASCII string"), (["a.b.c.d"], "not a short ASCII string"),
    ("s.1.n.m\u00e9", "not a short ASCII string"), ("a" * 300, "not a short ASCII string"),
])
def test_token_malformed_or_missing(token, reason):
    with pytest.raises(StreamTokenInvalid, match=reason):
        StreamTokens(SECRET, 30).consume(token)


def test_token_from_another_secret_or_edited_is_forged():
    theirs = StreamTokens(b"another-secret-of-16b", 30).mint("s")
    ours = StreamTokens(SECRET, 30)
    with pytest.raises(StreamTokenInvalid, match="forged"):
        ours.consume(theirs)
    session, expiry, nonce, mac = ours.mint("s").split(".")
    with pytest.raises(StreamTokenInvalid, match="forged"):
        ours.consume(".".join(["other-session", expiry, nonce, mac]))


def test_used_tokens_are_forgotten_after_expiry():
    clock = Clock()
    tokens = StreamTokens(SECRET, ttl_s=5, clock=clock)
    for i in range(300):
        tokens.consume(tokens.mint(f"s{i}"))
    clock.now += 10
    tokens.consume(tokens.mint("late"))
    assert len(tokens.used) == 1
