"""Profiles, node capacity and the capacity ledger (pure: no I/O, no asyncio).

Every bot, warm or serving a session, holds a reservation of its profile (vCPU, RAM, uplink
kbps) for its whole life. Admission never reserves beyond capacity, and a reservation is
released exactly once whatever ends the bot. The invariant ``free + reserved == capacity``
holds per resource at every moment and is checkable with :meth:`CapacityLedger.check`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

RESOURCES = ("cpu_millis", "mem_mb", "kbps")


@dataclass(frozen=True)
class Resources:
    """An amount of each resource: CPU in millicores, memory in MiB, uplink in kbit/s."""

    cpu_millis: int = 0
    mem_mb: int = 0
    kbps: int = 0

    def __add__(self, other: "Resources") -> "Resources":
        return Resources(*(getattr(self, r) + getattr(other, r) for r in RESOURCES))

    def __sub__(self, other: "Resources") -> "Resources":
        return Resources(*(getattr(self, r) - getattr(other, r) for r in RESOURCES))

    def fits_in(self, other: "Resources") -> bool:
        return all(getattr(self, r) <= getattr(other, r) for r in RESOURCES)

    def times(self, n: int) -> "Resources":
        return Resources(*(getattr(self, r) * n for r in RESOURCES))

    def as_dict(self) -> dict[str, int]:
        return {r: getattr(self, r) for r in RESOURCES}


@dataclass(frozen=True)
class Profile:
    """What one bot reserves, like Pipecat Cloud's agent profiles."""

    name: str
    resources: Resources


WEBRTC_KBPS = 40  # Opus voice both ways, with headroom
PROFILES = {
    "agent-1x": Profile("agent-1x", Resources(500, 1024, WEBRTC_KBPS)),
    "agent-2x": Profile("agent-2x", Resources(1000, 2048, WEBRTC_KBPS)),
    "agent-3x": Profile("agent-3x", Resources(1500, 3072, WEBRTC_KBPS)),
}


def profile_named(name: str, kbps: int | None = None) -> Profile:
    """The named profile, optionally with another bandwidth; ValueError names the bad value."""
    if name not in PROFILES:
        raise ValueError(f"profile: unknown profile {name!r} (known: {', '.join(PROFILES)})")
    base = PROFILES[name]
    if kbps is None:
        return base
    r = base.resources
    return Profile(base.name, Resources(r.cpu_millis, r.mem_mb, kbps))


class LedgerSnapshot(TypedDict):
    """Resources per kind (``Resources.as_dict``), and how many reservations are held."""

    capacity: dict[str, int]
    reserved: dict[str, int]
    free: dict[str, int]
    reservations: int


class CapacityLedger:
    """Reservations against a fixed capacity, keyed by bot id."""

    def __init__(self, capacity: Resources) -> None:
        self.capacity = capacity
        self.reserved = Resources()
        self.free = capacity
        self._held: dict[str, Resources] = {}

    def can_reserve(self, amount: Resources) -> bool:
        return amount.fits_in(self.free)

    def reserve(self, key: str, amount: Resources) -> bool:
        """Reserve `amount` for `key`; False (and nothing changes) if it does not fit."""
        if key in self._held:
            raise ValueError(f"reservation {key!r} already exists")
        if not self.can_reserve(amount):
            return False
        self._held[key] = amount
        self.reserved = self.reserved + amount
        self.free = self.free - amount
        return True

    def release(self, key: str) -> bool:
        """Release `key`'s reservation; False if it holds none (already released)."""
        amount = self._held.pop(key, None)
        if amount is None:
            return False
        self.reserved = self.reserved - amount
        self.free = self.free + amount
        return True

    def holds(self, key: str) -> bool:
        return key in self._held

    def __len__(self) -> int:
        return len(self._held)

    def how_many_fit(self, amount: Resources) -> int:
        """How many more reservations of `amount` would fit now."""
        free, counts = self.free, []
        if amount.cpu_millis > 0:
            counts.append(free.cpu_millis // amount.cpu_millis)
        if amount.mem_mb > 0:
            counts.append(free.mem_mb // amount.mem_mb)
        if amount.kbps > 0:
            counts.append(free.kbps // amount.kbps)
        return max(0, min(counts)) if counts else 0

    def check(self) -> bool:
        """The invariant: free + reserved == capacity, nothing negative, sums match holdings."""
        total = Resources()
        for amount in self._held.values():
            total = total + amount
        return (
            self.free + self.reserved == self.capacity
            and total == self.reserved
            and all(getattr(self.free, r) >= 0 for r in RESOURCES)
        )

    def snapshot(self) -> LedgerSnapshot:
        return {"capacity": self.capacity.as_dict(), "reserved": self.reserved.as_dict(),
                "free": self.free.as_dict(), "reservations": len(self._held)}
