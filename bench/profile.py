"""Profile the fan-out path: ``python -m bench.profile [--subscribers N] [--messages M]``.

Starts pushgate (pinned to CPU 0) and the load client (CPU 1) as bench.run does, attaches
py-spy to the server while the API publishes M messages to N subscribers, and writes
bench/results/profile-fanout.txt (collapsed stacks) plus a summary of the hottest
functions (own time) on stdout. Needs py-spy (``pip install py-spy``) and ptrace.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.run import RESULTS, LoadClient, Server


async def main(n: int, messages: int, seconds: int) -> Path:
    out = RESULTS / "profile-fanout.txt"
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    async with aiohttp.ClientSession() as session:
        with tempfile.TemporaryDirectory() as tmp:
            server = Server(Path(tmp))
            client = None
            try:
                await server.wait_ready(session)
                client = LoadClient(server.port, n, ["bench:fanout"], Path(tmp))
                await client.aread()
                recorder = subprocess.Popen(
                    [
                        spy,
                        "record",
                        "-p",
                        str(server.pid),
                        "-f",
                        "raw",
                        "-o",
                        str(out),
                        "-d",
                        str(seconds),
                        "-r",
                        "250",
                        "--nonblocking",
                    ],
                    stdout=subprocess.DEVNULL,
                )
                await asyncio.sleep(1.0)
                deadline = time.monotonic() + seconds - 2
                while time.monotonic() < deadline:
                    await client.expect(n * messages, messages)
                    for _ in range(messages):
                        await server.publish(session, "bench:fanout")
                    await client.aread()
                recorder.wait(seconds + 30)
            finally:
                if client is not None:
                    client.stop()
                server.stop()
    return out


def summary(path: Path, top: int = 25) -> None:
    own: collections.Counter = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        total += int(count)
        own[frames[-1]] += int(count)
    print(f"{total} samples; own time by function:")
    for frame, count in own.most_common(top):
        print(f"{100 * count / total:5.1f}%  {frame}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=10000)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--seconds", type=int, default=12)
    args = parser.parse_args()
    summary(asyncio.run(main(args.subscribers, args.messages, args.seconds)))
