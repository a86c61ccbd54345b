"""How the demo backend talks to pushgate: the HTTP server API.

Nothing here imports pushgate: a product's backend needs only the API key and pushgate's
URL, and could be written in any language. (pushgate talks to the backend through its
proxies: proxy.py.)
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp

log = logging.getLogger("demo.push")


class PushgateError(Exception):
    def __init__(self, method: str, error: Any) -> None:
        super().__init__(f"pushgate {method}: {error}")
        self.error = error


class ServerApi:
    """``POST <url>/api/<method>`` with the API key, over one pooled ClientSession."""

    def __init__(self, url: str, api_key: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            headers={"X-API-Key": self.api_key},
            timeout=aiohttp.ClientTimeout(total=self.timeout),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def call(self, method: str, params: dict[str, Any], retries: int = 2) -> Any:
        """One API call; network failures are retried (publishes carry an
        ``idempotency_key``, so a retry never publishes twice)."""
        assert self._session is not None, "ServerApi.start() first"
        for attempt in range(retries + 1):
            try:
                async with self._session.post(f"{self.url}/api/{method}", json=params) as resp:
                    body = await resp.json(content_type=None)
                break
            except (aiohttp.ClientError, TimeoutError) as exc:
                if attempt == retries:
                    raise PushgateError(method, repr(exc)) from exc
                await asyncio.sleep(0.2 * (attempt + 1))
        if "error" in body:
            raise PushgateError(method, body["error"])
        return body.get("result", body)

    async def publish(
        self, channel: str, data: Any, idempotency_key: str = "", handoff: float = 0
    ) -> Any:
        """``handoff``: seconds within which one of the user's tabs must show it, else
        pushgate hands it back to us (the webhook, demo/hooks.py) to e-mail it."""
        params: dict[str, Any] = {"channel": channel, "data": data}
        if idempotency_key:
            params["idempotency_key"] = idempotency_key
        if handoff:
            params["handoff"] = handoff
        return await self.call("publish", params)

    async def broadcast(self, channels: list[str], data: Any) -> Any:
        return await self.call("broadcast", {"channels": channels, "data": data})

    async def user_status(self, users: list[str]) -> dict[str, dict[str, Any]]:
        result = await self.call("user_status", {"users": users})
        return {s["user"]: s for s in result["statuses"]}

    async def read_position(self, user: str, channel: str) -> tuple[int, str] | None:
        """How far ``user`` has read ``channel`` (pushgate's read positions), or None."""
        result = await self.call("read_state", {"user": user})
        found = result["read"].get(channel)
        return None if found is None else (found["offset"], found["epoch"])
