"""bench/wsload.c, the native load client of the benchmarks, against a real server.

It is compiled here with -Werror, connects 50 subscribers to one channel with history
and must report 20 publications on each connection, in offset order, with latencies,
in bench/wsload.py's JSON lines. Once as under a light load (every socket read at once)
and once in its busy mode (WSLOAD_NATIVE_BUSY=1: naps, and the connections not sampled
read twice a second, the completion time taken from the kernel's arrival timestamps),
where it also answers the server's pings (a short ping interval: an unanswered ping
would drop the connection and show as short connections).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
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


@pytest.mark.parametrize("busy", [False, True], ids=["light", "busy"])
async def test_native_client_counts_every_publication_in_order(
    binary, make_server, server_config, tmp_path, busy
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
        process.stdin.write(b'{"cmd": "quit"}\n')
        await process.stdin.drain()
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
