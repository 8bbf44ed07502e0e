"""Prometheus metrics (prometheus_client), on a registry of their own per service instance.

Counters and histograms are updated by the session service as sessions start and end; gauges
(capacity, queue, pools) are read from the service at scrape time, so they are never stale.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from voxfleet.observability.turns import STAGES, TurnBreakdown, percentile

LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.75, 0.9, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
RECENT_TURNS = 500  # turns per agent behind the p50/p95 gauges


class _RecentTurnsCollector:
    """p50/p95 of each turn stage over an agent's last RECENT_TURNS turns, read at scrape time."""

    def __init__(self, recent: dict[str, deque[TurnBreakdown]]) -> None:
        self.recent = recent

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily("voxfleet_turn_stage_recent_seconds",
                                  f"p50/p95 of each turn stage (time after the end of the user's speech) over the "
                                  f"last {RECENT_TURNS} turns", labels=["agent", "stage", "quantile"])
        for agent, turns in self.recent.items():
            for stage in STAGES:
                values = [t.stages_ms[stage] for t in turns if stage in t.stages_ms]
                for q in (0.5, 0.95):
                    value = percentile(values, q)
                    if value is not None:
                        gauge.add_metric([agent, stage, str(q)], value / 1000)
        yield gauge


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.started = Counter("voxfleet_sessions_started", "Sessions started", ["agent", "start"], registry=r)
        # reason: a voxfleet.end_reasons.EndReason value (docs/end-reasons.md)
        self.ended = Counter("voxfleet_sessions_ended", "Sessions ended", ["agent", "reason"], registry=r)
        self.rejected = Counter("voxfleet_sessions_rejected", "Starts refused at capacity (429)", ["agent"],
                                registry=r)
        self.ttfw = Histogram("voxfleet_time_to_first_word_seconds",
                              "Start request -> the bot starts speaking (bot side)", ["agent", "start"],
                              buckets=LATENCY_BUCKETS, registry=r)
        self.v2v = Histogram("voxfleet_voice_to_voice_seconds",
                             "End of user speech (VAD stop minus its stop window) -> first bot audio out, per turn",
                             ["agent"], buckets=LATENCY_BUCKETS, registry=r)
        self.turn_stage = Histogram("voxfleet_turn_stage_seconds",
                                    "Each stage of a turn, as time after the end of the user's speech",
                                    ["agent", "stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.recent_turns: dict[str, deque[TurnBreakdown]] = {}
        r.register(_RecentTurnsCollector(self.recent_turns))
        self.webhooks = Counter("voxfleet_webhook_deliveries", "Webhook delivery attempts", ["result"],
                                registry=r)
        self.assignment = Histogram("voxfleet_bot_assignment_seconds", "Start request -> a bot owns the session",
                                    ["agent", "start"], buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2),
                                    registry=r)

    def observe_turns(self, agent: str, turns: Iterable[TurnBreakdown]) -> None:
        recent = self.recent_turns.setdefault(agent, deque(maxlen=RECENT_TURNS))
        for turn in turns:
            self.v2v.labels(agent).observe(turn.v2v_ms / 1000)
            for stage, ms in turn.stages_ms.items():
                self.turn_stage.labels(agent, stage).observe(ms / 1000)
            recent.append(turn)

    def watch(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        """Expose capacity, queue and pool gauges computed from `snapshot()` at each scrape."""
        self.registry.register(_CapacityCollector(snapshot))


class _CapacityCollector:
    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[GaugeMetricFamily]:
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
