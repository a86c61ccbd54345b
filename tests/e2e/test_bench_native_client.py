"""bench/wsload.c, the native load client of the benchmarks, against a real server.

It is compiled here with -Werror, connects 50 subscribers to one channel with history
and must report 20 publications on each connection, in offset order, with latencies,
in bench/wsload.py's JSON lines. Once as under a light load (every socket read at once)
and once in its busy mode (WSLOAD_NATIVE_BUSY=1: naps, and the connections not sampled
read twice a second, the completion time taken from the kernel's arrival timestamps),
where it also answers the server's pings (a short ping interval: an unanswered ping
would drop the connection and show as short connections). Each in JSON and with
--protobuf (the centrifuge-protobuf subprotocol, length-delimited Commands and Replies in
binary frames; the ping an empty Reply, the pong an empty Command).

Then with the flags of the c100k scenario: 200 connections numbered from 1000, ramped at
a bounded rate from 127.0.0.2, each on its personal and its group channel (named by the
global index, which the server's channel list shows), 3 publications on each channel in
offset order, with the per-second timeline in the report; in busy mode with --eager
(every connection read at once: lazy reads never switch on) and without (they do), and
with --protobuf. A ramp that fails reports its failures in the ready line exactly as
bench/wsload.py does, and so does a Protobuf subscribe the server refuses.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.native import SOURCE

CONNECTIONS = 50
MESSAGES = 20

BENCH_NAMESPACE = """
[[namespace]]
name = "bench"
history_size = 100
history_ttl = "300s"
force_recovery = true
allow_subscribe_for_client = true
"""


@pytest.fixture(scope="module")
def binary(tmp_path_factory) -> Path:
    """bench/wsload.c compiled with every warning an error."""
    gcc = shutil.which("gcc")
    if gcc is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("gcc is missing: CI must build the native load client")
        pytest.skip("gcc is missing")
    out = tmp_path_factory.mktemp("native") / "wsload-native"
    subprocess.run(
        [gcc, "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(out), str(SOURCE)],
        check=True,
        timeout=120,
    )
    return out


async def line(process: asyncio.subprocess.Process, timeout: float = 10) -> dict:
    raw = await asyncio.wait_for(process.stdout.readline(), timeout)
    assert raw, "the native client exited"
    return json.loads(raw)


@pytest.mark.parametrize("protocol", ["json", "protobuf"])
@pytest.mark.parametrize("busy", [False, True], ids=["light", "busy"])
async def test_native_client_counts_every_publication_in_order(
    binary, make_server, server_config, tmp_path, busy, protocol
):
    # a pong read lazily is up to 0.5 s late (busy mode reads twice a second): a pong
    # timeout of 0.5 s would race with it, and drop connections now and then
    server = await make_server(
        server_config(BENCH_NAMESPACE, client__ping_interval="1s", client__pong_timeout="0.9s")
    )
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("\n".join(server.token(f"user{i}") for i in range(7)))
    port = server.url.rsplit(":", 1)[1]
    process = await asyncio.create_subprocess_exec(
        str(binary),
        *("--port", port, "--connections", str(CONNECTIONS), "--tokens", str(tokens)),
        *("--channel", "bench:native", "--sample-every", "5"),
        *(["--protobuf"] if protocol == "protobuf" else []),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "WSLOAD_NATIVE_BUSY": "1" if busy else "0"},
    )
    try:
        ready = await line(process)
        assert ready["phase"] == "ready"
        assert ready["seconds"] < 10
        if busy:  # the server pings every second: each ping waits for a lazy read
            await asyncio.sleep(2.2)  # the first pong deadlines have passed
        command = {
            "cmd": "expect",
            "count": CONNECTIONS * MESSAGES,
            "per_connection": MESSAGES,
            "timeout": 10,
        }
        process.stdin.write(json.dumps(command).encode() + b"\n")
        await process.stdin.drain()
        assert (await line(process)) == {"phase": "expecting"}
        started = time.time()
        for _ in range(MESSAGES):
            await server.publish("bench:native", {"t": time.time()})
        published = time.time()
        report = await line(process, 15)
        assert report["phase"] == "received"
        assert report["complete"] is True
        assert report["received"] == CONNECTIONS * MESSAGES
        assert report["order_errors"] == 0, report["order_examples"]
        assert report["short_connections"] == 0
        assert report["per_connection_min"] == report["per_connection_max"] == MESSAGES
        # every 5th connection is sampled: 10 x 20 latencies, each a fraction of a second
        assert len(report["latencies"]) == CONNECTIONS // 5 * MESSAGES
        assert all(-0.01 < latency < 5 for latency in report["latencies"])
        assert 0 <= report["client_cpu"] < 5
        # when the last publication arrived: after the first publish, before the report
        assert started < report["at"] <= time.time()
        assert report["at"] - published < 2
        # the server's pings: answered, each timed from its arrival in the kernel
        pings = report["pings"]
        assert pings["late"] == 0, pings
        if busy:  # every connection pinged at least twice, each read within half a second
            assert pings["answered"] >= 2 * CONNECTIONS, pings
            assert 0 < pings["max_s"] < 1.0, pings
        process.stdin.write(b'{"cmd": "quit"}\n')
        await process.stdin.drain()
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


RAMPED = 200
FIRST_INDEX = 1000
ROUNDS = 3
GROUP_SIZE = 10


def established_from(source: str, port: int) -> int:
    """Established TCP connections from ``source`` (IPv4) to 127.0.0.1:port."""
    local = socket.inet_aton(source)[::-1].hex().upper()
    remote = f"0100007F:{port:04X}"
    count = 0
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = row.split()
        if fields[1].split(":")[0] == local and fields[2] == remote and fields[3] == "01":
            count += 1
    return count


@pytest.mark.parametrize(
    ("eager", "protobuf"),
    [(True, False), (False, False), (True, True)],
    ids=["eager", "lazy", "eager-protobuf"],
)
async def test_native_client_with_the_c100k_flags(
    binary, make_server, server_config, tmp_path, eager, protobuf
):
    server = await make_server(server_config(BENCH_NAMESPACE))
    indexes = range(FIRST_INDEX, FIRST_INDEX + RAMPED)
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("\n".join(server.token(f"c{i}") for i in indexes))
    port = int(server.url.rsplit(":", 1)[1])
    process = await asyncio.create_subprocess_exec(
        str(binary),
        *("--port", str(port), "--connections", str(RAMPED), "--tokens", str(tokens)),
        *("--group-size", str(GROUP_SIZE), "--channel", "bench:u{i}", "--channel", "bench:g{g}"),
        *("--source-address", "127.0.0.2", "--first-index", str(FIRST_INDEX)),
        *("--rate", "400", "--max-pending", "20", "--connect-timeout", "10"),
        *("--sample-every", "5", "--timeline", *(["--eager"] if eager else [])),
        *(["--protobuf"] if protobuf else []),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        # always busy: without --eager the connections not sampled would be read lazily
        env={**os.environ, "WSLOAD_NATIVE_BUSY": "1", "WSLOAD_NATIVE_DEBUG": "1"},
    )
    try:
        ready = await line(process, 20)
        assert ready["phase"] == "ready"
        assert (ready["connected"], ready["failed"], ready["errors"]) == (RAMPED, 0, {})
        assert 0.45 <= ready["seconds"] < 15  # 200 at 400/s: half a second at least
        assert established_from("127.0.0.2", port) == RAMPED
        # every connection on the channels of its global index, and no other
        listed = (await server.api("channels"))["result"]["channels"]
        expected_channels = {f"bench:u{i}": 1 for i in indexes} | {
            f"bench:g{g}": GROUP_SIZE
            for g in range(FIRST_INDEX // 10, (FIRST_INDEX + RAMPED) // 10)
        }
        assert {ch: v["num_clients"] for ch, v in listed.items()} == expected_channels
        command = {
            "cmd": "expect",
            "count": RAMPED * 2 * ROUNDS,
            "per_connection": 2 * ROUNDS,
            "timeout": 15,
        }
        process.stdin.write(json.dumps(command).encode() + b"\n")
        await process.stdin.drain()
        assert (await line(process)) == {"phase": "expecting"}
        started = time.time()
        for n in range(ROUNDS):
            commands = [
                {"publish": {"channel": channel, "data": {"t": time.time()}}}
                for channel in expected_channels
            ]
            reply = await server.api("batch", {"commands": commands})
            # offsets 1, 2, 3 on every channel: the client checks each follows the last
            assert [r["publish"]["offset"] for r in reply["replies"]] == [n + 1] * len(commands)
        report = await line(process, 20)
        finished = time.time()
        assert report["phase"] == "received"
        assert report["complete"] is True
        assert report["received"] == RAMPED * 2 * ROUNDS
        assert report["order_errors"] == 0, report["order_examples"]
        assert report["short_connections"] == 0
        assert report["per_connection_min"] == report["per_connection_max"] == 2 * ROUNDS
        assert report["closed_connections"] == 0
        # sampled: the global indexes divisible by 5, 40 of them, on both channels
        assert len(report["latencies"]) == RAMPED // 5 * 2 * ROUNDS
        assert all(-0.01 < latency < 5 for latency in report["latencies"])
        # the timeline: every delivery in a wall-clock second of the publishing phase
        assert sum(report["timeline"].values()) == RAMPED * 2 * ROUNDS
        assert all(int(started) <= int(s) <= finished for s in report["timeline"])
        seconds = report["latency_seconds"]
        assert len(seconds) == len(report["latencies"])
        assert all(int(started) <= s <= finished for s in seconds)
        process.stdin.write(b'{"cmd": "quit"}\n')
        await process.stdin.drain()
        assert await asyncio.wait_for(process.wait(), 10) == 0
        stderr = (await process.stderr.read()).decode()
        assert ("lazy reads on" in stderr) is not eager, stderr
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def ready_line(
    program: list[str], port: int, tokens: Path, channel: str = "bench:u{i}", *extra: str
) -> dict:
    """The ready line of a ramp of 5 connections onto ``port`` (then quit)."""
    result = subprocess.run(
        [
            *program,
            *("--port", str(port), "--connections", "5", "--tokens", str(tokens)),
            *("--channel", channel, "--source-address", "127.0.0.3"),
            *("--rate", "100", "--connect-timeout", "0.5", "--first-index", "7", *extra),
        ],
        input=b'{"cmd": "quit"}\n',
        capture_output=True,
        timeout=30,
        cwd=Path(__file__).parents[2],
    )
    assert result.returncode == 0, result.stderr.decode()
    ready = json.loads(result.stdout.splitlines()[0])
    assert ready.pop("seconds") < 10
    assert ready.pop("pings", None) in (None, {"answered": 0, "late": 0, "max_s": 0, "max_at_s": 0})
    return ready  # wsload.py's fields: the ping report is the native client's own


@pytest.mark.parametrize("failure", ["refused", "timeout"])
def test_native_ramp_reports_failures_as_wsload_py(binary, tmp_path, failure):
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("token")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        if failure == "timeout":
            listener.listen(16)  # accepted by the kernel, never answered
        else:
            listener.close()  # nothing listens: refused
        native = ready_line([str(binary)], port, tokens)
        python = ready_line([sys.executable, "-m", "bench.wsload"], port, tokens)
    kind = {
        "refused": f"ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', {port})",
        "timeout": "TimeoutError: ",
    }[failure]
    expected = {"phase": "ready", "connected": 0, "failed": 5, "errors": {kind: 5}}
    assert native == python == expected


async def test_native_protobuf_subscribe_refused_as_wsload_py(
    binary, make_server, server_config, tmp_path
):
    """A subscribe the server refuses (an unknown namespace), in Protobuf: the ramp reports
    it under the same kind as wsload.py (str() of the Reply's Error)."""
    server = await make_server(server_config(BENCH_NAMESPACE))
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(server.token("refused"))
    port = int(server.url.rsplit(":", 1)[1])
    args = (port, tokens, "nowhere:u{i}", "--protobuf")
    native = await asyncio.to_thread(ready_line, [str(binary)], *args)
    python = await asyncio.to_thread(ready_line, [sys.executable, "-m", "bench.wsload"], *args)
    assert native == python, (native, python)
    assert (native["connected"], native["failed"]) == (0, 5)
    [(kind, count)] = native["errors"].items()
    assert count == 5
    assert kind.startswith("RuntimeError: code: 1"), kind
