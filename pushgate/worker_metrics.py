"""``/metrics`` of a node of several workers: one exposition for the whole machine.

With ``pushgate serve --workers N`` the kernel hands each scrape to any worker, and each
worker counts only its own connections and publications: scrapes alternated between
them and every counter jumped up and down. Now every worker also serves its own
exposition on a Unix socket in a directory only the supervisor's user can enter
(``<tmp>/pushgate-<supervisor pid>-metrics/worker-<i>.sock``); the worker a scrape
reaches reads its siblings' there and answers with all of them, each series carrying a
``worker`` label. Sum them with ``sum without (worker) (…)`` for the node's totals.

Why not prometheus-client's multiprocess mode: it aggregates only metric objects written
to shared files, so the figures read from the hub at scrape time (connections by
transport, subscriptions, queued bytes) and each worker's own process metrics (RSS, CPU,
open files, GC pauses) would be lost, and every counter increment on the hot path would
become a write to a memory-mapped file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

log = logging.getLogger("pushgate.metrics")

#: how long a scrape waits for a sibling's exposition
SIBLING_TIMEOUT = 2.0


def socket_dir(supervisor_pid: int) -> Path:
    """The workers' socket directory of the supervisor ``supervisor_pid``."""
    return Path(tempfile.gettempdir()) / f"pushgate-{supervisor_pid}-metrics"


def make_socket_dir(supervisor_pid: int) -> Path:
    """Create it for the supervisor: private to its user (mode 0700)."""
    path = socket_dir(supervisor_pid)
    path.mkdir(mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def remove_socket_dir(path: Path) -> None:
    for entry in path.glob("worker-*.sock"):
        with contextlib.suppress(OSError):
            entry.unlink()
    with contextlib.suppress(OSError):
        path.rmdir()


class _Merged:
    """A collector of parsed metric families, each sample labelled with its worker."""

    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> Iterator[Any]:
        yield from self.families


def merge(expositions: dict[str, str]) -> bytes:
    """One text exposition of several workers' (worker label → text), families kept
    together, every sample given a ``worker`` label."""
    by_name: dict[str, Any] = {}
    for worker, text in sorted(expositions.items(), key=lambda item: int(item[0])):
        for family in text_string_to_metric_families(text):
            merged = by_name.get(family.name)
            if merged is None:
                merged = by_name[family.name] = family
                samples = []
            else:
                samples = merged.samples
            samples.extend(
                Sample(s.name, {**s.labels, "worker": worker}, s.value, s.timestamp, s.exemplar)
                for s in family.samples
            )
            merged.samples = samples
    return generate_latest(_Merged(list(by_name.values())))


class WorkerMetrics:
    """This worker's place among its siblings: its own socket, and the scrape of all."""

    def __init__(self, index: int, supervisor_pid: int) -> None:
        self.index = index
        self.directory = socket_dir(supervisor_pid)
        self.path = self.directory / f"worker-{index}.sock"
        self._runner: web.AppRunner | None = None

    async def start(self, own: Handler) -> None:
        """Serve ``own`` (this worker's exposition alone) on this worker's socket."""
        app = web.Application()
        app.router.add_get("/metrics", own)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by this worker's previous life
        site = web.UnixSite(self._runner, str(self.path))
        await site.start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        with contextlib.suppress(OSError):
            self.path.unlink()

    async def exposition(self, own_text: str) -> bytes:
        """Every worker's exposition (this one's given), merged."""
        texts = {str(self.index): own_text}
        siblings = [p for p in self.directory.glob("worker-*.sock") if p != self.path]
        fetched = await asyncio.gather(*(self._fetch(p) for p in siblings))
        for path, text in zip(siblings, fetched, strict=True):
            if text is not None:
                texts[path.stem.removeprefix("worker-")] = text
        return merge(texts)

    @staticmethod
    async def _fetch(path: Path) -> str | None:
        try:
            async with (
                aiohttp.ClientSession(
                    connector=aiohttp.UnixConnector(path=str(path)),
                    timeout=aiohttp.ClientTimeout(total=SIBLING_TIMEOUT),
                ) as session,
                session.get("http://worker/metrics") as response,
            ):
                return await response.text()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            # a worker being restarted; the next scrape has it again
            log.info("metrics of %s not read: %s", path.name, exc)
            return None
