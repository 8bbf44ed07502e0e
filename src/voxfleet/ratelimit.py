"""One token bucket, for every rate voxfleet bounds (pure: time is passed in).

``burst`` at once, then ``per_s`` sustained. Used per client for session starts
(``scheduler.client_bounds``) and per media stream for its frames (``transports.twilio_media``,
``control.streams``).
"""

from __future__ import annotations


class TokenBucket:
    def __init__(self, per_s: float, burst: int) -> None:
        self.per_s, self.burst = per_s, burst
        self.tokens = float(burst)
        self.at: float | None = None

    def take(self, now: float) -> float | None:
        """Spend one token: None if there was one, else the seconds until there is."""
        if self.at is not None:
            self.tokens = min(float(self.burst), self.tokens + max(0.0, now - self.at) * self.per_s)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return (1.0 - self.tokens) / self.per_s
