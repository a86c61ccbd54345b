"""Scenario ``transports``: the same publication stream through every transport.

For each transport (websocket, the http_stream and sse emulations, the three
unidirectional ones, long polling, short polling, STOMP over WebSocket and XMPP over
BOSH) a fresh server is started (pinned to CPU 0) and one load-client process
(bench.transportload, pinned to CPU 1) opens C subscribers of the channel ``bench:t``:
bidirectional clients subscribe with a command (STOMP: SUBSCRIBE ``/topic/bench:t``),
unidirectional ones and BOSH get the channel from the ``channels`` claim of their token
(an XMPP client's server-side channels arrive as headline messages). The API then
publishes M messages at a steady rate, each carrying its send time; the client checks
every subscriber's offsets (no loss, no duplicates) and measures publish → receive
latency. Reported per transport, as medians of R rounds: latency p50 / p99, server CPU
seconds per 1,000 deliveries, server and client CPU use. A loss, a duplicate, an
incomplete round or a transport that fails fails the scenario (exit status 1).

Choices (all adjustable on the command line of ``python -m bench.run``):
- 200 subscribers (``--subscribers``) for the push transports; 100 (``--poll-subscribers``)
  for long polling, short polling and BOSH: each costs one HTTP request per delivery
  (batch), and 200 long-pollers at 50 publications/s keep the server's core ~90% busy,
  which would measure saturation rather than the transport.
- 100 publications per round (``--messages``) at 50/s (``--rate``), after 10 warm-up
  publications; 3 rounds (``--rounds``); medians reported. About two minutes in all.
- Short polling asks every 0.5 s (``--poll-interval``, slept after each answer); its
  latency is bounded by that interval (~half of it at p50) and the requests it makes
  while nothing is published are part of its CPU figure, since that is what it costs.
- STOMP clients ask for no heart-beats (``heart-beat:0,0``); BOSH clients hold one
  request (``hold=1``, ``wait=60``) and send the next as soon as one is answered.
- A round ends when every subscriber holds the round's last offset (bounded by a 15 s
  timeout); server CPU is the server process's utime + stime over the round.

Output: bench/results/transports.json, transports.png (latency p50/p99 per transport)
and transports-2.png (server CPU-s per 1,000 deliveries per transport).
"""

from __future__ import annotations

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

from bench.common import Progress, save
from bench.run import API_KEY, FAILURES, ROOT, SECRET, Server, pin, proc_cpu
from bench.transportload import POLLING, TOKEN_CHANNELS, TRANSPORTS
from pushgate.auth import mint_connection_token

CHANNEL = "bench:t"
WARMUP_MESSAGES = 10
READ_TIMEOUT = 90.0  # longest wait for one line from the load client


class TransportClient:
    """The load-client process for one transport."""

    def __init__(
        self, port: int, transport: str, connections: int, poll_interval: float, workdir: Path
    ) -> None:
        channels = [CHANNEL] if transport in TOKEN_CHANNELS else None
        tokens = workdir / "tokens.txt"
        tokens.write_text(
            "\n".join(
                mint_connection_token(SECRET, f"user{i}", ttl=3600, channels=channels)
                for i in range(connections)
            )
        )
        self.process = subprocess.Popen(
            [
                *pin(1),
                sys.executable,
                "-m",
                "bench.transportload",
                "--port",
                str(port),
                "--transport",
                transport,
                "--connections",
                str(connections),
                "--tokens",
                str(tokens),
                "--channel",
                CHANNEL,
                "--poll-interval",
                str(poll_interval),
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    async def read(self, timeout: float = READ_TIMEOUT) -> dict:
        loop = asyncio.get_running_loop()
        try:
            line = await asyncio.wait_for(
                loop.run_in_executor(None, self.process.stdout.readline), timeout
            )
        except TimeoutError:
            self.process.kill()  # unblocks the reading thread
            raise RuntimeError("load client did not answer in time") from None
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
            self.process.wait(5)


async def publish(session: aiohttp.ClientSession, port: int) -> int:
    """Publish one message carrying its send time; the publication's offset."""
    body = {"channel": CHANNEL, "data": {"t": time.time()}}
    async with session.post(
        f"http://127.0.0.1:{port}/api/publish",
        json=body,
        headers={"X-API-Key": API_KEY},
        timeout=aiohttp.ClientTimeout(total=10),
    ) as response:
        assert response.status == 200, await response.text()
        reply = await response.json()
    assert "error" not in reply, reply
    return reply["result"]["offset"]


async def one_round(
    session: aiohttp.ClientSession,
    server: Server,
    client: TransportClient,
    connections: int,
    messages: int,
    rate: float,
) -> dict:
    client.send({"cmd": "start"})
    assert (await client.read())["phase"] == "started"
    cpu0 = proc_cpu(server.process.pid)
    started = time.monotonic()
    offset = 0
    for k in range(messages):  # a steady rate: message k leaves at started + k / rate
        delay = started + k / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        offset = await publish(session, server.port)
    client.send({"cmd": "until", "offset": offset, "timeout": 15})
    report = await client.read()
    cpu1 = proc_cpu(server.process.pid)
    wall = time.monotonic() - started
    deliveries = report["deliveries"]
    server_cpu = cpu1 - cpu0
    return {
        "complete": report["complete"],
        "expected": connections * messages,
        "deliveries": deliveries,
        "missing": report["missing"],
        "duplicates": report["duplicates"],
        "resent": report["resent"],
        "behind": report["behind"],
        "disconnects": report["disconnects"],
        "errors": report["errors"],
        "seconds": wall,
        "latency_p50_ms": report["latency_p50"] * 1000,
        "latency_p99_ms": report["latency_p99"] * 1000,
        "latency_max_ms": report["latency_max"] * 1000,
        "server_cpu_seconds": server_cpu,
        "server_cpu_per_1000_deliveries": server_cpu / max(deliveries, 1) * 1000,
        "server_cpu_share": server_cpu / wall,
        "client_cpu_seconds": report["client_cpu"],
        "client_cpu_share": report["client_cpu"] / max(report["client_wall"], 1e-9),
    }


MEDIAN_KEYS = (
    "latency_p50_ms",
    "latency_p99_ms",
    "latency_max_ms",
    "server_cpu_per_1000_deliveries",
    "server_cpu_share",
    "client_cpu_share",
    "seconds",
)


def problems(sample: dict) -> list[str]:
    """What went wrong in one round (nothing, normally)."""
    out = []
    if not sample["complete"]:
        out.append(
            f"incomplete: {sample['behind']} subscribers behind, "
            f"{sample['deliveries']}/{sample['expected']} deliveries"
        )
    if sample["missing"]:
        out.append(f"{sample['missing']} missing")
    if sample["duplicates"]:
        out.append(f"{sample['duplicates']} duplicates")
    if sample["disconnects"]:
        out.append(f"{sample['disconnects']} disconnects")
    if sample["errors"]:
        out.append(f"errors {sample['errors']}")
    return out


def fail(transport: str, problem: str) -> None:
    FAILURES.setdefault("transports", []).append(f"{transport}: {problem}")
    print(f"  FAILED transports {transport}: {problem}", file=sys.stderr)


async def measure(
    session: aiohttp.ClientSession,
    transport: str,
    connections: int,
    messages: int,
    rounds: int,
    rate: float,
    poll_interval: float,
    progress: Progress,
) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp))
        client = None
        try:
            await server.wait_ready(session)
            client = TransportClient(server.port, transport, connections, poll_interval, Path(tmp))
            ready = await client.read()
            if ready["phase"] != "ready":
                raise RuntimeError(f"load client failed: {ready}")
            progress.show(
                f"{transport}: {connections} subscribers ready in {ready['seconds']:.1f}s"
            )
            warmup = await one_round(session, server, client, connections, WARMUP_MESSAGES, rate)
            for problem in problems(warmup):
                fail(transport, f"warm-up: {problem}")
            samples = []
            for r in range(rounds):
                sample = await one_round(session, server, client, connections, messages, rate)
                samples.append(sample)
                for problem in problems(sample):
                    fail(transport, f"round {r + 1}: {problem}")
                progress.step(
                    f"{transport} round {r + 1}/{rounds}: "
                    f"{sample['deliveries']}/{sample['expected']} deliveries, "
                    f"p50 {sample['latency_p50_ms']:.1f} ms, "
                    f"p99 {sample['latency_p99_ms']:.1f} ms, "
                    f"{sample['server_cpu_per_1000_deliveries']:.3f} CPU-s/1k"
                )
            return {
                "transport": transport,
                "subscribers": connections,
                "messages_per_round": messages,
                "rounds": samples,
                "median": {key: statistics.median(s[key] for s in samples) for key in MEDIAN_KEYS},
                "all_complete": all(s["complete"] for s in samples),
                "missing": sum(s["missing"] for s in samples),
                "duplicates": sum(s["duplicates"] for s in samples),
            }
        finally:
            if client is not None:
                client.stop()
            server.stop()


async def transports(
    names: list[str],
    connections: int,
    poll_connections: int,
    messages: int,
    rounds: int,
    rate: float,
    poll_interval: float,
    progress: Progress,
) -> dict:
    results = {}
    async with aiohttp.ClientSession() as session:
        for index, name in enumerate(names):
            n = poll_connections if name in POLLING else connections
            try:
                results[name] = await measure(
                    session, name, n, messages, rounds, rate, poll_interval, progress
                )
            except (RuntimeError, AssertionError) as exc:
                # one transport failing is a finding to report, not a reason to stop
                fail(name, str(exc))
                results[name] = {"transport": name, "subscribers": n, "error": str(exc)}
                # the bar goes on to the next transport whatever rounds were left
                progress.done = min(progress.total, (index + 1) * rounds)
                progress.show(f"{name} failed")
    return results


def plots(results: dict, rate: float) -> list[dict]:
    """Bar charts of the transports that ran: latency p50/p99, server CPU per 1k."""
    ok = {name: r for name, r in results.items() if "error" not in r}
    labels = [f"{name.replace('_', chr(10))}\n({r['subscribers']})" for name, r in ok.items()]
    medians = [r["median"] for r in ok.values()]
    return [
        {
            "title": f"publish → receive latency per transport ({rate:g} pub/s; subscribers)",
            "ylabel": "ms",
            "labels": labels,
            "series": {
                "p50": [m["latency_p50_ms"] for m in medians],
                "p99": [m["latency_p99_ms"] for m in medians],
            },
        },
        {
            "title": "server CPU per 1,000 deliveries per transport (subscribers)",
            "ylabel": "server CPU-s per 1,000 deliveries",
            "labels": labels,
            "series": {"pushgate": [m["server_cpu_per_1000_deliveries"] for m in medians]},
        },
    ]


def table(results: dict) -> str:
    head = (
        f"{'transport':<16} {'subs':>5} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'srv CPU-s/1k':>12} {'srv CPU':>8} {'cli CPU':>8} {'lost':>5} {'dup':>5}"
    )
    rows = [head, "-" * len(head)]
    for name, r in results.items():
        if "error" in r:
            rows.append(f"{name:<16} {r['subscribers']:>5} FAILED: {r['error'][:60]}")
            continue
        m = r["median"]
        rows.append(
            f"{name:<16} {r['subscribers']:>5} {m['latency_p50_ms']:>8.1f} "
            f"{m['latency_p99_ms']:>8.1f} {m['server_cpu_per_1000_deliveries']:>12.3f} "
            f"{m['server_cpu_share']:>8.0%} {m['client_cpu_share']:>8.0%} "
            f"{r['missing']:>5} {r['duplicates']:>5}"
        )
    return "\n".join(rows)


def run(args) -> None:
    names = args.transports.split(",") if args.transports else list(TRANSPORTS)
    unknown = [n for n in names if n not in TRANSPORTS]
    if unknown:
        raise SystemExit(f"unknown transport(s) {unknown} (available: {', '.join(TRANSPORTS)})")
    messages = args.messages or 100
    settings = {
        "subscribers": args.subscribers,
        "poll_subscribers": args.poll_subscribers,
        "poll_subscribers_for": list(POLLING),
        "messages_per_round": messages,
        "warmup_messages": WARMUP_MESSAGES,
        "rounds": args.rounds,
        "publish_rate_per_second": args.rate,
        "poll_interval_seconds": args.poll_interval,
        "channel": CHANNEL,
    }
    started = time.monotonic()
    progress = Progress("transports", len(names) * args.rounds)
    results = asyncio.run(
        transports(
            names,
            args.subscribers,
            args.poll_subscribers,
            messages,
            args.rounds,
            args.rate,
            args.poll_interval,
            progress,
        )
    )
    progress.finish()
    save(
        "transports",
        results,
        plots(results, args.rate),
        cpu_count=os.cpu_count(),
        settings=settings,
    )
    print(f"transports: {time.monotonic() - started:.0f}s")
    print(
        f"transports: medians of {args.rounds} rounds of {messages} publications at "
        f"{args.rate:g}/s; CPU-s/1k = server CPU seconds per 1,000 deliveries; "
        "CPU columns = share of one core"
    )
    print(table(results))
