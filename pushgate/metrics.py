"""Prometheus metrics: what operators watch (``/metrics``).

Counters and histograms are module-level (one process, one set); what describes the
node's current state — connections by transport and dialect, subscriptions, channels,
users online, queued bytes — and the per-publication counts (publications, deliveries)
are read from the hub when Prometheus scrapes, so the hot path pays nothing for them.
Deliveries are counted once per publication (its number of local subscribers), never
per write.
"""

from __future__ import annotations

import gc
import itertools
import time
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import REGISTRY, Collector
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from pushgate.hub.hub import Hub

COMMANDS = Counter(
    "pushgate_commands_total",
    "Client commands handled, by method and result.",
    ["method", "result"],
)
API_REQUESTS = Counter(
    "pushgate_api_requests_total", "Server API calls, by method and result.", ["method", "result"]
)
API_DURATION = Histogram(
    "pushgate_api_request_duration_seconds",
    "Server API call latency, by method.",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
RECOVERIES = Counter(
    "pushgate_recoveries_total", "Subscriptions that asked to recover, by outcome.", ["outcome"]
)
DISCONNECTS = Counter(
    "pushgate_disconnects_total", "Connections closed by the server, by code.", ["code"]
)
SLOW_DROPS = Counter(
    "pushgate_slow_client_drops_total", "Connections closed because their write queue filled."
)
LIMIT_HITS = Counter(
    "pushgate_limit_hits_total",
    "Requests refused or connections closed because a configured limit was hit, by limit.",
    ["limit"],
)
ENGINE_DURATION = Histogram(
    "pushgate_engine_operation_duration_seconds",
    "Engine operation latency, by operation.",
    ["operation"],
    buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5),
)
EVENTS_PRODUCED = Counter(
    "pushgate_events_produced_total",
    "Events this node wrote to the event log (connect, user_offline, …).",
)
ENGINE_ERRORS = Counter(
    "pushgate_engine_errors_total", "Engine operations that failed, by operation.", ["operation"]
)


class GcPauses(Collector):
    """``pushgate_gc_pause_seconds{generation}``: how long the cyclic GC stopped the loop.

    Fed from a ``gc.callbacks`` callback (server.watch_gc), that is from inside a
    collection, which may start at any allocation — also one made while a
    prometheus_client metric holds its (non-reentrant) lock. So it is not a
    ``Histogram``: the callback only adds to plain lists, and the histogram is built
    from them when Prometheus scrapes (what prometheus_client's own GC collector does,
    client_python#363/#371).
    """

    BUCKETS = (1e-4, 5e-4, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
    GENERATIONS = 3

    def __init__(self) -> None:
        # per generation: how many pauses fell in each bucket (the last one: above all)
        self.counts = [[0] * (len(self.BUCKETS) + 1) for _ in range(self.GENERATIONS)]
        self.sums = [0.0] * self.GENERATIONS

    def observe(self, generation: int, seconds: float) -> None:
        self.counts[generation][bisect_left(self.BUCKETS, seconds)] += 1
        self.sums[generation] += seconds

    def collect(self) -> Iterator[Any]:
        family = HistogramMetricFamily(
            "pushgate_gc_pause_seconds",
            "Pauses of the cyclic garbage collector, by generation collected.",
            labels=["generation"],
        )
        bounds = [*(floatToGoString(b) for b in self.BUCKETS), "+Inf"]
        for generation in range(self.GENERATIONS):
            counts, total = self.counts[generation][:], self.sums[generation]
            cumulative = list(itertools.accumulate(counts))
            family.add_metric([str(generation)], list(zip(bounds, cumulative, strict=True)), total)
        yield family


GC_PAUSES = GcPauses()
REGISTRY.register(GC_PAUSES)


class HubCollector(Collector):
    """Gauges read from a hub at scrape time."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[Any]:
        hub = self.hub
        connections = GaugeMetricFamily(
            "pushgate_connections",
            "Open, authenticated connections, by transport and dialect.",
            labels=["transport", "dialect"],
        )
        tally: Tally[tuple[str, str]] = Tally()
        queued = 0
        for client in hub.clients.values():
            sink = client.sink
            tally[(client.transport, getattr(sink, "dialect", type(sink).__name__))] += 1
            queued += queued_bytes(sink)
        for (transport, dialect), count in sorted(tally.items()):
            connections.add_metric([transport, dialect], count)
        yield connections
        # counted by the hub as plain integers: the publish and delivery paths pay no
        # lock for them
        yield CounterMetricFamily(
            "pushgate_publications",
            "Publications accepted by this node.",
            value=hub.published,
        )
        yield CounterMetricFamily(
            "pushgate_deliveries",
            "Publications written to subscribers of this node.",
            value=hub.delivered,
        )
        yield GaugeMetricFamily(
            "pushgate_subscriptions",
            "Channel subscriptions on this node.",
            value=sum(len(subs) for subs in hub.channels.values()),
        )
        yield GaugeMetricFamily(
            "pushgate_channels", "Channels with subscribers on this node.", value=len(hub.channels)
        )
        yield GaugeMetricFamily(
            "pushgate_users_online", "Users with a connection on this node.", value=len(hub.users)
        )
        yield GaugeMetricFamily(
            "pushgate_write_queue_bytes",
            "Bytes waiting in connections' write queues.",
            value=queued,
        )
        yield GaugeMetricFamily(
            "pushgate_gc_frozen_objects",
            "Objects frozen out of garbage collections (server.gc_freeze).",
            value=gc.get_freeze_count(),
        )
        yield GaugeMetricFamily(
            "pushgate_uptime_seconds",
            "Seconds since this node started.",
            value=time.time() - hub.started_at,
        )


def queued_bytes(sink: object) -> int:
    writer = getattr(sink, "writer", None)
    size = getattr(writer, "queued_bytes", None)
    return size() if callable(size) else 0


def registry_for(hub: Hub) -> CollectorRegistry:
    """The default registry (counters, process figures) plus this hub's gauges."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Forward(REGISTRY))
    registry.register(HubCollector(hub))
    return registry


class _Forward(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Any]:
        yield from self.registry.collect()


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    return generate_latest(registry), CONTENT_TYPE_LATEST
