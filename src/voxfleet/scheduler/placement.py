"""Where a bot goes: nodes, regions, and a capacity ledger per node (pure: no I/O, no asyncio).

The local backend is one node in one region; a Ray cluster is many nodes labelled with regions.
Either way the service reserves through one :class:`ClusterLedger`, which keeps a
:class:`~voxfleet.scheduler.capacity.CapacityLedger` per node, so ``free + reserved == capacity``
holds per node, per region and in total.

Region preference for a request: the asked region first, then its configured nearest regions
(``nearest``: region -> ordered fallbacks); a region with no configured fallbacks falls back to
every other region. No region asked: the default region's preference, or every region.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from voxfleet.exceptions import Unplaceable
from voxfleet.runtime.protocol import LOCAL_REGION
from voxfleet.scheduler.capacity import CapacityLedger, Resources

__all__ = ["LOCAL_REGION", "ClusterLedger", "Node", "Start", "choose_start"]


@dataclass(frozen=True)
class Node:
    """A machine bots can run on."""

    node_id: str
    region: str
    address: str
    capacity: Resources


@dataclass(frozen=True)
class Start:
    """An admission decision: take a warm bot in `region`, or start a cold one there."""

    kind: str  # "warm" | "cold"
    region: str


def choose_start(preference: list[str], warm: Mapping[str, int], fits: Mapping[str, int]) -> Start | None:
    """The nearest region that can serve now: a warm bot there beats a cold start there, and
    either beats going further. None: no region of the preference can start the session now."""
    for region in preference:
        if warm.get(region, 0) > 0:
            return Start("warm", region)
        if fits.get(region, 0) > 0:
            return Start("cold", region)
    return None


class ClusterLedger:
    """Reservations keyed by bot id, each held on one node."""

    def __init__(self, nodes: Iterable[Node] = (), *, nearest: Mapping[str, list[str]] | None = None,
                 default_region: str | None = None) -> None:
        self.nodes: dict[str, Node] = {}
        self.ledgers: dict[str, CapacityLedger] = {}
        self.nearest = {region: list(order) for region, order in (nearest or {}).items()}
        self.default_region = default_region
        self._where: dict[str, str] = {}  # key -> node id
        self._orphans: dict[str, Resources] = {}  # held on a node that left; released by its bot's end
        self._regions: list[str] = []
        for node in nodes:
            self.add_node(node)

    # -- membership -------------------------------------------------------------------------
    def add_node(self, node: Node) -> None:
        if node.node_id in self.nodes:
            raise ValueError(f"node {node.node_id!r} is already known")
        self.nodes[node.node_id] = node
        self.ledgers[node.node_id] = CapacityLedger(node.capacity)
        self._regions = sorted({n.region for n in self.nodes.values()})

    def remove_node(self, node_id: str) -> list[str]:
        """Forget a node (it left the cluster); return the keys it held. They stay reserved
        (as orphans, outside every capacity) until released once, when their bots are gone."""
        self.nodes.pop(node_id)
        ledger = self.ledgers.pop(node_id)
        self._regions = sorted({n.region for n in self.nodes.values()})
        held = [key for key, where in self._where.items() if where == node_id]
        for key in held:
            self._orphans[key] = ledger._held[key]
            del self._where[key]
        return held

    def sync(self, nodes: Iterable[Node]) -> tuple[list[Node], list[str]]:
        """Make the known nodes `nodes`: return (added, removed node ids). A node whose capacity
        or region changed is kept as it was (a changed node rejoins under a new id in Ray)."""
        wanted = {n.node_id: n for n in nodes}
        removed = [node_id for node_id in self.nodes if node_id not in wanted]
        for node_id in removed:
            self.remove_node(node_id)
        added = [n for node_id, n in wanted.items() if node_id not in self.nodes]
        for node in added:
            self.add_node(node)
        return added, removed

    def regions(self) -> list[str]:
        return list(self._regions)

    def preference(self, region: str | None) -> list[str]:
        """Regions to try, nearest first, for a request asking for `region` (None: any).
        Raises Unplaceable for a region no node has."""
        known = self.regions()
        if region is None:
            region = self.default_region if self.default_region in known else None
        if region is None:
            return known
        if region not in known:
            raise Unplaceable(f"region: no node in region {region!r} (regions now: {', '.join(known) or 'none'})",
                              region=region)
        if region in self.nearest:
            return [region] + [r for r in self.nearest[region] if r in known and r != region]
        return [region] + [r for r in known if r != region]

    # -- reservations -----------------------------------------------------------------------
    def reserve(self, key: str, amount: Resources, regions: Iterable[str] | None = None) -> Node | None:
        """Reserve `amount` on one node of the first region in `regions` (None: any) that has
        room, spreading over that region's nodes (the most free CPU first); None if none has."""
        if key in self._where or key in self._orphans:
            raise ValueError(f"reservation {key!r} already exists")
        for region in (self.regions() if regions is None else regions):
            candidates = [n for n in self.nodes.values()
                          if n.region == region and self.ledgers[n.node_id].can_reserve(amount)]
            if candidates:
                node = max(candidates, key=lambda n: (self.ledgers[n.node_id].free.cpu_millis, n.node_id))
                self.ledgers[node.node_id].reserve(key, amount)
                self._where[key] = node.node_id
                return node
        return None

    def release(self, key: str) -> bool:
        """Release `key`'s reservation; False if it holds none (already released)."""
        if self._orphans.pop(key, None) is not None:
            return True
        node_id = self._where.pop(key, None)
        if node_id is None:
            return False
        return self.ledgers[node_id].release(key)

    def holds(self, key: str) -> bool:
        return key in self._where or key in self._orphans

    def __len__(self) -> int:
        return len(self._where) + len(self._orphans)

    def how_many_fit(self, amount: Resources, region: str | None = None) -> int:
        """How many more reservations of `amount` would fit now (in `region`, or anywhere)."""
        total = 0
        for node_id, node in self.nodes.items():
            if region is None or node.region == region:
                total += self.ledgers[node_id].how_many_fit(amount)
        return total

    def how_many_fit_empty(self, amount: Resources) -> int:
        """How many reservations of `amount` all nodes together hold when empty."""
        return sum(CapacityLedger(n.capacity).how_many_fit(amount) for n in self.nodes.values())

    def could_ever_fit(self, amount: Resources, regions: Iterable[str]) -> bool:
        """True if some node of `regions` is big enough for `amount` when empty."""
        wanted = set(regions)
        return any(amount.fits_in(n.capacity) for n in self.nodes.values() if n.region in wanted)

    # -- totals -------------------------------------------------------------------------------
    @property
    def capacity(self) -> Resources:
        return _sum(n.capacity for n in self.nodes.values())

    @property
    def reserved(self) -> Resources:
        return _sum(ledger.reserved for ledger in self.ledgers.values())

    @property
    def free(self) -> Resources:
        return _sum(ledger.free for ledger in self.ledgers.values())

    def check(self) -> bool:
        """The invariant on every node, and that every key is held exactly once."""
        held = sum(len(ledger) for ledger in self.ledgers.values())
        return all(ledger.check() for ledger in self.ledgers.values()) and held == len(self._where)

    def snapshot(self) -> dict[str, Any]:
        """Totals (the shape of ``CapacityLedger.snapshot``), plus per node and per region."""
        regions: dict[str, dict[str, Any]] = {}
        nodes: dict[str, dict[str, Any]] = {}
        for node in self.nodes.values():
            ledger = self.ledgers[node.node_id]
            nodes[node.node_id] = {"region": node.region, "address": node.address, **ledger.snapshot()}
            total = regions.setdefault(node.region, {"nodes": 0, "capacity": Resources(), "reserved": Resources(),
                                                     "free": Resources(), "reservations": 0})
            total["nodes"] += 1
            total["reservations"] += len(ledger)
            for name in ("capacity", "reserved", "free"):
                total[name] = total[name] + getattr(ledger, name)
        for total in regions.values():
            for name in ("capacity", "reserved", "free"):
                total[name] = total[name].as_dict()
        return {"capacity": self.capacity.as_dict(), "reserved": self.reserved.as_dict(),
                "free": self.free.as_dict(), "reservations": len(self),
                "orphaned": len(self._orphans), "nodes": nodes, "regions": regions}


def _sum(amounts: Iterable[Resources]) -> Resources:
    total = Resources()
    for amount in amounts:
        total = total + amount
    return total

