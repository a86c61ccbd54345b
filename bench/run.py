"""`make bench`: start a server, load it from another process, report figures.

Scenarios (``python -m bench.run [names…]``; all but ``c100k`` when none is named):

- ``baseline``: the Python limit: bench/baseline.py, a raw asyncio server writing one
  pre-built frame to every socket, fanned out to N subscribers by the same load client.
- ``fanout``: N subscribers (1k, 10k) of one channel, presence and history on,
  Centrifugo protocol over WebSocket; the API publishes M messages. Deliveries per
  second and per server CPU-second, and the ratio to ``baseline`` measured in this run;
  the same for the Protobuf protocol (``centrifuge-protobuf``), next to JSON, unless
  ``--no-protobuf``.
- ``personal``: N clients, each on its own channel and on a group channel of 10; one
  API batch wave publishes once to every channel. Deliveries/s, p50/p99.
- ``idle``: RSS per idle connection with 2 subscriptions at 10k and 18k connections,
  JSON and Protobuf connections (unless ``--no-protobuf``), next to the baseline
  server's.
- ``latency``: publish → receive p50/p99/p999 at 50% of the measured maximum rate.
- ``api``: publications accepted per second by ``/api/publish`` and ``/api/batch``.
- ``proxy`` (bench/proxybench.py): client RPCs answered by a backend through the rpc
  proxy, alone and under the ``api`` scenario's ``/api/publish`` load; connects through
  the connect proxy.
- ``transports`` (bench/transports.py), ``cluster`` (bench/cluster.py).
- ``c100k`` (bench/c100k.py): 100k connections, 6 workers + Redis, personal + group
  publications from several load processes; only when named (~5 minutes).

Every delivery scenario checks that each connection received every publication of
every channel it is on, in offset order: a loss, duplicate or reordering fails the
scenario (exit status 1). The load clients are separate processes written for speed
(raw asyncio protocols on uvloop) and report their own CPU. Server and load client are
pinned to different cores when the machine has two. Each figure is the median of
``--rounds`` rounds; a progress bar runs on stderr. Results: bench/results/<name>.json
and PNG plots (matplotlib, the ``bench`` extra). Everything runs on 127.0.0.1 and every
loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.common import (
    RESULTS,
    ROOT,
    Progress,
    baseline_figure,
    medians,
    rss_kib,
    save,
    serve_command,
)
from pushgate.auth import mint_connection_token

SECRET = "bench-secret-0123456789abcdef0123456789"
API_KEY = "bench-api-key"

CONFIG = f"""
[token]
hmac_secret = "{SECRET}"
[api]
key = "{API_KEY}"
[client]
queue_max_bytes = 8388608
[[namespace]]
name = "bench"
presence = true
history_size = 100
history_ttl = "300s"
force_recovery = true
allow_subscribe_for_client = true
"""

#: scenario name -> list of problems (loss, reorder, timeouts) seen in this run
FAILURES: dict[str, list[str]] = {}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def proc_cpu(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pin(cpu: int) -> list[str]:
    if (os.cpu_count() or 1) >= 2 and os.path.exists("/usr/bin/taskset"):
        return ["taskset", "-c", str(cpu)]
    return []


class Server:
    """pushgate (``kind="pushgate"``) or the raw baseline server, pinned to CPU 0."""

    def __init__(self, workdir: Path, kind: str = "pushgate", config_text: str = CONFIG) -> None:
        self.port = free_port()
        self.kind = kind
        if kind == "baseline":
            command = [sys.executable, "-m", "bench.baseline", "--port", str(self.port)]
        else:
            config = workdir / "bench.toml"
            config.write_text(config_text)
            command = serve_command(config, self.port)
        self.process = subprocess.Popen([*pin(0), *command], cwd=ROOT)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def wait_ready(self, session: aiohttp.ClientSession) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                async with session.get(f"http://127.0.0.1:{self.port}/health") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
        raise RuntimeError("server did not start")

    async def publish(self, session: aiohttp.ClientSession, channel: str) -> None:
        url = f"http://127.0.0.1:{self.port}/api/publish"
        body = {"channel": channel, "data": {"t": time.time()}}
        async with session.post(url, json=body, headers={"X-API-Key": API_KEY}) as response:
            assert response.status == 200, response.status

    async def batch(self, session: aiohttp.ClientSession, channels: list[str]) -> None:
        url = f"http://127.0.0.1:{self.port}/api/batch"
        now = time.time()
        commands = [{"publish": {"channel": c, "data": {"t": now}}} for c in channels]
        async with session.post(
            url, json={"commands": commands}, headers={"X-API-Key": API_KEY}
        ) as response:
            assert response.status == 200, response.status
            assert b'"error"' not in await response.read()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


class LoadClient:
    """bench/wsload.py in its own process (pinned to ``cpu``): N WebSocket subscribers.

    ``native=True`` runs bench/wsload.c instead (same flags and output, built on demand
    by bench/native.py), whose CPU per delivery is a small fraction of the Python one's.
    """

    def __init__(
        self,
        port: int,
        connections: int,
        channels: list[str],
        workdir: Path,
        cpu: int | None = 1,
        sample_every: int | None = None,
        group_size: int = 10,
        native: bool = False,
        protobuf: bool = False,
    ) -> None:
        tokens = workdir / "tokens.txt"
        users = min(connections, 1000)
        tokens.write_text(
            "\n".join(mint_connection_token(SECRET, f"user{i}", ttl=3600) for i in range(users))
        )
        if native:
            from bench.native import native_client

            program = [str(native_client())]
        else:
            program = [sys.executable, "-m", "bench.wsload"]
        args = [
            *(pin(cpu) if cpu is not None else []),
            *program,
            "--port",
            str(port),
            "--connections",
            str(connections),
            "--tokens",
            str(tokens),
            "--group-size",
            str(group_size),
        ]
        if sample_every:
            args += ["--sample-every", str(sample_every)]
        if protobuf:
            args.append("--protobuf")
        for channel in channels:
            args += ["--channel", channel]
        self.process = subprocess.Popen(
            args, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("load client exited")
        return json.loads(line)

    async def aread(self, timeout: float = 180.0) -> dict:
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(None, self.read), timeout)
        except TimeoutError:
            self.process.kill()  # unblocks the reading thread
            raise RuntimeError("load client did not answer in time") from None

    def send(self, command: dict) -> None:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    async def expect(self, count: int, per_connection: int | None, timeout: float = 120) -> None:
        self.send(
            {"cmd": "expect", "count": count, "per_connection": per_connection, "timeout": timeout}
        )
        assert (await self.aread())["phase"] == "expecting"

    def stop(self) -> None:
        try:
            self.send({"cmd": "quit"})
            self.process.wait(20)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            self.process.kill()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def verify(scenario: str, label: str, report: dict, expected: int) -> bool:
    """Every connection got every publication, in order; a miss is recorded as a failure."""
    problems = []
    if not report["complete"] or report["received"] != expected:
        problems.append(f"received {report['received']} of {expected}")
    if report.get("order_errors"):
        problems.append(
            f"{report['order_errors']} out-of-order/duplicate/gap: {report['order_examples']}"
        )
    if report.get("short_connections"):
        problems.append(
            f"{report['short_connections']} connections short (per connection "
            f"{report['per_connection_min']}..{report['per_connection_max']})"
        )
    for problem in problems:
        FAILURES.setdefault(scenario, []).append(f"{label}: {problem}")
        print(f"  FAILED {scenario} {label}: {problem}", file=sys.stderr)
    return not problems


def delivery_figures(report: dict, started: float, cpu: float) -> dict:
    elapsed = report["at"] - started
    deliveries = report["received"]
    lat = report["latencies"]
    return {
        "deliveries": deliveries,
        "seconds": elapsed,
        "deliveries_per_second": deliveries / elapsed,
        "server_cpu_seconds": cpu,
        "deliveries_per_server_cpu_second": deliveries / max(cpu, 1e-9),
        "client_cpu_seconds": report["client_cpu"],
        "client_cpu_share": report["client_cpu"] / max(elapsed, 1e-9),
        "latency_p50_ms": percentile(lat, 0.5) * 1000,
        "latency_p99_ms": percentile(lat, 0.99) * 1000,
        "latency_p999_ms": percentile(lat, 0.999) * 1000,
        "latency_samples": len(lat),
    }


# --- fan-out (pushgate and the raw baseline) ----------------------------------------------


async def fanout_round(
    session: aiohttp.ClientSession, server: Server, client: LoadClient, n: int, messages: int
) -> tuple[dict, dict]:
    await client.expect(n * messages, messages)
    cpu0 = proc_cpu(server.pid)
    started = time.time()
    for _ in range(messages):
        await server.publish(session, "bench:fanout")
    report = await client.aread()
    return delivery_figures(report, started, proc_cpu(server.pid) - cpu0), report


async def fanout_size(
    kind: str,
    n: int,
    messages: int,
    rounds: int,
    progress: Progress,
    scenario: str,
    protobuf: bool = False,
) -> dict:
    async with aiohttp.ClientSession() as session:
        with tempfile.TemporaryDirectory() as tmp:
            server = Server(Path(tmp), kind)
            client = None
            label = f"{kind} protobuf" if protobuf else kind
            try:
                await server.wait_ready(session)
                client = LoadClient(server.port, n, ["bench:fanout"], Path(tmp), protobuf=protobuf)
                ready = await client.aread()
                progress.show(f"{label} n={n}: {n} subscribers ready in {ready['seconds']:.1f}s")
                # warm-up round, verified too (its first publication sets each connection's start)
                _, report = await fanout_round(session, server, client, n, max(1, messages // 10))
                verify(scenario, f"{label} n={n} warm-up", report, n * max(1, messages // 10))
                samples = []
                for r in range(rounds):
                    sample, report = await fanout_round(session, server, client, n, messages)
                    sample["verified"] = verify(
                        scenario, f"{label} n={n} round {r + 1}", report, n * messages
                    )
                    samples.append(sample)
                    progress.step(
                        f"{label} n={n} round {r + 1}/{rounds}: "
                        f"{sample['deliveries_per_server_cpu_second']:,.0f}/CPU-s"
                    )
                rss = rss_kib(server.pid)
            finally:
                if client is not None:
                    client.stop()
                server.stop()
    return {
        "server": kind,
        "protocol": "protobuf" if protobuf else "json",
        "subscribers": n,
        "messages_per_round": messages,
        "server_rss_kib": rss,
        "rounds": samples,
        "median": medians(samples),
        "all_verified": all(s["verified"] for s in samples),
    }


def _sizes(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s]


def fanout_messages(args, n: int) -> int:
    """Publications per round: --messages, else enough for ~200k deliveries (at least 50)."""
    return args.messages or max(50, 200_000 // n)


def run_baseline(args) -> None:
    sizes = _sizes(args.sizes)
    progress = Progress("baseline", len(sizes) * args.rounds)
    results = {
        str(n): asyncio.run(
            fanout_size("baseline", n, fanout_messages(args, n), args.rounds, progress, "baseline")
        )
        for n in sizes
    }
    progress.finish()
    save("baseline", results, [_fanout_plot({"baseline (raw asyncio)": results}, sizes)])
    for n, r in results.items():
        m = r["median"]
        print(
            f"baseline n={n}: {m['deliveries_per_server_cpu_second']:,.0f} deliveries per "
            f"server CPU-s, {m['deliveries_per_second']:,.0f}/s, "
            f"client CPU {m['client_cpu_share']:.0%} of wall"
        )


def _fanout_plot(series: dict[str, dict], sizes: list[int]) -> dict:
    return {
        "title": "fan-out: deliveries per server CPU-second (median)",
        "ylabel": "deliveries / CPU-s",
        "labels": [f"{n:,} subscribers" for n in sizes],
        "series": {
            name: [res[str(n)]["median"]["deliveries_per_server_cpu_second"] for n in sizes]
            for name, res in series.items()
        },
    }


def run_fanout(args) -> None:
    from bench.common import THIS_RUN

    sizes = _sizes(args.sizes)
    need_baseline = [n for n in sizes if str(n) not in THIS_RUN.get("baseline", {})]
    variants = 1 if args.no_protobuf else 2
    progress = Progress("fanout", (variants * len(sizes) + len(need_baseline)) * args.rounds)
    results = {}
    base = dict(THIS_RUN.get("baseline", {}))
    for n in sizes:
        messages = fanout_messages(args, n)
        results[str(n)] = asyncio.run(
            fanout_size("pushgate", n, messages, args.rounds, progress, "fanout")
        )
        if not args.no_protobuf:
            results[str(n)]["protobuf"] = asyncio.run(
                fanout_size("pushgate", n, messages, args.rounds, progress, "fanout", True)
            )
        if n in need_baseline:
            base[str(n)] = asyncio.run(
                fanout_size(
                    "baseline", n, fanout_messages(args, n), args.rounds, progress, "fanout"
                )
            )
    progress.finish()
    for n, r in results.items():
        raw = base[n]["median"]["deliveries_per_server_cpu_second"]
        r["baseline_median"] = base[n]["median"]
        r["ratio_to_baseline"] = r["median"]["deliveries_per_server_cpu_second"] / raw
        if "protobuf" in r:
            figure = r["protobuf"]["median"]["deliveries_per_server_cpu_second"]
            r["protobuf"]["ratio_to_baseline"] = figure / raw
            json_figure = r["median"]["deliveries_per_server_cpu_second"]
            r["protobuf"]["ratio_to_json"] = figure / json_figure
    if need_baseline:
        save("baseline", base, [_fanout_plot({"baseline (raw asyncio)": base}, sizes)])
    series = {"pushgate JSON": results}
    if not args.no_protobuf:
        series["pushgate Protobuf"] = {n: r["protobuf"] for n, r in results.items()}
    series["baseline (raw asyncio)"] = base
    save("fanout", results, [_fanout_plot(series, sizes)])
    for n, r in results.items():
        for name, figures in (("json", r), ("protobuf", r.get("protobuf"))):
            if figures is None:
                continue
            m = figures["median"]
            print(
                f"fanout n={n} {name}: median {m['deliveries_per_server_cpu_second']:,.0f} per "
                f"server CPU-s ({figures['ratio_to_baseline']:.2f}x baseline), "
                f"{m['deliveries_per_second']:,.0f}/s, p50 {m['latency_p50_ms']:.1f} ms, "
                f"p99 {m['latency_p99_ms']:.1f} ms, client CPU {m['client_cpu_share']:.0%} of wall"
            )


# --- personal + group channels --------------------------------------------------------------


async def personal_size(n: int, waves: int, rounds: int, progress: Progress) -> dict:
    personal = [f"bench:u{i}" for i in range(n)]
    groups = [f"bench:g{g}" for g in range((n + 9) // 10)]
    channels = personal + groups
    async with aiohttp.ClientSession() as session:
        with tempfile.TemporaryDirectory() as tmp:
            server = Server(Path(tmp))
            client = None
            try:
                await server.wait_ready(session)
                client = LoadClient(
                    server.port, n, ["bench:u{i}", "bench:g{g}"], Path(tmp), group_size=10
                )
                ready = await client.aread()
                progress.show(f"personal n={n}: ready in {ready['seconds']:.1f}s")

                async def one(waves: int) -> tuple[dict, dict]:
                    await client.expect(2 * n * waves, 2 * waves)
                    cpu0 = proc_cpu(server.pid)
                    started = time.time()
                    for _ in range(waves):
                        for i in range(0, len(channels), 500):
                            await server.batch(session, channels[i : i + 500])
                    report = await client.aread()
                    return delivery_figures(report, started, proc_cpu(server.pid) - cpu0), report

                _, report = await one(1)
                verify("personal", f"n={n} warm-up", report, 2 * n)
                samples = []
                for r in range(rounds):
                    sample, report = await one(waves)
                    sample["publications"] = len(channels) * waves
                    sample["verified"] = verify(
                        "personal", f"n={n} round {r + 1}", report, 2 * n * waves
                    )
                    samples.append(sample)
                    progress.step(
                        f"n={n} round {r + 1}/{rounds}: {sample['deliveries_per_second']:,.0f}/s"
                    )
            finally:
                if client is not None:
                    client.stop()
                server.stop()
    result = {
        "connections": n,
        "channels": len(channels),
        "waves_per_round": waves,
        "rounds": samples,
        "median": medians(samples),
        "all_verified": all(s["verified"] for s in samples),
    }
    raw = baseline_figure(n)
    if raw:
        result["ratio_to_baseline_fanout"] = (
            result["median"]["deliveries_per_server_cpu_second"] / raw
        )
    return result


def run_personal(args) -> None:
    sizes = _sizes(args.personal_sizes)
    progress = Progress("personal", len(sizes) * args.rounds)
    results = {
        str(n): asyncio.run(personal_size(n, args.personal_waves, args.rounds, progress))
        for n in sizes
    }
    progress.finish()
    plots = [
        {
            "title": "personal + group channels: deliveries (median)",
            "ylabel": "deliveries",
            "labels": [f"{n:,} clients" for n in sizes],
            "series": {
                "per second": [results[str(n)]["median"]["deliveries_per_second"] for n in sizes],
                "per server CPU-s": [
                    results[str(n)]["median"]["deliveries_per_server_cpu_second"] for n in sizes
                ],
            },
        }
    ]
    save("personal", results, plots)
    for n, r in results.items():
        m = r["median"]
        ratio = r.get("ratio_to_baseline_fanout")
        print(
            f"personal n={n}: {m['deliveries_per_second']:,.0f} deliveries/s, "
            f"{m['deliveries_per_server_cpu_second']:,.0f} per server CPU-s"
            + (f" ({ratio:.2f}x baseline fan-out)" if ratio else "")
            + f", p50 {m['latency_p50_ms']:.1f} ms, p99 {m['latency_p99_ms']:.1f} ms"
        )


# --- idle connections -----------------------------------------------------------------------


async def idle_size(kind: str, n: int, progress: Progress, protobuf: bool = False) -> dict:
    async with aiohttp.ClientSession() as session:
        with tempfile.TemporaryDirectory() as tmp:
            server = Server(Path(tmp), kind)
            client = None
            try:
                await server.wait_ready(session)
                await asyncio.sleep(1.0)
                before = rss_kib(server.pid)
                client = LoadClient(
                    server.port,
                    n,
                    ["bench:u{i}", "bench:g{g}"],
                    Path(tmp),
                    group_size=10,
                    protobuf=protobuf,
                )
                ready = await client.aread(timeout=300)
                await asyncio.sleep(2.0)
                samples = []
                for _ in range(3):
                    samples.append(rss_kib(server.pid))
                    await asyncio.sleep(0.5)
                after = sorted(samples)[1]
                # then check the connections work: one publication on every channel
                channels = [f"bench:u{i}" for i in range(n)] + [
                    f"bench:g{g}" for g in range((n + 9) // 10)
                ]
                await client.expect(2 * n, 2)
                for i in range(0, len(channels), 500):
                    await server.batch(session, channels[i : i + 500])
                label = f"{kind} protobuf" if protobuf else kind
                verified = verify("idle", f"{label} n={n}", await client.aread(), 2 * n)
                progress.step(f"{label} n={n}: {(after - before) / n:.2f} KiB/connection")
            finally:
                if client is not None:
                    client.stop()
                server.stop()
    return {
        "server": kind,
        "protocol": "protobuf" if protobuf else "json",
        "connections": n,
        "subscriptions_per_connection": 2,
        "connect_seconds": ready["seconds"],
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_connection": (after - before) / n,
        "verified": verified,
    }


def run_idle(args) -> None:
    sizes = _sizes(args.idle_sizes)
    kinds = ["pushgate"] if args.no_protobuf else ["pushgate", "pushgate_protobuf"]
    progress = Progress("idle", (len(kinds) + 1) * len(sizes))
    results = {}
    for n in sizes:
        results[str(n)] = {
            "pushgate": asyncio.run(idle_size("pushgate", n, progress)),
            "baseline": asyncio.run(idle_size("baseline", n, progress)),
        }
        r = results[str(n)]
        raw = r["baseline"]["kib_per_connection"]
        r["ratio_to_baseline"] = r["pushgate"]["kib_per_connection"] / raw
        if not args.no_protobuf:
            r["pushgate_protobuf"] = asyncio.run(idle_size("pushgate", n, progress, True))
            r["protobuf_ratio_to_baseline"] = r["pushgate_protobuf"]["kib_per_connection"] / raw
    progress.finish()
    plots = [
        {
            "title": "RSS per idle connection, 2 subscriptions each (target: 10 KiB)",
            "ylabel": "KiB per connection",
            "labels": [f"{n:,} connections" for n in sizes],
            "series": {
                kind: [results[str(n)][kind]["kib_per_connection"] for n in sizes]
                for kind in (*kinds, "baseline")
            },
            "hline": 10,
        }
    ]
    save("idle", results, plots)
    for n, r in results.items():
        protobuf = (
            f"Protobuf {r['pushgate_protobuf']['kib_per_connection']:.2f} KiB "
            f"({r['protobuf_ratio_to_baseline']:.2f}x baseline), "
            if "pushgate_protobuf" in r
            else ""
        )
        print(
            f"idle n={n}: pushgate JSON {r['pushgate']['kib_per_connection']:.2f} KiB/connection "
            f"({r['ratio_to_baseline']:.2f}x baseline), {protobuf}"
            f"raw baseline {r['baseline']['kib_per_connection']:.2f} KiB"
        )


# --- latency at half the maximum rate -------------------------------------------------------


async def latency_run(n: int, seconds: float, rounds: int, progress: Progress) -> dict:
    async with aiohttp.ClientSession() as session:
        with tempfile.TemporaryDirectory() as tmp:
            server = Server(Path(tmp))
            client = None
            try:
                await server.wait_ready(session)
                client = LoadClient(
                    server.port, n, ["bench:fanout"], Path(tmp), sample_every=max(1, n // 250)
                )
                await client.aread()
                burst = 200
                maxima = []
                for r in range(2):
                    sample, report = await fanout_round(session, server, client, n, burst)
                    verify("latency", f"max-rate burst {r + 1}", report, n * burst)
                    maxima.append(sample["deliveries_per_second"] / n)
                max_rate = max(maxima)
                rate = max_rate / 2
                progress.step(f"max {max_rate:.0f} publications/s; pacing at {rate:.0f}/s")
                count = max(1, int(rate * seconds))
                samples = []
                for r in range(rounds):
                    await client.expect(n * count, count, timeout=seconds + 60)
                    cpu0 = proc_cpu(server.pid)
                    started = time.time()
                    for k in range(count):
                        delay = started + k / rate - time.time()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        await server.publish(session, "bench:fanout")
                    report = await client.aread()
                    sample = delivery_figures(report, started, proc_cpu(server.pid) - cpu0)
                    sample["verified"] = verify("latency", f"round {r + 1}", report, n * count)
                    samples.append(sample)
                    progress.step(f"round {r + 1}/{rounds}: p99 {sample['latency_p99_ms']:.1f} ms")
            finally:
                if client is not None:
                    client.stop()
                server.stop()
    return {
        "subscribers": n,
        "max_publications_per_second": max_rate,
        "max_deliveries_per_second": max_rate * n,
        "paced_publications_per_second": rate,
        "publications_per_round": count,
        "rounds": samples,
        "median": medians(samples),
        "all_verified": all(s["verified"] for s in samples),
    }


def run_latency(args) -> None:
    progress = Progress("latency", 1 + args.rounds)
    result = asyncio.run(
        latency_run(args.latency_subscribers, args.latency_seconds, args.rounds, progress)
    )
    progress.finish()
    m = result["median"]
    plots = [
        {
            "title": (
                f"publish → receive at 50% of max ({result['paced_publications_per_second']:.0f}"
                f" pub/s x {result['subscribers']:,} subscribers); target p99 ≤ 20 ms"
            ),
            "ylabel": "ms",
            "labels": ["p50", "p99", "p99.9"],
            "series": {
                "pushgate": [m["latency_p50_ms"], m["latency_p99_ms"], m["latency_p999_ms"]]
            },
            "hline": 20,
        }
    ]
    save("latency", {str(args.latency_subscribers): result}, plots)
    print(
        f"latency n={result['subscribers']} at {result['paced_publications_per_second']:.0f} "
        f"pub/s (max {result['max_publications_per_second']:.0f}): p50 {m['latency_p50_ms']:.2f}"
        f" ms, p99 {m['latency_p99_ms']:.2f} ms, p99.9 {m['latency_p999_ms']:.2f} ms"
    )


# --- server API -----------------------------------------------------------------------------


async def top_offset(session: aiohttp.ClientSession, port: int, channel: str) -> int:
    url = f"http://127.0.0.1:{port}/api/history"
    async with session.post(
        url, json={"channel": channel, "limit": 0}, headers={"X-API-Key": API_KEY}
    ) as response:
        return (await response.json())["result"]["offset"]


async def api_run(seconds: float, rounds: int, progress: Progress) -> dict:
    results = {}
    async with aiohttp.ClientSession() as session:
        with tempfile.TemporaryDirectory() as tmp:
            server = Server(Path(tmp))
            try:
                await server.wait_ready(session)
                for mode in ("publish", "batch"):
                    samples = []
                    for r in range(rounds):
                        offset0 = await top_offset(session, server.port, "bench:api")
                        cpu0 = proc_cpu(server.pid)
                        load = subprocess.run(
                            [
                                *pin(1),
                                sys.executable,
                                "-m",
                                "bench.apiload",
                                "--port",
                                str(server.port),
                                "--key",
                                API_KEY,
                                "--mode",
                                mode,
                                "--seconds",
                                str(seconds),
                            ],
                            cwd=ROOT,
                            capture_output=True,
                            text=True,
                            timeout=seconds + 60,
                            check=True,
                        )
                        cpu = proc_cpu(server.pid) - cpu0
                        report = json.loads(load.stdout.strip().splitlines()[-1])
                        offset1 = await top_offset(session, server.port, "bench:api")
                        stored = offset1 - offset0
                        ok = report["failed"] == 0 and stored == report["accepted"]
                        if not ok:
                            FAILURES.setdefault("api", []).append(
                                f"{mode} round {r + 1}: accepted {report['accepted']}, "
                                f"stored {stored}, failed {report['failed']}"
                            )
                        samples.append(
                            {
                                "requests": report["requests"],
                                "accepted": report["accepted"],
                                "seconds": report["seconds"],
                                "accepted_per_second": report["accepted"] / report["seconds"],
                                "server_cpu_seconds": cpu,
                                "accepted_per_server_cpu_second": report["accepted"]
                                / max(cpu, 1e-9),
                                "client_cpu_seconds": report["client_cpu"],
                                "client_cpu_share": report["client_cpu"] / report["seconds"],
                                "verified": ok,
                            }
                        )
                        progress.step(
                            f"{mode} round {r + 1}/{rounds}: "
                            f"{samples[-1]['accepted_per_second']:,.0f}/s"
                        )
                    results[mode] = {
                        "path": f"/api/{mode}",
                        "publications_per_request": 1 if mode == "publish" else 100,
                        "rounds": samples,
                        "median": medians(samples),
                        "all_verified": all(s["verified"] for s in samples),
                    }
            finally:
                server.stop()
    return results


def run_api(args) -> None:
    progress = Progress("api", 2 * args.rounds)
    results = asyncio.run(api_run(args.api_seconds, args.rounds, progress))
    progress.finish()
    plots = [
        {
            "title": "server API: publications accepted (median; 8 keep-alive connections)",
            "ylabel": "publications",
            "labels": ["/api/publish", "/api/batch (100 per request)"],
            "series": {
                "per second": [results[m]["median"]["accepted_per_second"] for m in results],
                "per server CPU-s": [
                    results[m]["median"]["accepted_per_server_cpu_second"] for m in results
                ],
            },
        }
    ]
    save("api", results, plots)
    for mode, r in results.items():
        m = r["median"]
        print(
            f"api /api/{mode}: {m['accepted_per_second']:,.0f} publications/s accepted, "
            f"{m['accepted_per_server_cpu_second']:,.0f} per server CPU-s, "
            f"load client CPU {m['client_cpu_share']:.0%} of wall"
        )


def run_proxy(args) -> None:
    from bench.proxybench import run  # imports this module: loaded only when asked for

    run(args)


def run_transports(args) -> None:
    from bench.transports import run  # imports this module: loaded only when asked for

    run(args)


def run_cluster(args) -> None:
    from bench.cluster import run  # imports this module: loaded only when asked for

    run(args)


def run_c100k(args) -> None:
    from bench.c100k import run  # imports this module: loaded only when asked for

    run(args)


def run_c1m(args) -> None:
    from bench.c1m import run_c1m as run  # loaded only when asked for

    run(args)


SCENARIOS = {
    "baseline": run_baseline,
    "fanout": run_fanout,
    "personal": run_personal,
    "idle": run_idle,
    "latency": run_latency,
    "api": run_api,
    "proxy": run_proxy,
    "transports": run_transports,
    "cluster": run_cluster,
    "c100k": run_c100k,
    "c1m": run_c1m,
}
#: scenarios run only when named (too long for a plain `make bench`)
ON_REQUEST = {"c100k", "c1m"}


def main() -> None:
    parser = argparse.ArgumentParser(
        prog=os.environ.get("BENCH_PROG", "python -m bench.run"),
        description=__doc__.split("\n\n")[0],
        epilog="scenarios: " + ", ".join(SCENARIOS),
    )
    parser.add_argument(
        "scenarios", nargs="*", default=[s for s in SCENARIOS if s not in ON_REQUEST]
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--messages",
        type=int,
        help="publications per round (fanout: ~200k deliveries; transports 100, cluster 50)",
    )
    fanout_args = parser.add_argument_group("fanout and baseline")
    fanout_args.add_argument("--sizes", default="1000,10000", help="subscriber counts")
    parser.add_argument(
        "--no-protobuf",
        action="store_true",
        help="fanout and idle: JSON only (by default the Protobuf variant runs beside it)",
    )
    personal_args = parser.add_argument_group("personal")
    personal_args.add_argument("--personal-sizes", default="1000,10000")
    personal_args.add_argument(
        "--personal-waves", type=int, default=3, help="publications per channel per round"
    )
    idle_args = parser.add_argument_group("idle")
    idle_args.add_argument("--idle-sizes", default="10000,18000")
    latency_args = parser.add_argument_group("latency")
    latency_args.add_argument("--latency-seconds", type=float, default=8.0)
    api_args = parser.add_argument_group("api")
    api_args.add_argument("--api-seconds", type=float, default=4.0)
    proxy_args = parser.add_argument_group("proxy")
    proxy_args.add_argument("--proxy-seconds", type=float, default=4.0)
    proxy_args.add_argument(
        "--proxy-connections", type=int, default=50, help="RPC callers, one call at a time each"
    )
    transport_args = parser.add_argument_group("transports")
    transport_args.add_argument(
        "--transports", default="", help="comma-separated subset (default: all ten)"
    )
    transport_args.add_argument("--subscribers", type=int, default=200)
    transport_args.add_argument(
        "--poll-subscribers", type=int, default=100, help="subscribers for longpoll and poll"
    )
    transport_args.add_argument("--rate", type=float, default=50.0, help="publications/s")
    transport_args.add_argument("--poll-interval", type=float, default=0.5)
    cluster_args = parser.add_argument_group("cluster")
    cluster_args.add_argument("--cluster-workers", default="1,2", help="worker counts to run")
    cluster_args.add_argument("--cluster-subscribers", type=int, default=4000)
    cluster_args.add_argument(
        "--cluster-pin-client", action="store_true", help="pin the load client to the last CPU"
    )
    cluster_args.add_argument(
        "--cluster-client",
        choices=("native", "python"),
        default="native",
        help="load client: bench/wsload.c (default) or bench/wsload.py",
    )
    parser.add_argument(
        "--latency-subscribers",
        type=int,
        default=1000,
        help="subscribers for the latency scenario",
    )
    cluster_args.add_argument("--cluster-latency-subscribers", type=int, default=100)
    cluster_args.add_argument("--latency-messages", type=int, default=200)
    cluster_args.add_argument("--latency-rate", type=float, default=100.0, help="publications/s")
    cluster_args.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    c100k_args = parser.add_argument_group("c100k (also uses --redis-url)")
    c100k_args.add_argument("--c100k-connections", type=int, default=100_000)
    c100k_args.add_argument("--c100k-workers", type=int, default=6)
    c100k_args.add_argument(
        "--c100k-load-processes", type=int, default=0, help="default: ≤ 15,000 connections each"
    )
    c100k_args.add_argument(
        "--c100k-duration", type=int, default=30, help="seconds of publishing (10 s cycles)"
    )
    c100k_args.add_argument(
        "--c100k-cycle",
        type=float,
        default=10.0,
        help="seconds in which every channel gets one publication (the issue's shape: 10)",
    )
    c100k_args.add_argument(
        "--c100k-ramp-rate", type=float, default=2000.0, help="connections per second, in all"
    )
    c100k_args.add_argument("--c100k-api-connections", type=int, default=6)
    c100k_args.add_argument(
        "--c100k-presence", action="store_true", help="presence on in the bench namespace"
    )
    c100k_args.add_argument("--c100k-keep-log", help="copy the server's log to this file")
    c100k_args.add_argument(
        "--c100k-users", type=int, default=0, help="distinct users (default: one per connection)"
    )
    c100k_args.add_argument(
        "--c100k-client",
        choices=("native", "python"),
        default="native",
        help="load processes: bench/wsload.c (default; built with gcc, reading eagerly) "
        "or bench/wsload.py (half the speed: more of the 2 cores go to the load)",
    )
    c100k_args.add_argument(
        "--c100k-idle-seconds",
        type=float,
        default=0.0,
        help="after the ramp, this long with pings only, to measure their cost (0 = none)",
    )
    from bench.c1m import add_arguments as add_c1m_arguments

    add_c1m_arguments(parser)
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    for scenario in args.scenarios:
        if scenario not in SCENARIOS:
            raise SystemExit(f"unknown scenario {scenario!r} (available: {', '.join(SCENARIOS)})")
    started = time.monotonic()
    for scenario in args.scenarios:
        SCENARIOS[scenario](args)
    print(f"bench: {', '.join(args.scenarios)} in {time.monotonic() - started:.0f}s")
    if FAILURES:
        for scenario, problems in FAILURES.items():
            for problem in problems:
                print(f"FAILED {scenario}: {problem}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
