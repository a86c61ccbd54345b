"""Scenario ``c100k``: 100k WebSocket connections on 6 workers with Redis, personal + group.

``pushgate serve --workers W`` (``--c100k-workers``, 6) with the redis engine on a key
prefix of the run's own (dropped at the end). N connections (``--c100k-connections``,
100,000) come from P load processes (``--c100k-load-processes``; by default enough for
≤ 15,000 each: 7 for 100k), each a bench/wsload.py bound to its own loopback source
address (127.0.0.2, 127.0.0.3, …: 127.0.0.1 → 127.0.0.1:port has only ~28k ephemeral
ports), with users of its own (one user per connection, ``c<i>``; ``--c100k-users``
for fewer). Connection i subscribes to its personal channel ``bench:u<i>`` and to the
group channel of 10 ``bench:g<i/10>``. The processes connect at up to
``--c100k-ramp-rate`` (2,000/s in all) with at most 100 handshakes in flight each (so
the ramp slows to what the nodes sustain instead of timing out) and 60 s per
connection; the ramp's duration, the connected count and each worker's count from
``/api/info`` are reported (SO_REUSEPORT spreads the connections; each worker must hold
≤ 18,000: its open-file limit is 20,000).

Then the API publishes for ``--c100k-duration`` seconds (30 = 3 cycles of 10 s): once
per cycle to every personal channel and to every group channel, spread evenly: every
100 ms one ``/api/batch`` share (1/100 of a cycle: 1,000 personal + 100 group
publications at 100k), split over ``--c100k-api-connections`` (6) keep-alive
connections sent at once, each batch ``"parallel": true``. Each publication carries its
send time (``time.time()``; one clock on one machine). Per cycle that is N + N/10
publications and 2N deliveries: 11,000 publications/s and 20,000 deliveries/s at 100k.
At most 2 s of shares are in flight: a cluster that cannot keep up slows the publisher
down (the achieved rate is reported) rather than queueing without bound; the load
processes wait up to 6 x duration + 60 s for the last delivery, so late is measured as
late, not counted as lost.

Every connection checks every offset of both of its channels (a loss, duplicate or
reordering fails the scenario, as does a connection short of 2 per cycle, one closed
by the server, or one that failed to connect); every 5th connection records publish →
receive latency. Reported: ramp time, per-worker connections / RSS / CPU, RSS per
connection, deliveries/s (over the run and per second), latency p50/p99/p99.9/max
against the 200 ms p99 target, the CPU seconds of the workers, Redis, the load
processes and the publishing bench process, the cores used per second and Redis's
largest PUB/SUB output buffer, the API requests' own latency, and how long the nodes
take to count 0 clients after the load leaves (with the CPU that took, the longest loop
block meanwhile and how many nodes the others declared dead in the run).
bench/results/c100k.json, c100k.png (latency percentiles) and c100k-timeline.png
(deliveries/s and p99 per second).

Nothing is pinned: W workers, Redis, P load processes and the publisher share the
machine's cores, so on a small machine this measures what the whole box sustains.
Namespace: history on (10 publications, 300 s, force_recovery: as in production, so
recovery works), presence off (``--c100k-presence`` turns it on: 200k presence entries
refreshed in Redis by every node's heartbeat). Only run when named: the ramp alone takes
minutes. ``--c100k-keep-log FILE`` keeps the server's log.

The load processes run the native twin bench/wsload.c (built by bench/native.py, with
gcc; ``--c100k-client python`` runs bench/wsload.py instead): same flags, same reports,
half the CPU, so the load competes less with the server under test. It runs with ``--eager``:
every connection is read as soon as data arrives, like wsload.py (not busy mode's lazy
reads, which would shift ACK work onto the server's side). What it saves is the
interpreter's share; the kernel's share of each prompt read (the recv and the ACK it
sends) stays and is most of the native client's CPU (3,000 connections, 60,000
deliveries in 10 s: 0.34 CPU-s against wsload.py's 0.45). The result records which
client ran (``"load_client": "native"`` or ``"python"``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson

from bench.cluster import Cluster, Redis, report_problems
from bench.common import RESULTS, ROOT, Progress, rss_kib, save, shown
from bench.run import API_KEY, FAILURES, SECRET, percentile, proc_cpu, verify
from pushgate.auth import mint_connection_token


@dataclass(frozen=True)
class Shape:
    """What a run of this scenario is: c100k (every channel once per 10 s cycle, groups
    of 10, p99 ≤ 200 ms) or c1m (bench/c1m.py: personal every 5 min, teams of 50 every
    minute, p99 ≤ 1 s)."""

    name: str = "c100k"
    group_size: int = 10
    personal_cycle: float = 10.0  # seconds: every personal channel once per cycle
    group_cycle: float = 10.0  # seconds: every group channel once per cycle
    target_p99_ms: float = 200.0
    #: the load processes speak the Centrifugo Protobuf protocol
    protobuf: bool = False
    #: the load processes' niceness (negative: a larger share of the cores than the
    #: server's workers, as clients on machines of their own would have; needs root)
    load_nice: int = 0

    def per_connection(self, duration: float) -> int:
        """Deliveries one connection gets in ``duration`` seconds of publishing."""
        return round(duration / self.personal_cycle) + round(duration / self.group_cycle)


SHAPE = Shape()
TICK = 0.1  # seconds between two API batch shares
PER_WORKER_LIMIT = 18_000
PER_PROCESS = 15_000  # connections per load process by default (open files: 20,000)
#: handshakes in flight per load process: past what the nodes can take, connects would
#: wait in their queues until they time out, so the ramp slows to what they sustain
MAX_PENDING = 100
SAMPLE_EVERY = 5  # latency of every 5th connection; every connection checks its offsets
#: an API request may wait this long (an overloaded cluster answers late, not never)
REQUEST_TIMEOUT = 120.0


def drain_timeout(duration: float) -> float:
    """How long the load processes wait for the last delivery after publishing starts:
    an overloaded cluster delivers late, and late is measured, not counted as lost."""
    return 6 * duration + 60


async def collect(
    loads: list[LoadProcess], timeout: float, samples: list[dict], progress: Progress
) -> list[dict]:
    """Every load process's report; meanwhile the cores the workers use, every 2 s."""
    started = time.monotonic()
    tasks = [asyncio.create_task(load.read(timeout)) for load in loads]
    try:
        while True:
            done, pending = await asyncio.wait(tasks, timeout=2.0)
            if not pending:
                return [task.result() for task in tasks]
            for task in done:
                task.result()  # a load process that failed: raise now
            cores = samples[-1]["workers_cores"] if samples else 0.0
            progress.show(
                f"{len(done)}/{len(tasks)} load processes got everything; "
                f"workers using {cores:.2f} cores ({time.monotonic() - started:.0f}s)"
            )
    finally:
        for task in tasks:
            task.cancel()


def c100k_config(redis_url: str, prefix: str, presence: bool) -> str:
    return f"""
[server]
name = "{SHAPE.name}"
[token]
hmac_secret = "{SECRET}"
[api]
key = "{API_KEY}"
[client]
# set explicitly: nothing may refuse the load (0 = unlimited)
max_connections = 0
max_connections_per_user = 0
max_subscriptions = 128
commands_per_second = 0
queue_max_bytes = 8388608
[engine]
type = "redis"
redis_url = "{redis_url}"
redis_prefix = "{prefix}"
[[namespace]]
name = "bench"
presence = {"true" if presence else "false"}
history_size = 10
history_ttl = "300s"
force_recovery = true
allow_subscribe_for_client = true
"""


class LoadProcess:
    """bench/wsload.py for connections ``first .. first + count - 1``, from ``source``;
    with ``native`` (the built bench/wsload.c) that binary, reading eagerly."""

    def __init__(
        self,
        index: int,
        first: int,
        count: int,
        rate: float,
        users: int,
        native: Path | None = None,
    ) -> None:
        self.index = index
        self.native = native
        self.users = users
        self.first = first
        self.count = count
        self.rate = rate
        self.source = f"127.0.0.{index + 2}"
        self.process: asyncio.subprocess.Process | None = None
        self.ready: dict = {}

    async def start(self, port: int, workdir: Path) -> None:
        tokens = workdir / f"tokens{self.index}.txt"
        tokens.write_text(
            "\n".join(
                mint_connection_token(SECRET, f"c{i % self.users}", ttl=3600)
                for i in range(self.first, self.first + self.count)
            )
        )
        if self.native is not None:
            program = [str(self.native), "--eager"]
        else:
            program = [sys.executable, "-m", "bench.wsload"]
        if SHAPE.protobuf:
            program.append("--protobuf")
        args = [
            *program,
            "--port",
            str(port),
            "--connections",
            str(self.count),
            "--tokens",
            str(tokens),
            "--group-size",
            str(SHAPE.group_size),
            "--channel",
            "bench:u{i}",
            "--channel",
            "bench:g{g}",
            "--source-address",
            self.source,
            "--first-index",
            str(self.first),
            "--rate",
            f"{self.rate:.1f}",
            "--max-pending",
            str(MAX_PENDING),
            "--connect-timeout",
            "60",
            "--sample-every",
            str(SAMPLE_EVERY),
            "--timeline",
        ]
        self.process = await asyncio.create_subprocess_exec(
            *args,
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 28,  # the report is one JSON line with every latency sample
        )
        if SHAPE.load_nice:
            try:
                os.setpriority(os.PRIO_PROCESS, self.process.pid, SHAPE.load_nice)
            except PermissionError:
                self.process.kill()
                raise RuntimeError(
                    f"niceness {SHAPE.load_nice} for the load processes needs root "
                    "(or CAP_SYS_NICE); run without --c1m-load-nice"
                ) from None

    async def read(self, timeout: float) -> dict:
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        except TimeoutError:
            raise RuntimeError(f"load process {self.index} did not answer in time") from None
        if not line:
            raise RuntimeError(f"load process {self.index} exited")
        return orjson.loads(line)

    def send(self, command: dict) -> None:
        self.process.stdin.write(orjson.dumps(command) + b"\n")

    async def stop(self) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(OSError, RuntimeError):
            self.send({"cmd": "quit"})
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            process.kill()
            await process.wait()


def split(connections: int, processes: int) -> list[tuple[int, int]]:
    """(first index, count) per process; counts are whole groups where possible."""
    group = SHAPE.group_size
    per = math.ceil(connections / processes / group) * group
    out = []
    first = 0
    while first < connections:
        count = min(per, connections - first)
        out.append((first, count))
        first += count
    return out


def worker_index(pid: int) -> int:
    """The worker's index from its command line (0 for a single-process server)."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    if b"--worker-index" not in argv:
        return 0
    return int(argv[argv.index(b"--worker-index") + 1])


def kill_leftovers(pids: list[int]) -> None:
    """Workers that outlived their supervisor's stop (it waits 20 s, then is killed)."""
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            if b"pushgate" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)


class Publisher:
    """Every personal channel once per personal cycle and every group channel once per
    group cycle, in shares of ``/api/batch`` every 100 ms (1/ticks of each cycle)."""

    def __init__(self, url: str, connections: int, api_connections: int) -> None:
        self.url = f"{url}/api/batch"
        personal = [f"bench:u{i}" for i in range(connections)]
        groups = [f"bench:g{g}" for g in range(math.ceil(connections / SHAPE.group_size))]
        self.personal_ticks = round(SHAPE.personal_cycle / TICK)
        self.group_ticks = round(SHAPE.group_cycle / TICK)
        self.personal = personal
        self.groups = groups
        self.api_connections = api_connections
        #: publications per second, offered
        self.rate = len(personal) / SHAPE.personal_cycle + len(groups) / SHAPE.group_cycle
        self.request_seconds: list[float] = []
        self.lags: list[float] = []
        self.errors: dict[str, int] = {}
        self.accepted = 0
        self.sent = 0
        self.finished = 0.0

    def share(self, k: int) -> list[list[str]]:
        """Tick ``k``'s channels, split over the API connections."""
        p, pt = self.personal, self.personal_ticks
        g, gt = self.groups, self.group_ticks
        t, u = k % pt, k % gt
        share = (
            p[t * len(p) // pt : (t + 1) * len(p) // pt]
            + g[u * len(g) // gt : (u + 1) * len(g) // gt]
        )
        parts = max(1, min(self.api_connections, len(share)))
        return [
            share[q * len(share) // parts : (q + 1) * len(share) // parts] for q in range(parts)
        ]

    async def _post(self, session: aiohttp.ClientSession, channels: list[str]) -> None:
        now = time.time()
        body = orjson.dumps(
            {
                "commands": [{"publish": {"channel": c, "data": {"t": now}}} for c in channels],
                "parallel": True,
            }
        )
        started = time.monotonic()
        try:
            async with session.post(
                self.url,
                data=body,
                headers={"X-API-Key": API_KEY, "Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
            ) as response:
                reply = await response.read()
                if response.status != 200:
                    self._error(f"HTTP {response.status}", len(channels))
                    return
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._error(f"{type(exc).__name__}: {exc}"[:120], len(channels))
            return
        self.request_seconds.append(time.monotonic() - started)
        replies = orjson.loads(reply).get("replies", [])
        failed = sum(1 for r in replies if "error" in r) + len(channels) - len(replies)
        self.accepted += len(channels) - failed
        if failed:
            self._error("publish error in batch", failed)

    def _error(self, kind: str, count: int) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + count

    async def run(self, duration: float, progress: Progress, start: float) -> dict:
        """Publish from ``start`` (time.monotonic) for ``duration`` s; bounded in flight."""
        connector = aiohttp.TCPConnector(limit=self.api_connections, force_close=False)
        inflight: set[asyncio.Task] = set()
        max_inflight = self.api_connections * 20  # 2 s of shares behind: stop adding
        total_ticks = round(duration / TICK)
        async with aiohttp.ClientSession(connector=connector) as session:
            for k in range(total_ticks):
                delay = start + k * TICK - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                self.lags.append(max(0.0, -delay))
                while len(inflight) >= max_inflight:
                    await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
                for part in self.share(k):
                    self.sent += len(part)
                    task = asyncio.create_task(self._post(session, part))
                    inflight.add(task)
                    task.add_done_callback(inflight.discard)
                if (k + 1) % self.group_ticks == 0:
                    progress.step(f"{(k + 1) * TICK:.0f} s published")
            if inflight:
                await asyncio.wait(inflight, timeout=REQUEST_TIMEOUT)
        self.finished = time.monotonic()
        return {
            "batch_requests": len(self.request_seconds),
            "publications_accepted": self.accepted,
            "errors": self.errors,
            "request_p50_ms": percentile(self.request_seconds, 0.5) * 1000,
            "request_p99_ms": percentile(self.request_seconds, 0.99) * 1000,
            "request_max_ms": max(self.request_seconds, default=float("nan")) * 1000,
            "schedule_lag_max_ms": max(self.lags, default=0.0) * 1000,
        }


async def sample_load(pids: list[int], redis: Redis, out: list[dict]) -> None:
    """Every second: cores used by the workers and Redis, and the largest output buffer
    Redis holds for a node's PUB/SUB connection (past 8 MiB for 60 s, or 32 MiB, Redis
    drops that connection: client-output-buffer-limit pubsub)."""
    started = time.monotonic()
    last = (time.monotonic(), sum(proc_cpu(pid) for pid in pids), redis.cpu())
    while True:
        await asyncio.sleep(1.0)
        try:
            now = (time.monotonic(), sum(proc_cpu(pid) for pid in pids), redis.cpu())
        except OSError:  # a worker is gone: the scenario will say so
            return
        omem = 0
        with contextlib.suppress(Exception):
            clients = await asyncio.to_thread(redis.client.client_list, "pubsub")
            omem = max((int(c.get("omem", 0)) for c in clients), default=0)
        wall = now[0] - last[0]
        out.append(
            {
                "second": round(now[0] - started, 1),
                "workers_cores": (now[1] - last[1]) / wall,
                "redis_cores": (now[2] - last[2]) / wall,
                "pubsub_omem_max": omem,
            }
        )
        last = now


async def sample_loop_lag(
    supervisor_pid: int, worst: dict[str, dict[str, list[float]]], phase: list[str]
) -> None:
    """Every 5 s: each worker's longest event-loop block since the last look
    (``pushgate_event_loop_lag_max_seconds``, read from the worker's own metrics socket,
    so no worker merges the others' for us) and how much of it the loop's thread ran
    (``..._max_cpu_seconds``; the rest it waited for a core). The largest per worker is
    kept per phase of the run (``phase[0]``: ramp, idle, publish, leave) as [lag, cpu]."""
    while True:
        await asyncio.sleep(5.0)
        await sample_loop_lag_once(supervisor_pid, worst, phase[0])


async def sample_loop_lag_once(
    supervisor_pid: int, worst: dict[str, dict[str, list[float]]], phase: str
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from pushgate.worker_metrics import socket_dir

    for path in socket_dir(supervisor_pid).glob("worker-*.sock"):
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            connector = aiohttp.UnixConnector(path=str(path))
            timeout = aiohttp.ClientTimeout(total=5)
            async with (
                aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
                session.get("http://worker/metrics") as response,
            ):
                text = await response.text()
            values = {
                family.name: family.samples[0].value
                for family in text_string_to_metric_families(text)
                if family.name.startswith("pushgate_event_loop_lag_max")
            }
            lag = values.get("pushgate_event_loop_lag_max_seconds", 0.0)
            cpu = values.get("pushgate_event_loop_lag_max_cpu_seconds", 0.0)
            worker = path.stem.removeprefix("worker-")
            seen = worst.setdefault(phase, {})
            if lag > seen.get(worker, [0.0, 0.0])[0]:
                seen[worker] = [lag, cpu]


def kernel_memory_kib() -> dict[str, int]:
    """The kernel's slab and its TCP socket buffers, now (KiB)."""
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    tcp = next(
        line.split()
        for line in Path("/proc/net/sockstat").read_text().splitlines()
        if line.startswith("TCP:")
    )
    pages = int(tcp[tcp.index("mem") + 1])
    return {
        "slab": int(meminfo["Slab"].split()[0]),
        "tcp_buffers": pages * os.sysconf("SC_PAGE_SIZE") // 1024,
    }


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def wait_counted(
    cluster: Cluster, session: aiohttp.ClientSession, expected: int, timeout: float
) -> list[dict]:
    """The nodes once their counts (as fresh as the last heartbeat) add up to ``expected``,
    else the last answer; a busy node may answer ``info`` late, which is waited for."""
    deadline = time.monotonic() + timeout
    nodes: list[dict] = []
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError, AssertionError, TimeoutError):
            nodes = (await cluster.api(session, "info", {}))["nodes"]
            if sum(n["num_clients"] for n in nodes) == expected:
                break
        await asyncio.sleep(0.5)
    return nodes


async def ramp(
    loads: list[LoadProcess], cluster: Cluster, session: aiohttp.ClientSession, progress: Progress
) -> float:
    """Wait for every load process's ready line, showing the cluster's count meanwhile."""
    started = time.monotonic()
    total = sum(load.count for load in loads)
    # at least 200 connections/s, or the ramp failed (a shared machine can be that slow)
    timeout = max(600.0, total / 200)
    pending = {asyncio.create_task(load.read(timeout=timeout)): load for load in loads}
    try:
        while pending:
            done, _ = await asyncio.wait(pending, timeout=2.0)
            for task in done:
                pending.pop(task).ready = task.result()
            with contextlib.suppress(aiohttp.ClientError, AssertionError, TimeoutError):
                nodes = (await cluster.api(session, "info", {}))["nodes"]
                counted = sum(n["num_clients"] for n in nodes)
                progress.show(
                    f"ramp: {counted:,} of {total:,} counted by the nodes "
                    f"({time.monotonic() - started:.0f}s)"
                )
    finally:
        for task in pending:
            task.cancel()
    return time.monotonic() - started


def timeline(reports: list[dict], start_wall: float) -> dict:
    """Deliveries and latency p99 per second of the publishing phase, all processes."""
    per_second: dict[int, int] = {}
    samples: dict[int, list[float]] = {}
    for report in reports:
        for second, count in report.get("timeline", {}).items():
            per_second[int(second)] = per_second.get(int(second), 0) + count
        for at, latency in zip(report.get("latency_seconds", []), report["latencies"], strict=True):
            samples.setdefault(at, []).append(latency)
    first = int(start_wall)
    last = max(per_second, default=first)
    seconds = list(range(first, last + 1))
    return {
        "seconds": [s - first for s in seconds],
        "deliveries": [per_second.get(s, 0) for s in seconds],
        "latency_p99_ms": [
            percentile(samples[s], 0.99) * 1000 if s in samples else None for s in seconds
        ],
    }


def draw_timeline(series: dict, path: Path, target: float) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 3.8), dpi=110)
    ax.plot(series["seconds"], series["deliveries"], color="tab:blue", label="deliveries/s")
    ax.set_xlabel("seconds since the first publication")
    ax.set_ylabel("deliveries per second", color="tab:blue")
    ax.axhline(target, color="tab:blue", linestyle=":", linewidth=0.8)
    ax.set_ylim(0, max([target, *series["deliveries"]]) * 1.1)
    right = ax.twinx()
    xs = [s for s, v in zip(series["seconds"], series["latency_p99_ms"], strict=True) if v]
    ys = [v for v in series["latency_p99_ms"] if v]
    right.plot(xs, ys, color="tab:red", label="p99 latency")
    right.axhline(SHAPE.target_p99_ms, color="grey", linestyle="--", linewidth=0.8)
    right.set_ylabel("p99 publish → receive (ms)", color="tab:red")
    right.set_ylim(bottom=0)
    ax.set_title(
        f"{SHAPE.name}: deliveries/s (dotted: the offered rate) and p99 latency per second "
        f"(dashed: {SHAPE.target_p99_ms:.0f} ms)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def fail(problem: str) -> None:
    FAILURES.setdefault(SHAPE.name, []).append(problem)
    print(f"  FAILED {SHAPE.name}: {problem}", file=sys.stderr)


async def scenario(args, progress: Progress) -> dict:
    connections = args.c100k_connections
    workers = args.c100k_workers
    duration = args.c100k_duration
    processes = args.c100k_load_processes or math.ceil(connections / PER_PROCESS)
    for cycle in (SHAPE.personal_cycle, SHAPE.group_cycle):
        if duration % cycle or duration < cycle:
            raise SystemExit(f"the duration must be a multiple of {cycle:g} s")
    per_connection = SHAPE.per_connection(duration)
    parts = split(connections, processes)
    if max(count for _, count in parts) > 18_000:
        raise SystemExit("more than 18,000 connections per load process: add processes")
    if len(parts) > 250:
        raise SystemExit("at most 250 load processes (127.0.0.2 .. 127.0.0.251)")
    native = None
    if args.c100k_client == "native":
        from bench.native import native_client

        native = await asyncio.to_thread(native_client)  # gcc, when out of date
    redis = Redis(args.redis_url)
    users = args.c100k_users or connections
    prefix = f"pgbench-{SHAPE.name}-{uuid.uuid4().hex[:8]}"
    loads = [
        LoadProcess(k, first, count, args.c100k_ramp_rate * count / connections, users, native)
        for k, (first, count) in enumerate(parts)
    ]
    task = asyncio.current_task()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    result: dict = {
        "connections": connections,
        "workers": workers,
        "load_processes": len(loads),
        "load_client": "native" if native is not None else "python",
        "per_load_process": [load.count for load in loads],
        "source_addresses": [load.source for load in loads],
        "duration_seconds": duration,
        "personal_cycle_seconds": SHAPE.personal_cycle,
        "group_cycle_seconds": SHAPE.group_cycle,
        "group_size": SHAPE.group_size,
        "protocol": "protobuf" if SHAPE.protobuf else "json",
        "load_nice": SHAPE.load_nice,
        "batch_every_seconds": TICK,
        "api_connections": args.c100k_api_connections,
        "namespace": {
            "presence": args.c100k_presence,
            "history_size": 10,
            "history_ttl": "300s",
            "force_recovery": True,
        },
        "latency_sampled_every_nth_connection": SAMPLE_EVERY,
        "distinct_users": users,
    }
    worker_pids: list[int] = []
    problems: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        config = workdir / f"{SHAPE.name}.toml"
        config.write_text(c100k_config(args.redis_url, prefix, args.c100k_presence))
        cluster = Cluster(config, workers, SHAPE.name)
        try:
            async with aiohttp.ClientSession() as session:
                await cluster.wait_nodes(session, lambda nodes: len(nodes) == workers)
                worker_pids = sorted(cluster.pids(), key=worker_index)
                rss_before = {pid: rss_kib(pid) for pid in worker_pids}
                kernel_before = kernel_memory_kib()
                redis_before = redis.client.info("memory")["used_memory"]
                lag_worst: dict[str, dict[str, list[float]]] = {}
                phase = ["ramp"]
                if workers > 1:
                    watcher = asyncio.create_task(
                        sample_loop_lag(cluster.process.pid, lag_worst, phase)
                    )
                progress.step(f"{workers} workers up; minting {connections:,} tokens")
                for load in loads:
                    await load.start(cluster.port, workdir)
                ramp_cpu0 = {pid: proc_cpu(pid) for pid in worker_pids}
                ramp_seconds = await ramp(loads, cluster, session, progress)
                ramp_cpu = sum(proc_cpu(pid) - ramp_cpu0[pid] for pid in worker_pids)
                connected = sum(load.ready.get("connected", 0) for load in loads)
                errors: dict[str, int] = {}
                for load in loads:
                    for kind, count in load.ready.get("errors", {}).items():
                        errors[kind] = errors.get(kind, 0) + count
                if connected != connections:
                    fail(f"{connections - connected} of {connections} did not connect: {errors}")
                nodes = await wait_counted(cluster, session, connected, 30)
                rss_after = {pid: rss_kib(pid) for pid in worker_pids}
                by_name = {n["name"]: n for n in nodes}
                per_worker = []
                for pid in worker_pids:
                    node = by_name.get(f"{SHAPE.name}-{worker_index(pid)}", {})
                    per_worker.append(
                        {
                            "name": f"{SHAPE.name}-{worker_index(pid)}",
                            "pid": pid,
                            "clients": node.get("num_clients"),
                            "users": node.get("num_users"),
                            "subscriptions": node.get("num_subs"),
                            "channels": node.get("num_channels"),
                            "rss_before_kib": rss_before[pid],
                            "rss_after_ramp_kib": rss_after[pid],
                        }
                    )
                counts = [w["clients"] or 0 for w in per_worker]
                if max(counts) > PER_WORKER_LIMIT:
                    fail(f"a worker holds {max(counts):,} connections (> {PER_WORKER_LIMIT:,})")
                rss_growth = sum(rss_after.values()) - sum(rss_before.values())
                result["ramp"] = {
                    "rate_per_second": args.c100k_ramp_rate,
                    "seconds": ramp_seconds,
                    "per_process_seconds": [load.ready.get("seconds") for load in loads],
                    "connected": connected,
                    "failed": connections - connected,
                    "errors": errors,
                    "connections_per_worker": counts,
                    "kib_per_connection": rss_growth / max(1, connected),
                    "worker_cpu_ms_per_connection": 1000 * ramp_cpu / max(1, connected),
                    # each load process's answers to the server's pings (the native
                    # client: arrival → pong, late = over 4 s; the server closes at 8 s)
                    "pings_per_load_process": [load.ready.get("pings") for load in loads],
                }
                kernel_after = kernel_memory_kib()
                result["memory_per_connection_kib"] = {
                    "workers_rss": rss_growth / max(1, connected),
                    # both ends of each connection are on this machine: server and load
                    "kernel_slab_both_ends": (kernel_after["slab"] - kernel_before["slab"])
                    / max(1, connected),
                    "kernel_tcp_buffers_both_ends": (
                        kernel_after["tcp_buffers"] - kernel_before["tcp_buffers"]
                    )
                    / max(1, connected),
                    "redis": (redis.client.info("memory")["used_memory"] - redis_before)
                    / 1024
                    / max(1, connected),
                }
                if args.c100k_idle_seconds:
                    # connected and quiet: what pings and timers cost per connection-second
                    idle0 = sum(proc_cpu(pid) for pid in worker_pids)
                    redis_idle0 = redis.cpu()
                    phase[0] = "idle"
                    progress.show(f"idle for {args.c100k_idle_seconds:g}s (pings only)")
                    await asyncio.sleep(args.c100k_idle_seconds)
                    idle = sum(proc_cpu(pid) for pid in worker_pids) - idle0
                    result["idle"] = {
                        "seconds": args.c100k_idle_seconds,
                        "workers_cores": idle / args.c100k_idle_seconds,
                        "redis_cores": (redis.cpu() - redis_idle0) / args.c100k_idle_seconds,
                        "worker_cpu_us_per_connection_second": 1e6
                        * idle
                        / args.c100k_idle_seconds
                        / max(1, connected),
                    }
                progress.step(
                    f"{connected:,} connected in {ramp_seconds:.0f}s; per worker {counts}"
                )

                # --- publish for `duration`, then collect every load process's report
                for load in loads:
                    count = load.ready.get("connected", 0)
                    load.send(
                        {
                            "cmd": "expect",
                            "count": count * per_connection,
                            "per_connection": per_connection,
                            "timeout": drain_timeout(duration),
                        }
                    )
                for load in loads:
                    assert (await load.read(30))["phase"] == "expecting"
                publisher = Publisher(cluster.url, connections, args.c100k_api_connections)
                samples: list[dict] = []
                cpu0 = {pid: proc_cpu(pid) for pid in worker_pids}
                redis0, self0 = redis.cpu(), self_cpu()
                phase[0] = "publish"
                start_wall = time.time() + 0.2
                start = time.monotonic() + 0.2
                monitor = asyncio.create_task(sample_load(worker_pids, redis, samples))
                api = await publisher.run(duration, progress, start)
                api["seconds_until_last_answer"] = publisher.finished - start
                api["publications_per_second_achieved"] = publisher.accepted / max(
                    1e-9, publisher.finished - start
                )
                reports = await collect(loads, drain_timeout(duration) + 60, samples, progress)
                monitor.cancel()
                cpu1 = {pid: proc_cpu(pid) for pid in worker_pids}
                redis1, self1 = redis.cpu(), self_cpu()
                end_wall = max(r["at"] for r in reports)
                rss_end = {pid: rss_kib(pid) for pid in worker_pids}
                for worker in per_worker:
                    pid = worker["pid"]
                    worker["cpu_seconds"] = cpu1[pid] - cpu0[pid]
                    worker["rss_end_kib"] = rss_end[pid]
                verified = True
                for load, report in zip(loads, reports, strict=True):
                    expected = load.ready.get("connected", 0) * per_connection
                    verified &= verify(SHAPE.name, f"load {load.index}", report, expected)
                    if report.get("closed_connections"):
                        fail(f"load {load.index}: {report['closed_connections']} closed")
                if api["errors"] or api["publications_accepted"] != publisher.sent:
                    fail(f"API: {api['publications_accepted']} accepted, errors {api['errors']}")
                latencies = [x for r in reports for x in r["latencies"]]
                delivered = sum(r["received"] for r in reports)
                elapsed = end_wall - start_wall
                series = timeline(reports, start_wall)
                steady = series["deliveries"][1 : int(duration)]
                workers_cpu = sum(w["cpu_seconds"] for w in per_worker)
                clients_cpu = sum(r["client_cpu"] for r in reports)
                result["publish"] = {
                    "publications": publisher.sent,
                    "publications_per_second": publisher.rate,
                    "deliveries": delivered,
                    "deliveries_expected": connected * per_connection,
                    "seconds": elapsed,
                    "deliveries_per_second": delivered / elapsed,
                    "deliveries_per_second_median_of_seconds": (
                        sorted(steady)[len(steady) // 2] if steady else None
                    ),
                    "latency_samples": len(latencies),
                    "latency_p50_ms": percentile(latencies, 0.5) * 1000,
                    "latency_p99_ms": percentile(latencies, 0.99) * 1000,
                    "latency_p999_ms": percentile(latencies, 0.999) * 1000,
                    "latency_max_ms": max(latencies, default=float("nan")) * 1000,
                    "target_p99_ms": SHAPE.target_p99_ms,
                    "verified": verified,
                    "api": api,
                    "cpu_seconds": {
                        "workers": workers_cpu,
                        "redis": redis1 - redis0,
                        "load_processes": clients_cpu,
                        "publisher": self1 - self0,
                    },
                    "cpu_cores_used": {
                        "workers": workers_cpu / elapsed,
                        "redis": (redis1 - redis0) / elapsed,
                        "load_processes": clients_cpu / elapsed,
                        "publisher": (self1 - self0) / elapsed,
                    },
                    "load_process_cpu_seconds": [r["client_cpu"] for r in reports],
                    # since each load process started (ramp included)
                    "pings_per_load_process": [r.get("pings") for r in reports],
                    "per_second_load": samples,
                    "redis_pubsub_output_buffer_max_bytes": max(
                        (x["pubsub_omem_max"] for x in samples), default=0
                    ),
                    "timeline": series,
                }
                result["per_worker"] = per_worker
                result["rss_per_connection_kib_end"] = (
                    sum(rss_end.values()) - sum(rss_before.values())
                ) / max(1, connected)
                progress.step(
                    f"p99 {result['publish']['latency_p99_ms']:.0f} ms, "
                    f"{result['publish']['deliveries_per_second']:,.0f} deliveries/s"
                )
                # the load leaves (every connection closed within a second or so); the
                # nodes unregister every client before they stop
                phase[0] = "leave"
                redis_cpu0, workers_cpu0 = redis.cpu(), cluster.cpu()
                await asyncio.gather(*(load.stop() for load in loads))
                left_at = time.monotonic()
                nodes = await wait_counted(cluster, session, 0, 120)
                result["disconnect"] = {
                    "clients_left": sum(n["num_clients"] for n in nodes),
                    "seconds_until_counted_zero": time.monotonic() - left_at,
                    "redis_cpu_seconds": redis.cpu() - redis_cpu0,
                    "workers_cpu_seconds": cluster.cpu() - workers_cpu0,
                }
                if workers > 1:
                    watcher.cancel()
                    await sample_loop_lag_once(cluster.process.pid, lag_worst, "leave")
                    # per phase and worker: [longest block, of which the loop's thread ran]
                    result["event_loop_lag_max_seconds"] = {
                        "per_phase": lag_worst,
                        "max": {
                            name: max((lag for lag, _ in seen.values()), default=None)
                            for name, seen in lag_worst.items()
                        },
                        "max_running": {
                            name: max((cpu for _, cpu in seen.values()), default=None)
                            for name, seen in lag_worst.items()
                        },
                        "target": 0.1,
                    }
        finally:
            await asyncio.gather(*(load.stop() for load in loads), return_exceptions=True)
            problems = await asyncio.to_thread(cluster.stop)
            kill_leftovers(worker_pids)
            if args.c100k_keep_log:
                shutil.copy(cluster.log_path, args.c100k_keep_log)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(redis.drop, prefix)
            report_problems(SHAPE.name, problems)
    result["server_log_problems"] = problems
    if "disconnect" in result:
        # in the whole run, not only when the load left
        result["disconnect"]["nodes_declared_dead"] = sum(
            count for kind, count in problems.items() if "was declared dead" in kind
        )
    return result


def run(args, shape: Shape | None = None) -> None:
    global SHAPE
    if shape is None:
        cycle = args.c100k_cycle
        shape = Shape(personal_cycle=cycle, group_cycle=cycle)
    SHAPE = shape
    progress = Progress(SHAPE.name, 3 + int(args.c100k_duration // SHAPE.group_cycle))
    result = asyncio.run(scenario(args, progress))
    progress.finish()
    publish = result["publish"]
    plots = [
        {
            "title": (
                f"{SHAPE.name}: {result['ramp']['connected']:,} connections, "
                f"{result['workers']} workers + Redis, publish → receive "
                f"(target p99 ≤ {SHAPE.target_p99_ms:.0f} ms)"
            ),
            "ylabel": "ms",
            "labels": ["p50", "p99", "p99.9", "max"],
            "series": {
                "pushgate": [
                    publish["latency_p50_ms"],
                    publish["latency_p99_ms"],
                    publish["latency_p999_ms"],
                    publish["latency_max_ms"],
                ]
            },
            "hline": SHAPE.target_p99_ms,
        }
    ]
    # the shape (10 s) is bench/results/c100k.json; other cycles get their own
    name = SHAPE.name
    if name == "c100k" and SHAPE.personal_cycle != 10:
        name = f"c100k-cycle{SHAPE.personal_cycle:g}s"
    if SHAPE.protobuf:
        name += "-protobuf"
    save(name, {str(result["connections"]): result}, plots)
    png = RESULTS / f"{name}-timeline.png"
    connected = result["ramp"]["connected"]
    target = connected / SHAPE.personal_cycle + connected / SHAPE.group_cycle
    if draw_timeline(publish["timeline"], png, target):
        print(f"wrote {shown(png)}")
    ramp = result["ramp"]
    cores = publish["cpu_cores_used"]
    held = publish["latency_p99_ms"] <= SHAPE.target_p99_ms
    print(
        f"{SHAPE.name}: {ramp['connected']:,}/{result['connections']:,} connected in "
        f"{ramp['seconds']:.0f}s; per worker {ramp['connections_per_worker']}; "
        f"RSS {ramp['kib_per_connection']:.1f} KiB/connection"
    )
    print(
        f"{SHAPE.name}: {publish['deliveries']:,} deliveries in {publish['seconds']:.1f}s = "
        f"{publish['deliveries_per_second']:,.0f}/s; p50 {publish['latency_p50_ms']:.1f} ms, "
        f"p99 {publish['latency_p99_ms']:.1f} ms, p99.9 {publish['latency_p999_ms']:.1f} ms "
        f"(target p99 ≤ {SHAPE.target_p99_ms:.0f} ms: {'met' if held else 'NOT met'})"
    )
    print(
        f"{SHAPE.name}: cores used: workers {cores['workers']:.2f}, redis {cores['redis']:.2f}, "
        f"load processes {cores['load_processes']:.2f} ({result['load_client']} client), "
        f"publisher {cores['publisher']:.2f}"
    )
    leave = result.get("disconnect")
    if leave:
        blocked = result.get("event_loop_lag_max_seconds", {}).get("max", {}).get("leave")
        print(
            f"{SHAPE.name}: the load left: counted zero after "
            f"{leave['seconds_until_counted_zero']:.1f}s, workers "
            f"{leave['workers_cpu_seconds']:.1f} CPU-s, redis {leave['redis_cpu_seconds']:.1f} "
            f"CPU-s, longest loop block {blocked if blocked is not None else float('nan'):.2f}s; "
            f"nodes declared dead in the run: {leave.get('nodes_declared_dead', 0)}"
        )
