"""Before/after: the same benchmark against another commit's server, then this one's.

``python -m bench.compare REF SCENARIO [bench.run options…]``, e.g.
``python -m bench.compare ed0b26d idle --rounds 1 --idle-sizes 10000``;
``REF..REF2`` compares two commits (the server of REF2 instead of this checkout's), so
one change can be measured alone.

The source of REF is exported (``git archive``) to a temporary directory; the scenario
runs first with the server taken from there (``BENCH_SERVER_SOURCE``; not
``PUSHGATE_…``, which the server would read as configuration; see
bench.common.serve_command), then with this checkout's server. Load clients, settings
and machine are the same, back to back, so the ratio is what the change bought. Both
runs write their results to temporary directories (bench/results is left alone); the
headline figures of both are printed side by side with their ratio.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from bench.common import ROOT

#: result fields worth a line in the comparison (leaf names in the scenario's JSON)
HEADLINES = (
    "kib_per_connection",
    "deliveries_per_cpu_second",
    "deliveries_per_worker_cpu_second",
    "deliveries_per_second",
    "latency_p50_ms",
    "latency_p99_ms",
    "p50_ms",
    "p99_ms",
    "publications_per_second",
    "server_cpu_per_1000_deliveries",
    # c100k / c1m: what a connection costs
    "worker_cpu_ms_per_connection",
    "worker_cpu_us_per_connection_second",
    "workers_rss",
)


def export(ref: str, into: Path, name: str = "src") -> Path:
    archive = subprocess.run(
        ["git", "archive", "--format=tar", ref], cwd=ROOT, capture_output=True, check=True
    ).stdout
    path = into / f"{name}.tar"
    path.write_bytes(archive)
    with tarfile.open(path) as tar:
        tar.extractall(into / name, filter="data")
    return into / name


def run(args: list[str], results: Path, server: Path | None) -> int:
    env = dict(os.environ, BENCH_RESULTS_DIR=str(results))
    if server is not None:
        env["BENCH_SERVER_SOURCE"] = str(server)
    return subprocess.call([sys.executable, "-m", "bench.run", *args], cwd=ROOT, env=env)


def headlines(results: Path) -> dict[str, float]:
    """``scenario/path/to/field`` → value for the HEADLINES fields of every result file."""
    out: dict[str, float] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                if key in ("rounds", "machine"):
                    continue  # per-round samples: the medians are enough
                walk(f"{prefix}/{key}", inner)
        elif isinstance(value, int | float) and prefix.rsplit("/", 1)[-1] in HEADLINES:
            out[prefix] = float(value)

    for path in sorted(results.glob("*.json")):
        body = json.loads(path.read_text())
        walk(path.stem, body.get("results", body.get("throughput", {})))
    return out


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__)
        return 2
    ref, scenario_args = sys.argv[1], sys.argv[2:]
    ref, _, ref_after = ref.partition("..")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source_before = export(ref, work, "before-src")
        source_after = export(ref_after, work, "after-src") if ref_after else None
        before, after = work / "before", work / "after"
        before.mkdir()
        after.mkdir()
        print(f"== before: server of {ref}", flush=True)
        status = run(scenario_args, before, source_before)
        print(f"== after: server of {ref_after or 'this checkout'}", flush=True)
        status |= run(scenario_args, after, source_after)
        old, new = headlines(before), headlines(after)
        print(f"\n{'figure':<64} {'before':>10} {'after':>10} {'after/before':>12}")
        for key in sorted(old.keys() & new.keys()):
            ratio = new[key] / old[key] if old[key] else float("nan")
            print(f"{key:<64} {old[key]:>10.2f} {new[key]:>10.2f} {ratio:>11.2f}x")
    return status


if __name__ == "__main__":
    sys.exit(main())
