"""The node's state as Prometheus gauges, read from the hub when Prometheus scrapes.

What describes the node now — connections by transport and dialect, subscriptions,
channels, users online, queued bytes — and the hub's plain-integer counts
(publications, deliveries) are read here at scrape time, so the hot path pays nothing
for them. Deliveries are counted once per publication (its number of local
subscribers), never per write. It sits beside the hub it reads; ``metrics.py`` (the
process-wide counters) knows nothing of the hub.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from pushgate.hub.hub import Hub


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
        # kept by the registry and the backlog as connections come, go and fall
        # behind: a scrape walks no list of every connection (at 17,000 connections
        # per worker that walk kept each worker's loop ~50 ms, all workers at once)
        for (transport, dialect), count in sorted(hub.registry.kinds.items()):
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
            value=hub.delivery.subscription_count,
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
            value=hub.backlog.queued_bytes(),
        )
        yield GaugeMetricFamily(
            "pushgate_goodbyes_waiting",
            "Closed connections whose goodbye (leave channels, tell the engine) waits its "
            "turn: a burst of clients leaving at once, started a pass at a time.",
            value=len(hub.departures),
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
