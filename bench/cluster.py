"""Scenario ``cluster``: the redis engine with 1 and 2 workers, and latency across nodes.

Throughput. ``pushgate serve --workers W`` (W = 1, then 2; ``--cluster-workers``) with
the redis engine on a key prefix of the run's own. One bench.wsload process opens S
subscribers (``--cluster-subscribers``, 4,000) of ``bench:fanout``; each is a new TCP
connection, so SO_REUSEPORT spreads them over the workers (the split is reported). The
API then publishes M messages (``--messages``, 50) back to back and the load client
counts deliveries. Reported per W, as medians of R rounds (``--rounds``, 3) after a
warm-up round: deliveries per second, the workers' CPU seconds (all workers summed),
Redis's CPU seconds and the load client's, and publish → receive p50 / p99 under that
burst.

Across nodes. Two single-worker nodes, A and B, on separate ports and one Redis prefix.
L subscribers (``--cluster-latency-subscribers``, 100) connect to B. The API of A publishes
``--latency-messages`` (200) at ``--latency-rate`` (100/s), each carrying its send time:
the publication goes A → Redis (Lua script + PUB/SUB) → B → subscriber. The same is done
through B's own API for comparison (with the redis engine that path crosses Redis too).
Reported: p50 / p99 / max per path, medians of R rounds.

CPU pinning: none by default. This machine has as many cores as the largest W, and the
workers, Redis, the load client and the publishing bench process share them; pinning
the workers would take a core from the load client, pinning the load client
(``--cluster-pin-client``: to the last CPU) makes it compete with one worker. The output
and the JSON say what was pinned. About 80 s in all.

Load client: the native one (bench/wsload.c, built by bench/native.py; ~1 µs of CPU per
delivery here) by default, or bench/wsload.py (``--cluster-client python``, 5-8 µs). With
two workers on two cores the Python client takes CPU the second worker needs, which
understates the gain from it. Under load the native client reads the connections not
sampled for latency twice a second, so the kernel ACKs their frames from its delayed-ACK
timer, partly on the workers' CPUs: worker CPU per delivery comes out 10-15% higher than
with the Python client (bench/wsload.c, "Busy mode"). The JSON records the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

from bench.common import serve_command, shown
from bench.run import (
    API_KEY,
    CONFIG,
    RESULTS,
    ROOT,
    LoadClient,
    free_port,
    percentile,
    proc_cpu,
    verify,
)

CHANNEL = "bench:fanout"
HEARTBEAT = "0.5s"  # node counts in `info` are as fresh as the last heartbeat


def cluster_config(redis_url: str, prefix: str) -> str:
    return CONFIG + (
        "\n[engine]\n"
        'type = "redis"\n'
        f'redis_url = "{redis_url}"\n'
        f'redis_prefix = "{prefix}"\n'
        f'node_heartbeat = "{HEARTBEAT}"\n'
    )


class Cluster:
    """``pushgate serve --workers W`` on its own port (W = 1 runs the node directly)."""

    def __init__(self, config: Path, workers: int, name: str) -> None:
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = config.parent / f"{name}.log"
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            serve_command(config, self.port, workers),
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def pids(self) -> list[int]:
        """The processes that serve: the node itself, or the supervisor's workers."""
        if self.workers == 1:
            return [self.process.pid]
        pid = self.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return [int(child) for child in children]

    def cpu(self) -> float:
        total = 0.0
        for pid in self.pids():
            with contextlib.suppress(FileNotFoundError):  # a worker that just exited
                total += proc_cpu(pid)
        return total

    async def api(self, session: aiohttp.ClientSession, method: str, params: dict) -> dict:
        async with session.post(
            f"{self.url}/api/{method}",
            json=params,
            headers={"X-API-Key": API_KEY},
            timeout=aiohttp.ClientTimeout(total=10),
        ) as response:
            assert response.status == 200, await response.text()
            reply = await response.json()
        assert "result" in reply, reply
        return reply["result"]

    async def wait_nodes(self, session: aiohttp.ClientSession, predicate, timeout=30.0) -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pushgate exited with status {self.process.returncode}")
            try:
                nodes = (await self.api(session, "info", {}))["nodes"]
                if predicate(nodes):
                    return nodes
            except (aiohttp.ClientError, AssertionError):
                pass
            await asyncio.sleep(0.2)
        raise RuntimeError("the cluster did not reach the expected state in time")

    def stop(self) -> dict:
        """Stop it; what it logged at WARNING and above (the bench output stays short)."""
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.log.close()
        lines = self.log_path.read_text(errors="replace").splitlines()
        problems: dict[str, int] = {}
        for line in lines:
            if " WARNING " in line or " ERROR " in line:
                kind = kind_of(line.split(" ", 3)[-1])
                problems[kind] = problems.get(kind, 0) + 1
            elif line.startswith(("redis.exceptions.", "RuntimeError", "ConnectionError")):
                problems[line[:100]] = problems.get(line[:100], 0) + 1
        return problems


def kind_of(message: str) -> str:
    """A log message with its ids and figures left out, so that lines of one kind are
    counted together (``cannot tell the engine <id> closed``, ``blocked for <n> s``)."""
    message = ID.sub("<id>", message)
    return NUMBER.sub("<n>", message)[:120]


ID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(\.\d+)?\b")
NUMBER = re.compile(r"\b\d+(\.\d+)?\b")


def report_problems(name: str, problems: dict[str, int]) -> None:
    for line, count in sorted(problems.items(), key=lambda item: -item[1])[:6]:
        print(f"  {name} logged {count}x: {line}")


class Redis:
    """The Redis server's CPU use (when it runs on this machine) and key cleanup."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url)
        self.client.ping()
        pid = int(self.client.info("server")["process_id"])
        self.pid = pid if Path(f"/proc/{pid}/stat").exists() else None

    def cpu(self) -> float:
        return proc_cpu(self.pid) if self.pid else float("nan")

    def drop(self, prefix: str) -> None:
        keys = list(self.client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 1000):
            self.client.delete(*keys[start : start + 1000])


async def read(client: LoadClient, timeout: float = 180.0) -> dict:
    loop = asyncio.get_running_loop()
    try:
        return await asyncio.wait_for(loop.run_in_executor(None, client.read), timeout)
    except TimeoutError:
        client.process.kill()  # unblocks the reading thread
        raise RuntimeError("load client did not answer in time") from None


async def publish(session: aiohttp.ClientSession, cluster: Cluster) -> None:
    await cluster.api(session, "publish", {"channel": CHANNEL, "data": {"t": time.time()}})


# --- throughput with W workers ------------------------------------------------------------


async def throughput_round(
    session: aiohttp.ClientSession,
    cluster: Cluster,
    redis: Redis,
    client: LoadClient,
    subscribers: int,
    messages: int,
) -> dict:
    client.send(
        {
            "cmd": "expect",
            "count": subscribers * messages,
            "per_connection": messages,
            "timeout": 120,
        }
    )
    assert (await read(client))["phase"] == "expecting"
    cpu0, redis0 = cluster.cpu(), redis.cpu()
    started = time.time()
    for _ in range(messages):
        await publish(session, cluster)
    report = await read(client)
    cpu1, redis1 = cluster.cpu(), redis.cpu()
    elapsed = report["at"] - started
    deliveries = report["received"]
    return {
        "complete": report["complete"],
        # every subscriber got every publication, in offset order (bench.run.verify)
        "verified": verify("cluster", f"workers={cluster.workers}", report, subscribers * messages),
        "deliveries": deliveries,
        "seconds": elapsed,
        "deliveries_per_second": deliveries / elapsed,
        "workers_cpu_seconds": cpu1 - cpu0,
        "deliveries_per_worker_cpu_second": deliveries / max(cpu1 - cpu0, 1e-9),
        "redis_cpu_seconds": redis1 - redis0,
        "client_cpu_seconds": report["client_cpu"],
        "latency_p50_ms": percentile(report["latencies"], 0.5) * 1000,
        "latency_p99_ms": percentile(report["latencies"], 0.99) * 1000,
    }


async def throughput(
    workers: int,
    subscribers: int,
    messages: int,
    rounds: int,
    redis: Redis,
    redis_url: str,
    client_cpu: int | None,
    native: bool = True,
) -> dict:
    prefix = f"pgbench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "cluster.toml"
        config.write_text(cluster_config(redis_url, prefix))
        cluster = Cluster(config, workers, f"workers{workers}")
        problems: dict[str, int] = {}
        left = -1
        client = None
        try:
            async with aiohttp.ClientSession() as session:
                await cluster.wait_nodes(session, lambda nodes: len(nodes) == workers)
                client = LoadClient(
                    cluster.port, subscribers, [CHANNEL], Path(tmp), cpu=client_cpu, native=native
                )
                ready = await read(client)
                nodes = await cluster.wait_nodes(
                    session, lambda nodes: sum(n["num_clients"] for n in nodes) == subscribers
                )
                split = sorted((n["num_clients"] for n in nodes), reverse=True)
                print(
                    f"cluster workers={workers}: {subscribers} subscribers ready in "
                    f"{ready['seconds']:.1f}s, per worker {split}"
                )
                await throughput_round(
                    session, cluster, redis, client, subscribers, max(1, messages // 10)
                )
                samples = []
                for r in range(rounds):
                    sample = await throughput_round(
                        session, cluster, redis, client, subscribers, messages
                    )
                    samples.append(sample)
                    print(
                        f"  round {r + 1}/{rounds}: {sample['deliveries_per_second']:,.0f} "
                        f"deliveries/s; CPU s: workers {sample['workers_cpu_seconds']:.2f}, "
                        f"redis {sample['redis_cpu_seconds']:.2f}, "
                        f"client {sample['client_cpu_seconds']:.2f} / {sample['seconds']:.2f}s"
                    )
                client.stop()
                client = None
                left = await drained(session, cluster)
        finally:
            if client is not None:
                client.stop()
            problems = cluster.stop()
            redis.drop(prefix)
        report_problems(f"workers={workers}", problems)
    return {
        "workers": workers,
        "subscribers": subscribers,
        "subscribers_per_worker": split,
        "messages_per_round": messages,
        "rounds": samples,
        "median": median(samples),
        "all_complete": all(s["complete"] for s in samples),
        "clients_left_after_disconnect": left,
        "server_log_problems": problems,
    }


async def drained(session: aiohttp.ClientSession, cluster: Cluster, timeout: float = 15.0) -> int:
    """After the load client left: wait until no node counts a client; how many remain."""
    try:
        await cluster.wait_nodes(
            session, lambda nodes: sum(n["num_clients"] for n in nodes) == 0, timeout
        )
        return 0
    except RuntimeError:
        nodes = (await cluster.api(session, "info", {}))["nodes"]
        left = sum(n["num_clients"] for n in nodes)
        print(f"  {left} clients still counted {timeout:.0f}s after the load client left")
        return left


def median(samples: list[dict]) -> dict:
    return {
        key: statistics.median(s[key] for s in samples)
        for key in samples[0]
        if key not in ("complete", "verified")
    }


# --- latency across nodes -----------------------------------------------------------------


async def latency_round(
    session: aiohttp.ClientSession,
    publisher: Cluster,
    client: LoadClient,
    subscribers: int,
    messages: int,
    rate: float,
) -> dict:
    client.send({"cmd": "expect", "count": subscribers * messages, "timeout": 60})
    assert (await read(client))["phase"] == "expecting"
    started = time.monotonic()
    for n in range(messages):
        await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
        await publish(session, publisher)
    report = await read(client)
    latencies = report["latencies"]
    return {
        "complete": report["complete"],
        "deliveries": report["received"],
        "samples": len(latencies),
        "latency_p50_ms": percentile(latencies, 0.5) * 1000,
        "latency_p99_ms": percentile(latencies, 0.99) * 1000,
        "latency_max_ms": max(latencies, default=float("nan")) * 1000,
    }


async def across_nodes(
    subscribers: int,
    messages: int,
    rate: float,
    rounds: int,
    redis: Redis,
    redis_url: str,
    client_cpu: int | None,
    native: bool = True,
) -> dict:
    prefix = f"pgbench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "cluster.toml"
        config.write_text(cluster_config(redis_url, prefix))
        node_a = Cluster(config, 1, "node_a")
        node_b = Cluster(config, 1, "node_b")
        problems: dict[str, dict[str, int]] = {}
        client = None
        try:
            async with aiohttp.ClientSession() as session:
                await node_a.wait_nodes(session, lambda nodes: len(nodes) == 2)
                client = LoadClient(
                    node_b.port, subscribers, [CHANNEL], Path(tmp), cpu=client_cpu, native=native
                )
                await read(client)
                print(
                    f"across nodes: {subscribers} subscribers on node B; "
                    f"{messages} publications at {rate:g}/s per round"
                )
                await latency_round(session, node_a, client, subscribers, 20, rate)
                paths = {"a_to_b": node_a, "b_to_b": node_b}
                samples: dict[str, list[dict]] = {name: [] for name in paths}
                for r in range(rounds):
                    for name, publisher in paths.items():
                        sample = await latency_round(
                            session, publisher, client, subscribers, messages, rate
                        )
                        samples[name].append(sample)
                        print(
                            f"  round {r + 1}/{rounds} {name}: p50 "
                            f"{sample['latency_p50_ms']:.2f} ms, p99 "
                            f"{sample['latency_p99_ms']:.2f} ms, max "
                            f"{sample['latency_max_ms']:.2f} ms "
                            f"({sample['samples']} samples)"
                        )
                client.stop()
                client = None
                await drained(session, node_b)
        finally:
            if client is not None:
                client.stop()
            problems = {"node_a": node_a.stop(), "node_b": node_b.stop()}
            redis.drop(prefix)
        for name, found in problems.items():
            report_problems(name, found)
    return {
        "subscribers": subscribers,
        "messages_per_round": messages,
        "rate_per_second": rate,
        "paths": {
            "a_to_b": "published through node A's API, subscribers on node B",
            "b_to_b": "published through node B's API, subscribers on node B",
        },
        **{
            name: {
                "rounds": rows,
                "median": median(rows),
                "all_complete": all(s["complete"] for s in rows),
            }
            for name, rows in samples.items()
        },
        "server_log_problems": problems,
    }


def run(args) -> None:
    redis_url = args.redis_url
    try:
        redis = Redis(redis_url)
    except Exception as exc:
        print(f"cluster: skipped: no Redis at {redis_url} ({exc})")
        return
    workers = [int(w) for w in args.cluster_workers.split(",")]
    messages = args.messages or 50
    client_cpu = (os.cpu_count() or 1) - 1 if args.cluster_pin_client else None
    pinned = f"load client on CPU {client_cpu}" if client_cpu is not None else "nothing"
    kind = getattr(args, "cluster_client", "native")
    native = kind == "native"
    client_name = "bench/wsload.c (native)" if native else "bench/wsload.py"
    print(f"cluster: {os.cpu_count()} CPUs; pinned: {pinned}; load client: {client_name}")
    started = time.monotonic()
    by_workers = {}
    for count in workers:
        by_workers[str(count)] = asyncio.run(
            throughput(
                count,
                args.cluster_subscribers,
                messages,
                args.rounds,
                redis,
                redis_url,
                client_cpu,
                native,
            )
        )
    latency = asyncio.run(
        across_nodes(
            args.cluster_latency_subscribers,
            args.latency_messages,
            args.latency_rate,
            args.rounds,
            redis,
            redis_url,
            client_cpu,
            native,
        )
    )
    out = RESULTS / "cluster.json"
    out.write_text(
        json.dumps(
            {
                "scenario": "cluster",
                "cpu_count": os.cpu_count(),
                "pinned": pinned,
                "client": kind,
                "engine": "redis",
                "throughput": by_workers,
                "across_nodes": latency,
            },
            indent=2,
        )
    )
    print(f"wrote {shown(out)} ({time.monotonic() - started:.0f}s)")
    for count, result in by_workers.items():
        m = result["median"]
        print(
            f"cluster workers={count}: median {m['deliveries_per_second']:,.0f} deliveries/s "
            f"({result['subscribers']} subscribers, split {result['subscribers_per_worker']}), "
            f"{m['deliveries_per_worker_cpu_second']:,.0f} per worker CPU-s, "
            f"burst p99 {m['latency_p99_ms']:.1f} ms"
        )
    for name in ("a_to_b", "b_to_b"):
        m = latency[name]["median"]
        print(
            f"latency {latency['paths'][name]}: p50 {m['latency_p50_ms']:.2f} ms, "
            f"p99 {m['latency_p99_ms']:.2f} ms"
        )
    print(f"pinned: {pinned}")
