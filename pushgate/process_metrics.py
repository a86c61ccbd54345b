"""The ``process_*`` metrics without walking the file descriptor table at each scrape.

prometheus-client's ProcessCollector counts open files by listing ``/proc/self/fd``:
with 17,000 connections in a worker that listing took 0.3 s of the worker's event loop
per scrape here (and a node's workers are scraped at once). Since Linux 6.2 the size
``stat`` gives for that directory is the number of open files, read in microseconds.
The library reads the count in the same step as the file limit and has no switch for
it, so this collector reports the same six metrics, with the same names and meanings,
from ``/proc/self/stat``, ``/proc/self/limits`` and that size; it lists the directory
only on a kernel that gives 0.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import PROCESS_COLLECTOR
from prometheus_client.registry import REGISTRY, Collector

PROC = "/proc/self"


def open_files(fd_dir: str = f"{PROC}/fd") -> int:
    """How many files this process has open: the directory's size where the kernel
    gives it (Linux ≥ 6.2), else its entries (less the one the listing itself opens)."""
    size = os.stat(fd_dir).st_size
    if size > 0:
        return size
    return len(os.listdir(fd_dir)) - 1


def _boot_time() -> float:
    with open("/proc/stat", "rb") as stat:
        for line in stat:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    return 0.0


class LeanProcessCollector(Collector):
    """``process_*`` as prometheus-client's ProcessCollector gives them, the open file
    count from one ``stat``."""

    def __init__(self) -> None:
        self.ticks = os.sysconf("SC_CLK_TCK")
        self.page = resource.getpagesize()
        try:
            self.boot = _boot_time()
        except OSError:
            self.boot = 0.0  # no /proc: nothing to report, as the library does

    def collect(self) -> Iterator[Metric]:
        if not self.boot:
            return
        try:
            with open(f"{PROC}/stat", "rb") as stat:
                parts = stat.read().split(b")")[-1].split()
        except OSError:
            pass
        else:
            yield GaugeMetricFamily(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                value=float(parts[20]),
            )
            yield GaugeMetricFamily(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                value=float(parts[21]) * self.page,
            )
            yield GaugeMetricFamily(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                value=float(parts[19]) / self.ticks + self.boot,
            )
            yield CounterMetricFamily(
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                value=(float(parts[11]) + float(parts[12])) / self.ticks,
            )
        try:
            count = open_files()
            limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        except OSError:
            return
        yield GaugeMetricFamily("process_open_fds", "Number of open file descriptors.", value=count)
        yield GaugeMetricFamily(
            "process_max_fds", "Maximum number of open file descriptors.", value=float(limit)
        )


def install() -> None:
    """Serve ``process_*`` from LeanProcessCollector instead of the library's own."""
    try:
        REGISTRY.unregister(PROCESS_COLLECTOR)
    except KeyError:
        return  # already replaced
    REGISTRY.register(LeanProcessCollector())
