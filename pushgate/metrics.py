"""Prometheus metrics: what operators watch (``/metrics``).

Counters and histograms are module-level (one process, one set). What describes the
node's current state — connections by transport and dialect, subscriptions, channels,
users online, queued bytes — and the per-publication counts (publications, deliveries)
are read from the hub when Prometheus scrapes: hub/metrics_collector.py, registered
beside these by ``registry_for``. This module imports nothing of pushgate's but
process_metrics.py (the ``process_*`` figures), so every layer may count here.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import REGISTRY, Collector
from prometheus_client.utils import floatToGoString

from pushgate import process_metrics

# process_open_fds without listing every open file at each scrape (process_metrics.py)
process_metrics.install()

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


def registry_for(*collectors: Collector) -> CollectorRegistry:
    """The default registry (counters, process figures) plus ``collectors`` (the hub's
    gauges: hub/metrics_collector.py)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Forward(REGISTRY))
    for collector in collectors:
        registry.register(collector)
    return registry


class _Forward(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Any]:
        yield from self.registry.collect()


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    return generate_latest(registry), CONTENT_TYPE_LATEST
