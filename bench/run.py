"""`make bench`: start a pushgate server, load it from another process, report figures.

Scenario ``fanout``: N subscribers (1k, 10k) of one channel with presence and history
on, Centrifugo protocol over WebSocket; the API publishes M messages and the load
client counts deliveries. Reported: deliveries per second, deliveries per server
CPU-second, the load client's own CPU (it must not be the bottleneck) and publish →
receive latency percentiles. Scenario ``transports`` (bench/transports.py): latency and
server CPU per delivery through each of the eight transports. Server and client are
pinned to different cores when the machine has two. Scenario ``cluster``
(bench/cluster.py): the redis engine with 1 and 2 workers (deliveries per second) and
publish → receive latency across two nodes; nothing pinned unless asked. Each figure is
the median of several rounds. Everything runs on 127.0.0.1 and every loop is bounded in
count and time. ``python -m bench.run`` runs every scenario; name some to run only them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from pushgate.auth import mint_connection_token

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
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
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        config = workdir / "bench.toml"
        config.write_text(CONFIG)
        self.process = subprocess.Popen(
            [
                *pin(0),
                sys.executable,
                "-m",
                "pushgate",
                "serve",
                "--config",
                str(config),
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
        )

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

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


class LoadClient:
    def __init__(
        self,
        port: int,
        connections: int,
        channels: list[str],
        workdir: Path,
        cpu: int | None = 1,
    ) -> None:
        tokens = workdir / "tokens.txt"
        users = min(connections, 1000)
        tokens.write_text(
            "\n".join(mint_connection_token(SECRET, f"user{i}", ttl=3600) for i in range(users))
        )
        args = [
            *(pin(cpu) if cpu is not None else []),
            sys.executable,
            "-m",
            "bench.wsload",
            "--port",
            str(port),
            "--connections",
            str(connections),
            "--tokens",
            str(tokens),
        ]
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

    def send(self, command: dict) -> None:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

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


async def fanout_round(
    session: aiohttp.ClientSession, server: Server, client: LoadClient, n: int, messages: int
) -> dict:
    loop = asyncio.get_running_loop()
    client.send({"cmd": "expect", "count": n * messages, "timeout": 120})
    assert (await loop.run_in_executor(None, client.read))["phase"] == "expecting"
    cpu0 = proc_cpu(server.process.pid)
    started = time.time()
    url = f"http://127.0.0.1:{server.port}/api/publish"
    for _ in range(messages):
        body = {"channel": "bench:fanout", "data": {"t": time.time()}}
        async with session.post(url, json=body, headers={"X-API-Key": API_KEY}) as response:
            assert response.status == 200
    report = await loop.run_in_executor(None, client.read)
    cpu1 = proc_cpu(server.process.pid)
    elapsed = report["at"] - started
    deliveries = report["received"]
    return {
        "complete": report["complete"],
        "deliveries": deliveries,
        "seconds": elapsed,
        "deliveries_per_second": deliveries / elapsed,
        "server_cpu_seconds": cpu1 - cpu0,
        "deliveries_per_server_cpu_second": deliveries / max(cpu1 - cpu0, 1e-9),
        "client_cpu_seconds": report["client_cpu"],
        "latency_p50_ms": percentile(report["latencies"], 0.5) * 1000,
        "latency_p99_ms": percentile(report["latencies"], 0.99) * 1000,
    }


async def fanout(sizes: list[int], messages: int, rounds: int) -> dict:
    results = {}
    async with aiohttp.ClientSession() as session:
        for n in sizes:
            with tempfile.TemporaryDirectory() as tmp:
                server = Server(Path(tmp))
                client = None
                try:
                    await server.wait_ready(session)
                    client = LoadClient(server.port, n, ["bench:fanout"], Path(tmp))
                    ready = await asyncio.get_running_loop().run_in_executor(None, client.read)
                    print(f"fanout n={n}: {n} subscribers ready in {ready['seconds']:.1f}s")
                    await fanout_round(session, server, client, n, max(1, messages // 10))
                    samples = []
                    for r in range(rounds):
                        sample = await fanout_round(session, server, client, n, messages)
                        samples.append(sample)
                        print(
                            f"  round {r + 1}/{rounds}: "
                            f"{sample['deliveries_per_second']:,.0f} deliveries/s, "
                            f"{sample['deliveries_per_server_cpu_second']:,.0f} per server "
                            f"CPU-s, client CPU {sample['client_cpu_seconds']:.2f}s "
                            f"/ {sample['seconds']:.2f}s"
                        )
                    results[str(n)] = {
                        "subscribers": n,
                        "messages_per_round": messages,
                        "rounds": samples,
                        "median": {
                            key: statistics.median(s[key] for s in samples)
                            for key in samples[0]
                            if key != "complete"
                        },
                        "all_complete": all(s["complete"] for s in samples),
                    }
                finally:
                    if client is not None:
                        client.stop()
                    server.stop()
    return results


def run_fanout(args) -> None:
    sizes = [int(s) for s in args.sizes.split(",")]
    result = asyncio.run(fanout(sizes, args.messages or 50, args.rounds))
    out = RESULTS / "fanout.json"
    out.write_text(
        json.dumps({"scenario": "fanout", "cpu_count": os.cpu_count(), "results": result}, indent=2)
    )
    print(f"wrote {out.relative_to(ROOT)}")
    for n, r in result.items():
        m = r["median"]
        print(
            f"fanout n={n}: median {m['deliveries_per_second']:,.0f} deliveries/s, "
            f"{m['deliveries_per_server_cpu_second']:,.0f} per server CPU-s, "
            f"p50 {m['latency_p50_ms']:.1f} ms, p99 {m['latency_p99_ms']:.1f} ms"
        )


def run_transports(args) -> None:
    from bench.transports import run  # imports this module: loaded only when asked for

    run(args)


def run_cluster(args) -> None:
    from bench.cluster import run  # imports this module: loaded only when asked for

    run(args)


SCENARIOS = {"fanout": run_fanout, "transports": run_transports, "cluster": run_cluster}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", default=list(SCENARIOS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--messages",
        type=int,
        help="publications per round (fanout 50, transports 100, cluster 50)",
    )
    fanout_args = parser.add_argument_group("fanout")
    fanout_args.add_argument("--sizes", default="1000,10000")
    transport_args = parser.add_argument_group("transports")
    transport_args.add_argument(
        "--transports", default="", help="comma-separated subset (default: all eight)"
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
    cluster_args.add_argument("--latency-subscribers", type=int, default=100)
    cluster_args.add_argument("--latency-messages", type=int, default=200)
    cluster_args.add_argument("--latency-rate", type=float, default=100.0, help="publications/s")
    cluster_args.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    for scenario in args.scenarios:
        if scenario not in SCENARIOS:
            raise SystemExit(f"unknown scenario {scenario!r} (available: {', '.join(SCENARIOS)})")
    for scenario in args.scenarios:
        SCENARIOS[scenario](args)


if __name__ == "__main__":
    main()
