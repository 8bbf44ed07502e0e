"""Per-client bounds at the edge (pure: no I/O; time is passed in).

A *client* is whoever a request comes from: its API key if it sent a valid one, else its
source address (as uvicorn reports it: behind a reverse proxy with ``proxy_headers``, the
address the trusted proxy forwarded). Two bounds apply per client to the routes that start
sessions (``POST /start``, the Pipecat Cloud start route, the telephony webhook):

- a **rate**: a token bucket of ``burst`` requests refilled at ``rate_per_s``; an empty bucket
  answers 429 with the seconds until the next token;
- **sessions not yet connected**: at most ``max_pending`` of the client's sessions may be
  waiting for their offer or media stream (or queued) at once, so a client that starts sessions
  and never connects cannot hold capacity; each one's reservation is also bounded in time by the
  service's offer timeout.

The share of capacity and of the queue one client may take is the admission core's to enforce
(``scheduler.admission``), since only it knows what capacity holds.

Memory is bounded: at most ``max_clients`` buckets are kept; the longest idle is forgotten
first (a forgotten bucket comes back full, which only errs on the client's side for a client
idle long enough to be evicted).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

from voxfleet.ratelimit import TokenBucket


@dataclass(frozen=True)
class ClientBoundsSettings:
    rate_per_s: float = 2.0
    burst: int = 10
    max_pending: int = 4
    max_clients: int = 10_000

    def __post_init__(self) -> None:
        if not self.rate_per_s > 0:
            raise ValueError(f"rate_per_s must be > 0 (got {self.rate_per_s!r})")
        if self.burst < 1 or self.max_pending < 1 or self.max_clients < 1:
            raise ValueError("burst, max_pending and max_clients must be >= 1")


class ClientBounds:
    """The rate bucket and the not-yet-connected sessions of every client."""

    def __init__(self, settings: ClientBoundsSettings) -> None:
        self.settings = settings
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._pending: dict[str, set[str]] = {}  # client -> sessions not yet connected
        self._owner: dict[str, str] = {}  # session -> client

    def take(self, client: str, now: float) -> float | None:
        """Spend one request of ``client``'s rate: None if allowed, else the seconds to wait."""
        s = self.settings
        bucket = self._buckets.pop(client, None) or TokenBucket(s.rate_per_s, s.burst)
        self._buckets[client] = bucket  # most recently used last
        while len(self._buckets) > s.max_clients:
            self._buckets.popitem(last=False)
        return bucket.take(now)

    def pending(self, client: str) -> int:
        return len(self._pending.get(client, ()))

    def may_start(self, client: str) -> bool:
        """True if ``client`` may start one more session now (under ``max_pending``)."""
        return self.pending(client) < self.settings.max_pending

    def started(self, client: str, session_id: str) -> None:
        """``client`` started ``session_id``; it counts until ``connected`` or ``ended``."""
        self._pending.setdefault(client, set()).add(session_id)
        self._owner[session_id] = client

    def connected(self, session_id: str) -> None:
        """The session got its offer answered or its stream opened; it no longer counts."""
        client = self._owner.pop(session_id, None)
        if client is None:
            return
        sessions = self._pending.get(client, set())
        sessions.discard(session_id)
        if not sessions:
            self._pending.pop(client, None)

    def ended(self, session_id: str) -> None:
        """The session ended (connected or not); it no longer counts."""
        self.connected(session_id)

    def clients(self) -> int:
        return len(self._buckets)


def retry_after_s(wait_s: float) -> int:
    """A Retry-After header value (whole seconds, at least 1) for a wait."""
    return max(1, math.ceil(wait_s))
