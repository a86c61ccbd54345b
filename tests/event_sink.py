"""A product backend's webhook endpoint for tests: a real aiohttp server on loopback.

It checks each request's signature the way a product would (HMAC-SHA256 over
``<timestamp>.<body>``, recomputed here without pushgate's code), records the events
of every accepted request, and can be told to fail (answer 503) or to stop listening —
a backend outage.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

WEBHOOK_SECRET = "webhook-secret-for-tests"


def signed_by(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest("sha256=" + mac.hexdigest(), signature)


class EventSink:
    def __init__(self, secret: str = WEBHOOK_SECRET) -> None:
        self.secret = secret
        #: every event of every accepted request, in arrival order (duplicates kept)
        self.events: list[dict[str, Any]] = []
        self.requests = 0
        self.refused = 0
        self.bad_signatures = 0
        self.failing = False
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/pushgate"

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_post("/hooks/pushgate", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port or self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests += 1
        if not signed_by(
            self.secret,
            request.headers.get("X-Pushgate-Timestamp", ""),
            body,
            request.headers.get("X-Pushgate-Signature", ""),
        ):
            self.bad_signatures += 1
            return web.Response(status=401)
        if self.failing:
            self.refused += 1
            self._changed.set()
            return web.Response(status=503)
        self.events.extend(orjson.loads(body)["events"])
        self._changed.set()
        return web.Response(status=204)

    def of(self, *types: str, **fields: object) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if (not types or e["type"] in types) and all(e.get(k) == v for k, v in fields.items())
        ]

    def unique(self) -> list[dict[str, Any]]:
        """Events without the repeats of a batch sent again (same id)."""
        seen: set[str] = set()
        out = []
        for event in self.events:
            if event["id"] not in seen:
                seen.add(event["id"])
                out.append(event)
        return out

    async def wait_for(
        self, predicate: Callable[[EventSink], bool], timeout: float = 5.0, what: str = ""
    ) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not predicate(self):
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            types = [(e["type"], e.get("user") or e.get("channel")) for e in self.events]
            raise AssertionError(f"not within {timeout}s: {what}; got {types}") from None
