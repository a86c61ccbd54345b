"""`make soak`: a bounded soak of two workers with Redis under churn (not in CI).

``python -m soak.run [--seconds 600]`` (``SOAK_SECONDS`` in the environment too):

1. writes a config to a temporary directory (redis engine on a key prefix of this run's
   own, removed at the end) and starts ``pushgate serve --workers 2`` on a free port;
2. starts the load processes (soak/clients.py), all on 127.0.0.1:
   - ``steady``: subscribers connected for the whole run, each on two of the published
     channels, checking every publication arrives once and in offset order;
   - ``churn``: connections opened at a bounded rate, at most ``--churn-max-open`` at
     once, each connecting, subscribing, staying a random while and disconnecting;
   - ``publish``: ``/api/publish`` to a handful of channels at a moderate paced rate;
3. every ``--sample-every`` seconds reads each worker's RSS (``/proc/<pid>/status``;
   workers are the supervisor's children) and the nodes' counts from ``/api/info``;
4. when publishing stops, reads each channel's top offset and has the steady subscribers
   check that they received every publication up to it (a bounded wait);
5. stops the server, counts what it logged at WARNING and above by kind, drops its Redis
   keys, writes ``soak/results/soak.json`` and ``soak/results/rss.png``, prints a summary.

Exit status 1 when a connected client lost or doubled a publication or got one at or
below its subscribe reply's position ("behind position"), when a steady
subscriber never got its subscriptions, or when a load process failed; RSS growth after
warm-up is reported, not judged. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import aiohttp

from bench.common import machine, rss_kib, serve_command
from soak.clients import API_KEY, SECRET

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "soak" / "results"
REDIS_URL = os.environ.get("PUSHGATE_SOAK_REDIS_URL", "redis://127.0.0.1:6379/0")


def config_text(prefix: str) -> str:
    return f"""
[server]
name = "soak"
shutdown_timeout = "5s"
[token]
hmac_secret = "{SECRET}"
[api]
key = "{API_KEY}"
[engine]
type = "redis"
redis_url = "{REDIS_URL}"
redis_prefix = "{prefix}"
[client]
queue_max_bytes = 4194304
[[namespace]]
name = "soak"
presence = true
history_size = 1000
history_ttl = "600s"
force_recovery = true
allow_subscribe_for_client = true
"""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out += [int(c) for c in (task / "children").read_text().split()]
    return out


def worker_index(pid: int) -> str:
    """``--worker-index N`` from the worker's command line (the pid when unreadable)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        return argv[argv.index(b"--worker-index") + 1].decode()
    except (OSError, ValueError, IndexError):
        return f"pid{pid}"


def log_kinds(text: str) -> dict[str, int]:
    """WARNING/ERROR lines and tracebacks' last lines, by kind (numbers and ids masked)."""
    kinds: Counter = Counter()
    for line in text.splitlines():
        if " WARNING " in line or " ERROR " in line or " CRITICAL " in line:
            kind = line.split(" ", 3)[-1]
        elif re.match(r"^[\w.]+(Error|Exception)\b", line):
            kind = line
        else:
            continue
        kind = re.sub(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", "<id>", kind)
        kind = re.sub(r"[0-9a-f]{12,}", "<id>", kind)
        kind = re.sub(r"\d+", "N", kind)
        kinds[kind[:160]] += 1
    return dict(kinds)


class Load:
    """One soak/clients.py process: its JSON lines, its last stats and its final report."""

    def __init__(self, role: str, args: list[str]) -> None:
        self.role = role
        self.args = args
        self.process: asyncio.subprocess.Process | None = None
        self.ready = asyncio.Event()
        self.stats: dict = {}
        self.final: dict | None = None
        self.failed: str | None = None
        self.reader: asyncio.Task | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "soak.clients",
            self.role,
            *self.args,
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        while line := await self.process.stdout.readline():
            try:
                message = json.loads(line)
            except ValueError:
                continue
            phase = message.get("phase")
            if phase == "ready":
                self.ready.set()
            elif phase == "stats":
                self.stats = message
            elif phase == "final":
                self.final = message
            elif phase == "failed":
                self.failed = message.get("reason", "failed")
                self.ready.set()
        if self.final is None and self.failed is None:
            self.failed = f"exited with status {await self.process.wait()} before its report"
        self.ready.set()

    async def wait_ready(self, timeout: float) -> None:
        await asyncio.wait_for(self.ready.wait(), timeout)
        if self.failed:
            raise RuntimeError(f"{self.role}: {self.failed}")

    def send(self, command: dict) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write((json.dumps(command) + "\n").encode())

    async def finish(self, timeout: float) -> dict | None:
        """Wait (bounded) for the process's final report and its exit."""
        assert self.process is not None and self.reader is not None
        try:
            await asyncio.wait_for(asyncio.shield(self.reader), timeout)
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            self.failed = self.failed or "did not finish in time"
            self.kill()
        return self.final

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()


class Server:
    """``pushgate serve --workers 2``, its output in a log file."""

    def __init__(self, workdir: Path, workers: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "soak.toml"
        self.log_path = workdir / "pushgate.log"
        self.log = self.log_path.open("wb")
        self.process = None
        self.command = serve_command(config, self.port, workers)

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self.command, cwd=ROOT, stdout=self.log, stderr=asyncio.subprocess.STDOUT
        )

    async def api(self, session: aiohttp.ClientSession, method: str, params: dict) -> dict:
        async with session.post(
            f"{self.url}/api/{method}",
            json=params,
            headers={"X-API-Key": API_KEY},
            timeout=aiohttp.ClientTimeout(total=10),
        ) as response:
            reply = await response.json(content_type=None)
        if "result" not in reply:
            raise RuntimeError(f"api {method}: {reply}")
        return reply["result"]

    async def wait_nodes(self, session: aiohttp.ClientSession, count: int) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.returncode is not None:
                raise RuntimeError(f"pushgate exited with status {self.process.returncode}")
            with contextlib.suppress(aiohttp.ClientError, RuntimeError, OSError):
                if len((await self.api(session, "info", {}))["nodes"]) >= count:
                    return
            await asyncio.sleep(0.3)
        raise RuntimeError(f"{count} pushgate nodes did not come up in 30 s")

    def workers(self) -> dict[str, int]:
        return {worker_index(pid): pid for pid in children(self.process.pid)}

    async def stop(self) -> int | None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        self.log.close()
        return self.process.returncode


def drop_keys(prefix: str) -> int:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])
    client.close()
    return len(keys)


def count_keys(prefix: str) -> int:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        return sum(1 for _ in client.scan_iter(match=f"{prefix}:*", count=1000))
    finally:
        client.close()


async def sample(server: Server, session: aiohttp.ClientSession, started: float, loads, prefix):
    row: dict = {"t": round(time.monotonic() - started, 1), "rss_kib": {}, "nodes": {}}
    for index, pid in server.workers().items():
        with contextlib.suppress(OSError):
            row["rss_kib"][index] = rss_kib(pid)
            row.setdefault("pids", {})[index] = pid
    with contextlib.suppress(aiohttp.ClientError, RuntimeError, OSError, TimeoutError):
        for node in (await server.api(session, "info", {}))["nodes"]:
            row["nodes"][node.get("name", node.get("uid"))] = {
                k: node.get(k) for k in ("num_clients", "num_channels", "num_subs", "num_users")
            }
    with contextlib.suppress(Exception):
        row["redis_keys"] = await asyncio.to_thread(count_keys, prefix)
    churn = loads["churn"].stats
    row["churn_open"] = churn.get("open")
    row["churn_started"] = churn.get("churn", {}).get("started")
    row["published"] = loads["publish"].stats.get("accepted")
    return row


async def soak(args) -> dict:
    prefix = f"pgsoak-{uuid.uuid4().hex[:10]}"
    workdir = Path(tempfile.mkdtemp(prefix="pushgate-soak-"))
    (workdir / "soak.toml").write_text(config_text(prefix))
    server = Server(workdir, args.workers)
    report: dict = {
        "seconds": args.seconds,
        "workers": args.workers,
        "redis_prefix": prefix,
        "settings": {
            "steady_subscribers": args.steady,
            "channels": args.channels,
            "publish_rate_per_channel": args.publish_rate,
            "churn_rate": args.churn_rate,
            "churn_max_open": args.churn_max_open,
            "churn_hold_seconds": [args.hold_min, args.hold_max],
        },
        "problems": [],
    }
    samples: list[dict] = []
    report["samples"] = samples
    loads: dict[str, Load] = {}
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            await server.wait_nodes(session, args.workers)
            port = ["--port", str(server.port), "--channels", str(args.channels)]
            bound = str(args.seconds + 300)
            loads["steady"] = Load(
                "steady", [*port, "--connections", str(args.steady), "--max-seconds", bound]
            )
            await loads["steady"].start()
            await loads["steady"].wait_ready(150)
            print(f"soak: {args.steady} steady subscribers ready", file=sys.stderr)
            loads["publish"] = Load(
                "publish", [*port, "--rate", str(args.publish_rate), "--seconds", str(args.seconds)]
            )
            loads["churn"] = Load(
                "churn",
                [
                    *port,
                    "--rate",
                    str(args.churn_rate),
                    "--max-open",
                    str(args.churn_max_open),
                    "--seconds",
                    str(args.seconds),
                    "--hold-min",
                    str(args.hold_min),
                    "--hold-max",
                    str(args.hold_max),
                ],
            )
            started = time.monotonic()
            await loads["publish"].start()
            await loads["churn"].start()
            end = started + args.seconds
            next_sample = started
            # the sampling loop: bounded by the run's length (plus the churners' wind-down)
            hard_end = end + args.hold_max + 60
            while time.monotonic() < hard_end:
                if server.process.returncode is not None:
                    report["problems"].append(
                        f"pushgate exited with status {server.process.returncode} during the run"
                    )
                    break
                if time.monotonic() >= next_sample:
                    next_sample += args.sample_every
                    row = await sample(server, session, started, loads, prefix)
                    samples.append(row)
                    rss = ", ".join(f"w{k} {v / 1024:.0f} MiB" for k, v in row["rss_kib"].items())
                    print(
                        f"soak {row['t']:>5.0f}s/{args.seconds:.0f}: RSS {rss}; churn open "
                        f"{row['churn_open']}, started {row['churn_started']}; "
                        f"published {row['published']}",
                        file=sys.stderr,
                    )
                if (
                    time.monotonic() >= end
                    and loads["publish"].reader.done()
                    and loads["churn"].reader.done()
                ):
                    break
                await asyncio.sleep(0.5)
            # the run is over: publisher and churners report, then the steady check
            for role in ("publish", "churn"):
                await loads[role].finish(args.hold_max + 60)
            samples.append(await sample(server, session, started, loads, prefix))
            tops = {}
            for n in range(args.channels):
                channel = f"soak:c{n}"
                tops[channel] = int(
                    (await server.api(session, "history", {"channel": channel, "limit": 0})).get(
                        "offset", 0
                    )
                )
            report["top_offsets"] = tops
            loads["steady"].send({"cmd": "final", "tops": tops})
            await loads["steady"].finish(120)
            report["nodes_after_churn"] = samples[-1]["nodes"]
            await asyncio.sleep(3)  # the steady subscribers' disconnects settle
    finally:
        for load in loads.values():
            load.kill()
        server.log.flush()
        during = server.log_path.stat().st_size
        report["server_exit_status"] = await server.stop()
        text = server.log_path.read_bytes()
        report["server_log"] = log_kinds(text[:during].decode(errors="replace"))
        report["server_log_shutdown"] = log_kinds(text[during:].decode(errors="replace"))
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "pushgate.log").write_bytes(text[-4_000_000:])
        shutil.rmtree(workdir, ignore_errors=True)
        try:
            report["redis_keys_dropped"] = drop_keys(prefix)
        except Exception as exc:
            report["problems"].append(f"cannot drop the redis keys {prefix}:*: {exc}")
    for role, load in loads.items():
        report[role] = load.final
        if load.failed:
            report["problems"].append(f"{role}: {load.failed}")
    return report


def summarise(report: dict, warmup: float) -> tuple[dict, list[str]]:
    """The figures of the summary, and the failures (lost, doubled, broken load)."""
    samples = report["samples"]
    steady = report.get("steady") or {}
    churn = (report.get("churn") or {}).get("churn", {})
    publish = report.get("publish") or {}
    during = [s for s in samples if s["t"] <= report["seconds"]] or samples
    at_warmup = next((s for s in during if s["t"] >= warmup), during[0] if during else None)
    at_end = during[-1] if during else None
    rss = {}
    for index in sorted((at_end or {}).get("rss_kib", {})):
        start = (at_warmup or {}).get("rss_kib", {}).get(index)
        stop = at_end["rss_kib"][index]
        series = [s["rss_kib"][index] for s in during if index in s["rss_kib"]]
        after = [
            (s["t"], s["rss_kib"][index])
            for s in during
            if s["t"] >= warmup and index in s["rss_kib"]
        ]
        rss[f"worker{index}"] = {
            "warmup_mib": round(start / 1024, 1) if start else None,
            "end_mib": round(stop / 1024, 1),
            "growth_mib": round((stop - start) / 1024, 1) if start else None,
            "max_mib": round(max(series) / 1024, 1),
            "slope_mib_per_min_after_warmup": slope(after),
        }
    errors: Counter = Counter()
    for role in ("steady", "churn", "publish"):
        errors.update((report.get(role) or {}).get("errors", {}))
    lost = steady.get("lost", 0) + churn.get("lost", 0)
    doubled = steady.get("doubled", 0) + churn.get("doubled", 0)
    behind = steady.get("behind_position", 0) + churn.get("behind_position", 0)
    stored = sum(report.get("top_offsets", {}).values())
    figures = {
        "warmup_seconds": warmup,
        "rss": rss,
        "redis_keys": [s.get("redis_keys") for s in (at_warmup, at_end) if s],
        "publications_accepted": publish.get("accepted"),
        "publications_stored": stored,
        "steady_expected": steady.get("expected"),
        "steady_verified": steady.get("in_order"),
        "churn_verified": churn.get("deliveries_in_order", 0),
        "deliveries_verified": steady.get("in_order", 0) + churn.get("deliveries_in_order", 0),
        "lost": lost,
        "doubled": doubled,
        "steady_lost": steady.get("lost"),
        "steady_doubled": steady.get("doubled"),
        "churn_lost": churn.get("lost", 0),
        "churn_doubled": churn.get("doubled", 0),
        "behind_position": behind,
        "steady_behind_position": steady.get("behind_position", 0),
        "churn_behind_position": churn.get("behind_position", 0),
        "pushed_before_subscribe_reply": steady.get("pushed_before_reply", 0)
        + churn.get("pushed_before_reply", 0),
        "churn": churn,
        "examples": (steady.get("examples") or [])
        + ((report.get("churn") or {}).get("examples") or []),
        "errors_by_kind": dict(errors.most_common()),
        "server_log_by_kind": report.get("server_log", {}),
        "server_log_at_shutdown_by_kind": report.get("server_log_shutdown", {}),
    }
    failures = list(report["problems"])
    if lost or doubled:
        failures.append(f"{lost} publications lost and {doubled} doubled for connected clients")
    if behind:
        failures.append(
            f"{behind} publications pushed after a subscribe reply whose position already "
            "covered them (a duplicate when the reply recovered them)"
        )
    if not steady:
        failures.append("no report from the steady subscribers")
    elif steady.get("never_subscribed"):
        failures.append(f"{steady['never_subscribed']} steady subscriptions never made")
    if publish and publish.get("accepted") is not None and stored < publish["accepted"]:
        failures.append(f"{publish['accepted']} publications accepted but {stored} stored")
    return figures, failures


def slope(points: list[tuple[float, int]]) -> float | None:
    """Least-squares RSS slope in MiB per minute."""
    if len(points) < 3:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_r = sum(r for _, r in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if not var:
        return None
    cov = sum((t - mean_t) * (r - mean_r) for t, r in points)
    return round(cov / var * 60 / 1024, 2)


def plot(report: dict, warmup: float, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("  (no matplotlib: rss.png skipped; pip install '.[bench]')")
        return False
    samples = report["samples"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), dpi=110, sharex=True)
    indexes = sorted({i for s in samples for i in s["rss_kib"]})
    for index in indexes:
        points = [(s["t"], s["rss_kib"][index] / 1024) for s in samples if index in s["rss_kib"]]
        top.plot([p[0] for p in points], [p[1] for p in points], label=f"worker {index}")
    top.axvline(warmup, color="grey", linestyle="--", linewidth=0.8, label="end of warm-up")
    top.set_ylabel("RSS (MiB)")
    top.set_ylim(bottom=0)
    top.set_title(
        f"pushgate soak: 2 workers, redis engine, {report['seconds']:.0f} s "
        f"({report['settings']['steady_subscribers']} steady, churn "
        f"{report['settings']['churn_rate']:.0f}/s)",
        fontsize=10,
    )
    top.legend(fontsize=8, loc="lower right")
    names = sorted({n for s in samples for n in s["nodes"]})
    for n, name in enumerate(names):
        for field, style in (("num_clients", "-"), ("num_channels", ":")):
            points = [(s["t"], s["nodes"][name][field]) for s in samples if name in s["nodes"]]
            bottom.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                linestyle=style,
                color=f"C{n}",
                label=f"{name} {field[4:]}",
            )
    bottom.set_xlabel("seconds")
    bottom.set_ylabel("per node")
    bottom.legend(fontsize=7, loc="upper right", ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m soak.run", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", 600)))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steady", type=int, default=1000, help="steady subscribers")
    parser.add_argument("--channels", type=int, default=5, help="published channels")
    parser.add_argument("--publish-rate", type=float, default=4, help="per channel per second")
    parser.add_argument("--churn-rate", type=float, default=100, help="new connections/s")
    parser.add_argument("--churn-max-open", type=int, default=2000)
    parser.add_argument("--hold-min", type=float, default=1.0, help="churn: seconds connected")
    parser.add_argument("--hold-max", type=float, default=20.0)
    parser.add_argument("--sample-every", type=float, default=5.0, help="RSS sampling, seconds")
    parser.add_argument(
        "--warmup", type=float, help="seconds (default: 20%% of the run, ≥ hold-max + 10, ≤ 120)"
    )
    args = parser.parse_args()
    if args.seconds <= 0 or args.churn_max_open > 18_000 or args.steady > 18_000:
        parser.error("--seconds must be > 0; at most 18,000 connections per load process")
    # warm-up: the churn population needs hold-max seconds to reach its level
    default_warmup = min(120.0, max(args.seconds * 0.2, args.hold_max + 10), args.seconds / 2)
    warmup = args.warmup if args.warmup is not None else default_warmup

    report = asyncio.run(soak(args))
    figures, failures = summarise(report, warmup)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "soak.json"
    out.write_text(
        json.dumps(
            {
                "scenario": "soak",
                "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "machine": machine(),
                "passed": not failures,
                "failures": failures,
                "summary": figures,
                **report,
            },
            indent=2,
        )
    )
    print(f"wrote {out.relative_to(ROOT)}")
    png = RESULTS / "rss.png"
    if report["samples"] and plot(report, warmup, png):
        print(f"wrote {png.relative_to(ROOT)}")

    print(f"\nsoak: {report['seconds']:.0f} s, {report['workers']} workers, redis engine")
    for worker, r in figures["rss"].items():
        print(
            f"  {worker} RSS: {r['warmup_mib']} MiB after warm-up ({warmup:.0f} s) -> "
            f"{r['end_mib']} MiB at the end ({r['growth_mib']:+} MiB; slope after warm-up "
            f"{r['slope_mib_per_min_after_warmup']} MiB/min; max {r['max_mib']} MiB)"
        )
    print(
        "  Redis keys under the run's prefix, after warm-up / at the end: "
        + " / ".join(str(k) for k in figures["redis_keys"])
        + " (a channel's stream position outlives it for engine.history_meta_ttl)"
    )
    churn = figures["churn"]
    print(
        f"  publications: {figures['publications_accepted']} accepted, "
        f"{figures['publications_stored']} stored"
    )
    print(
        f"  deliveries verified: {figures['deliveries_verified']} "
        f"(steady {figures['steady_verified']} of {figures['steady_expected']} expected, "
        f"churn {figures['churn_verified']})"
    )
    print(
        f"  lost {figures['lost']} (steady {figures['steady_lost']}, churn "
        f"{figures['churn_lost']}), doubled {figures['doubled']} (steady "
        f"{figures['steady_doubled']}, churn {figures['churn_doubled']})"
    )
    print(
        f"  churn: {churn.get('started', 0)} connections started, "
        f"{churn.get('subscribed', 0)} subscribed, {churn.get('closed_clean', 0)} closed "
        f"cleanly, {churn.get('aborted', 0)} aborted, {churn.get('aborted_in_flight', 0)} "
        f"aborted in flight; peak open {churn.get('peak_open', 0)}"
    )
    print(
        f"  pushed after a subscribe reply at or below its position: {figures['behind_position']}"
        f" (steady {figures['steady_behind_position']}, churn "
        f"{figures['churn_behind_position']})"
    )
    if figures["pushed_before_subscribe_reply"]:
        print(
            f"  pushed before their subscribe reply (at or below its position; not counted "
            f"as doubled): {figures['pushed_before_subscribe_reply']}"
        )
    for text in figures["examples"][:10]:
        print(f"    e.g. {text}")
    print("  errors by kind:", json.dumps(figures["errors_by_kind"]) or "{}")
    print("  server log by kind:", json.dumps(figures["server_log_by_kind"]))
    print("  server log at shutdown:", json.dumps(figures["server_log_at_shutdown_by_kind"]))
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        return 1
    print("passed: nothing lost, doubled or behind its subscribe position")
    return 0


if __name__ == "__main__":
    sys.exit(main())
