"""Prometheus metrics of proxy calls (registered in the default registry /metrics serves).

Labels are bounded: ``proxy`` is a ``[[proxies]]`` name from the configuration, ``kind``
one of the proxy events, ``result`` one of ok, error (the backend refused), disconnect
(the backend closed the connection), timeout, failed (no usable answer), overloaded
(``max_concurrency`` calls were in flight), circuit_open. Nothing a client sends
becomes a label.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

CALLS = Counter(
    "pushgate_proxy_calls_total",
    "Calls to the backend's proxies, by proxy, kind and result.",
    ["proxy", "kind", "result"],
)
DURATION = Histogram(
    "pushgate_proxy_duration_seconds",
    "How long the backend took to answer a proxy call (calls made, answered or not), "
    "by proxy and kind.",
    ["proxy", "kind"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
