"""What every scenario shares: a progress bar, medians, the machine, results and plots.

``save`` writes ``bench/results/<scenario>.json`` and, when matplotlib is installed
(``pip install '.[bench]'``), one PNG per plot next to it. ``baseline_figure`` reads
the raw-asyncio baseline of the current run (or the last saved one) so any scenario can
give its deliveries per CPU-second as a ratio to the Python limit.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: where results go; bench.compare points it elsewhere so its runs leave these alone
RESULTS = Path(os.environ.get("BENCH_RESULTS_DIR") or ROOT / "bench" / "results")

#: figures measured earlier in this process (scenario -> results), for same-run ratios
THIS_RUN: dict[str, dict] = {}


class Progress:
    """A one-line progress bar on stderr: ``[#####-----] 5/10 label (12s)``."""

    def __init__(self, name: str, total: int) -> None:
        self.name = name
        self.total = max(1, total)
        self.done = 0
        self.started = time.monotonic()
        self.tty = sys.stderr.isatty()
        self.show("starting")

    def show(self, label: str) -> None:
        width = 24
        filled = int(width * self.done / self.total)
        bar = "#" * filled + "-" * (width - filled)
        line = (
            f"[{bar}] {self.done}/{self.total} {self.name}: {label} "
            f"({time.monotonic() - self.started:.0f}s)"
        )
        if self.tty:
            sys.stderr.write("\r\x1b[2K" + line)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def step(self, label: str) -> None:
        self.done = min(self.total, self.done + 1)
        self.show(label)

    def finish(self) -> None:
        self.done = self.total
        self.show("done")
        if self.tty:
            sys.stderr.write("\n")


def medians(samples: list[dict]) -> dict:
    """Key-wise median of the numeric fields of several rounds."""
    if not samples:
        return {}
    out = {}
    for key, value in samples[0].items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        out[key] = statistics.median(s[key] for s in samples if key in s)
    return out


def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    with contextlib.suppress(OSError, IndexError):
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nofile_limit": _nofile(),
    }


def _nofile() -> int:
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def baseline_figure(subscribers: int) -> float | None:
    """Raw-asyncio deliveries per CPU-second at this size: this run's, else the saved one."""
    for source in (THIS_RUN.get("baseline"), _load("baseline")):
        if not source:
            continue
        entry = source.get(str(subscribers))
        if entry is None and source:
            # the nearest size measured
            sizes = sorted(source, key=lambda k: abs(int(k) - subscribers))
            entry = source[sizes[0]]
        if entry:
            return entry["median"]["deliveries_per_server_cpu_second"]
    return None


def _load(scenario: str) -> dict | None:
    path = RESULTS / f"{scenario}.json"
    try:
        return json.loads(path.read_text()).get("results")
    except (OSError, ValueError):
        return None


def shown(path: Path) -> str:
    """A results path as printed: relative to the checkout when it is inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def save(scenario: str, results: dict, plots: list[dict] | None = None, **extra) -> Path:
    """Write the scenario's JSON and its PNG plots; remember the results for this run."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    THIS_RUN[scenario] = results
    out = RESULTS / f"{scenario}.json"
    body = {
        "scenario": scenario,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        **extra,
        "results": results,
    }
    out.write_text(json.dumps(body, indent=2))
    print(f"wrote {shown(out)}")
    for index, plot in enumerate(plots or []):
        png = RESULTS / (f"{scenario}.png" if index == 0 else f"{scenario}-{index + 1}.png")
        if draw(plot, png):
            print(f"wrote {shown(png)}")
    return out


def draw(plot: dict, path: Path) -> bool:
    """A bar chart: ``{"title", "ylabel", "labels": [...], "series": {name: [values]}}``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("  (no matplotlib: plots skipped; pip install '.[bench]')")
        return False
    labels = plot["labels"]
    series = plot["series"]
    fig, ax = plt.subplots(figsize=(7, 3.8), dpi=110)
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        xs = [x + (i - (len(series) - 1) / 2) * width for x in range(len(labels))]
        bars = ax.bar(xs, values, width, label=name)
        ax.bar_label(bars, labels=[_short(v) for v in values], fontsize=7, padding=2)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_title(plot["title"], fontsize=10)
    ax.set_ylabel(plot.get("ylabel", ""))
    if plot.get("hline") is not None:
        ax.axhline(plot["hline"], color="grey", linestyle="--", linewidth=0.8)
    if len(series) > 1:
        ax.legend(fontsize=8)
    ax.margins(y=0.15)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _short(value: float) -> str:
    if value is None:
        return ""
    if abs(value) >= 10_000:
        return f"{value / 1000:.0f}k"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.2f}"


def serve_command(config: Path, port: int, workers: int = 1) -> list[str]:
    """The command line of a pushgate server for a benchmark or the soak.

    With ``BENCH_SERVER_SOURCE`` set to another source checkout (bench.compare does
    this), the server runs that checkout's pushgate: the same load, another server.
    """
    command = [sys.executable, "-m", "pushgate", "serve", "--config", str(config)]
    other = os.environ.get("BENCH_SERVER_SOURCE")
    if other:
        # PYTHONSAFEPATH: the working directory does not shadow PYTHONPATH (workers too)
        command = ["env", f"PYTHONPATH={other}", "PYTHONSAFEPATH=1", *command]
    command += ["--port", str(port), "--log-level", "warning"]
    if workers > 1:
        command += ["--workers", str(workers)]
    return command


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0
