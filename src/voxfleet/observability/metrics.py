"""Prometheus metrics (prometheus_client), on a registry of their own per service instance.

Counters and histograms are updated by the session service as sessions start and end; gauges
(capacity, queue, pools) are read from the service at scrape time, so they are never stale.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.started = Counter("voxfleet_sessions_started", "Sessions started", ["agent", "start"], registry=r)
        self.ended = Counter("voxfleet_sessions_ended", "Sessions ended", ["agent", "reason"], registry=r)
        self.rejected = Counter("voxfleet_sessions_rejected", "Starts refused at capacity (429)", ["agent"],
                                registry=r)
        self.ttfw = Histogram("voxfleet_time_to_first_word_seconds",
                              "Start request -> the bot starts speaking (bot side)", ["agent", "start"],
                              buckets=LATENCY_BUCKETS, registry=r)
        self.v2v = Histogram("voxfleet_voice_to_voice_seconds", "End of user speech (VAD) -> bot speaks, per turn",
                             ["agent"], buckets=LATENCY_BUCKETS, registry=r)
        self.webhooks = Counter("voxfleet_webhook_deliveries", "Webhook delivery attempts", ["result"],
                                registry=r)
        self.assignment = Histogram("voxfleet_bot_assignment_seconds", "Start request -> a bot owns the session",
                                    ["agent", "start"], buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2),
                                    registry=r)

    def watch(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        """Expose capacity, queue and pool gauges computed from `snapshot()` at each scrape."""
        self.registry.register(_CapacityCollector(snapshot))


class _CapacityCollector:
    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.snapshot = snapshot

    def collect(self):
        snap = self.snapshot()
        for kind in ("capacity", "reserved", "free"):
            gauge = GaugeMetricFamily(f"voxfleet_capacity_{kind}", f"Node resources: {kind}", labels=["resource"])
            for resource, value in snap[kind].items():
                gauge.add_metric([resource], value)
            yield gauge
        queue = GaugeMetricFamily("voxfleet_queue_length", "Sessions waiting for capacity", labels=["agent"])
        active = GaugeMetricFamily("voxfleet_sessions_active", "Sessions with a bot", labels=["agent"])
        warm = GaugeMetricFamily("voxfleet_warm_bots", "Warm bots ready", labels=["agent"])
        for agent, pool in snap["agents"].items():
            queue.add_metric([agent], snap["queue"]["by_agent"].get(agent, 0))
            active.add_metric([agent], pool["active"])
            warm.add_metric([agent], pool["warm"])
        yield from (queue, active, warm)
