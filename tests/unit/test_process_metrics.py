"""process_* metrics: the same names and figures as prometheus-client's ProcessCollector,
the open-file count without listing every file."""

from __future__ import annotations

import os

from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import REGISTRY

from pushgate import metrics  # noqa: F401  (installs the collector)
from pushgate.process_metrics import LeanProcessCollector, open_files


def figures(collector) -> dict[str, float]:
    return {family.name: family.samples[0].value for family in collector.collect()}


def test_open_files_counts_what_the_process_holds():
    before = open_files()
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(50)]
    try:
        assert open_files() == before + 50
        assert open_files() == len(os.listdir("/proc/self/fd")) - 1
    finally:
        for fd in held:
            os.close(fd)
    assert open_files() == before


def test_same_metrics_as_the_library():
    library = figures(ProcessCollector(registry=None))
    lean = figures(LeanProcessCollector())
    assert set(lean) == set(library)
    assert lean["process_max_fds"] == library["process_max_fds"]
    assert lean["process_start_time_seconds"] == library["process_start_time_seconds"]
    assert abs(lean["process_open_fds"] - library["process_open_fds"]) <= 1
    assert abs(lean["process_resident_memory_bytes"] - library["process_resident_memory_bytes"]) < (
        16 << 20
    )
    assert lean["process_cpu_seconds"] >= library["process_cpu_seconds"] - 0.02  # ticks, rounded


def test_the_default_registry_serves_the_lean_collector():
    names = {type(c).__name__ for c in REGISTRY._collector_to_names}
    assert "LeanProcessCollector" in names
    assert "ProcessCollector" not in names
    assert REGISTRY.get_sample_value("process_open_fds") == open_files()
