"""Prometheus metrics: what operators watch (``/metrics``).

Counters and histograms are module-level (one process, one set); what describes the
node's current state — connections by transport and dialect, subscriptions, channels,
users online, queued bytes — and the per-publication counts (publications, deliveries)
are read from the hub when Prometheus scrapes, so the hot path pays nothing for them.
Deliveries are counted once per publication (its number of local subscribers), never
per write.
"""

from __future__ import annotations

import time
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
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

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
ENGINE_ERRORS = Counter(
    "pushgate_engine_errors_total", "Engine operations that failed, by operation.", ["operation"]
)


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
