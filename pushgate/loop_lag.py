"""How long the event loop was kept from running what was due: the node's responsiveness.

Every connection of a node shares one event loop, so one long stretch of work without a
pause — a burst of deliveries, a full garbage collection, a slow callback — delays every
other connection's reads, pings and writes. A watcher asks to be woken every ``EVERY``
seconds and measures how late it wakes: the lateness is the longest the loop was blocked
in that interval (to within the interval). Exported as the histogram
``pushgate_event_loop_lag_seconds`` and the gauge ``pushgate_event_loop_lag_max_seconds``
(the largest since the previous scrape); a lag over ``WARN_AFTER`` is logged.

A late wake has two causes an operator fixes differently: the loop's own thread kept busy
(a long callback, a full collection: the node's code) or the process waiting for a core
(the machine oversubscribed: more runnable processes than cores). The watcher reads the
thread's CPU clock too; ``pushgate_event_loop_lag_max_cpu_seconds`` is how much of the
longest lag the thread spent running (the rest it was off the CPU: waiting for a core, or
in a blocking system call), and the log line says both.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import REGISTRY, Collector
from prometheus_client.utils import floatToGoString

log = logging.getLogger("pushgate.loop")

#: how often the watcher wakes (the lag it reports is accurate to this)
EVERY = 0.05
#: a lag this long is logged
WARN_AFTER = 0.1
BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class LoopLag(Collector):
    """The watcher's figures, read when Prometheus scrapes (no lock on the loop's path)."""

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0
        self.worst = 0.0  # since the last scrape
        self.worst_cpu = 0.0  # of which the loop's thread was running
        self.worst_ever = 0.0

    def observe(self, lag: float, cpu: float = 0.0) -> None:
        index = next((i for i, bound in enumerate(BUCKETS) if lag <= bound), len(BUCKETS))
        self.counts[index] += 1
        self.total += lag
        if lag > self.worst:
            self.worst, self.worst_cpu = lag, min(cpu, lag)
        self.worst_ever = max(self.worst_ever, lag)

    def collect(self) -> Iterator[Any]:
        family = HistogramMetricFamily(
            "pushgate_event_loop_lag_seconds",
            "How late the event loop ran a timer due every 50 ms: how long it was blocked.",
        )
        cumulative, running = [], 0
        for count in self.counts:
            running += count
            cumulative.append(running)
        bounds = [*(floatToGoString(b) for b in BUCKETS), "+Inf"]
        family.add_metric([], list(zip(bounds, cumulative, strict=True)), self.total)
        yield family
        worst, self.worst = self.worst, 0.0
        worst_cpu, self.worst_cpu = self.worst_cpu, 0.0
        yield GaugeMetricFamily(
            "pushgate_event_loop_lag_max_seconds",
            "The longest the event loop was blocked since the previous scrape.",
            value=worst,
        )
        yield GaugeMetricFamily(
            "pushgate_event_loop_lag_max_cpu_seconds",
            "Of that longest block, the time the loop's thread was running (the rest it "
            "waited for a core).",
            value=worst_cpu,
        )


LOOP_LAG = LoopLag()
REGISTRY.register(LOOP_LAG)


async def watch(lag: LoopLag = LOOP_LAG, every: float = EVERY) -> None:
    """Run until cancelled: wake every ``every`` seconds and record how late."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + every
        cpu_before = time.thread_time()
        await asyncio.sleep(every)
        late = max(0.0, loop.time() - due)
        # the thread's CPU time over the whole interval less the sleep it asked for (in
        # which it may have run other callbacks): a lower bound of the block's own, to
        # within ``every``
        cpu = max(0.0, time.thread_time() - cpu_before - every)
        lag.observe(late, cpu)
        if late > WARN_AFTER:
            log.warning(
                "event loop blocked for %.3f s (%.3f s of it running; the rest off the "
                "CPU: waiting for a core, or a blocking call)",
                late,
                min(cpu, late),
            )
