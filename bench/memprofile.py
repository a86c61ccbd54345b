"""Where an idle connection's memory goes: ``python -m bench.memprofile [--connections N]``.

Runs pushgate in this process (the bench configuration, memory engine) with tracemalloc
on, opens N WebSocket connections with 2 subscriptions each from bench.wsload, and
prints the Python heap growth per connection grouped by source file, next to the
growth in RSS (which also holds uvloop/libuv buffers and allocator slack).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import tempfile
import tracemalloc
from pathlib import Path

from aiohttp import web

from bench.common import rss_kib
from bench.run import CONFIG, LoadClient, free_port
from pushgate.config import load_config
from pushgate.server import create_app


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.toml"
        path.write_text(CONFIG)
        app = create_app(load_config(path))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.sleep(0.5)
        gc.collect()
        tracemalloc.start(1)
        before = tracemalloc.take_snapshot()
        rss0 = rss_kib(os.getpid())
        client = LoadClient(port, n, ["bench:u{i}", "bench:g{g}"], Path(tmp), cpu=None)
        await client.aread(timeout=300)
        await asyncio.sleep(1.0)
        gc.collect()
        after = tracemalloc.take_snapshot()
        rss1 = rss_kib(os.getpid())
        stats = after.compare_to(before, "filename")
        total = sum(s.size_diff for s in stats)
        print(f"{n} connections, 2 subscriptions each (tracemalloc on: RSS inflated)")
        print(
            f"RSS growth {(rss1 - rss0) / n:.2f} KiB/connection; "
            f"Python heap growth {total / n / 1024:.2f} KiB/connection, of which:"
        )
        for stat in stats[:14]:
            name = stat.traceback[0].filename
            name = name.split("site-packages/")[-1].split("/work/main/")[-1]
            print(f"  {stat.size_diff / n:8.0f} B  {stat.count_diff / n:5.1f} objects  {name}")
        client.stop()
        await runner.cleanup()


if __name__ == "__main__":
    import uvloop

    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=3000)
    uvloop.run(main(parser.parse_args().connections))
