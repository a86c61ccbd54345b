"""The answer every HTTP transport gives a body over its size limit, counted in /metrics."""

from __future__ import annotations

from aiohttp import web

from pushgate.metrics import LIMIT_HITS


def too_large(what: str) -> web.Response:
    LIMIT_HITS.labels("frame_size").inc()
    return web.json_response({"error": f"{what} too large"}, status=413)
