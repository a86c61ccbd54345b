"""``allowed_origins`` and CORS for every endpoint a browser reaches.

A middleware refuses requests whose ``Origin`` is not allowed (403) and answers CORS
preflights; a response-prepare hook adds the CORS headers to every answer, streams and
WebSocket handshakes included (their headers go out before a handler returns). What is
allowed and which headers an answer gets: origin.py.
"""

from __future__ import annotations

import logging

from aiohttp import web

from pushgate.transport.app_keys import HUB
from pushgate.transport.origin import cors_headers, origin_allowed, refuse_origin

log = logging.getLogger("pushgate.cors")

BROWSER_PATHS = ("/connection/", "/emulation", "/static/")


def _browser_facing(request: web.Request) -> bool:
    return request.path.startswith(BROWSER_PATHS)


@web.middleware
async def cors_middleware(request: web.Request, handler) -> web.StreamResponse:
    if not _browser_facing(request):
        return await handler(request)
    allowed = request.config_dict[HUB].config.server.allowed_origins
    if not origin_allowed(request, allowed):
        log.info("refused: origin %r on %s", request.headers.get("Origin"), request.path)
        return refuse_origin(request)
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        requested = request.headers.get("Access-Control-Request-Headers", "Content-Type")
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                "Access-Control-Allow-Headers": requested,
                "Access-Control-Max-Age": "600",
            },
        )
    return await handler(request)


async def preflight_only(request: web.Request) -> web.Response:
    """OPTIONS that is not a CORS preflight (those the middleware answers)."""
    return web.Response(status=204, headers={"Allow": "GET, POST, OPTIONS"})


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    if not request.headers.get("Origin") or not _browser_facing(request):
        return
    # config_dict also finds the hub from inside a mounted sub-application
    allowed = request.config_dict[HUB].config.server.allowed_origins
    response.headers.update(cors_headers(request, allowed))
