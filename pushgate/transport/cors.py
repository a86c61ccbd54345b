"""``allowed_origins`` and CORS for every endpoint a browser reaches.

A middleware refuses requests whose ``Origin`` is not allowed (403) and answers CORS
preflights; a response-prepare hook adds the CORS headers to every answer, streams and
WebSocket handshakes included (their headers go out before a handler returns).
"""

from __future__ import annotations

from aiohttp import web

from pushgate.transport.app_keys import HUB
from pushgate.transport.origin import origin_allowed

BROWSER_PATHS = ("/connection/", "/emulation", "/static/")


def _browser_facing(request: web.Request) -> bool:
    return request.path.startswith(BROWSER_PATHS)


@web.middleware
async def cors_middleware(request: web.Request, handler) -> web.StreamResponse:
    if not _browser_facing(request):
        return await handler(request)
    allowed = request.config_dict[HUB].config.server.allowed_origins
    if not origin_allowed(request, allowed):
        return web.json_response(
            {"error": f"origin {request.headers.get('Origin')!r} is not allowed"}, status=403
        )
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


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    origin = request.headers.get("Origin")
    if not origin or not _browser_facing(request):
        return
    # config_dict also finds the hub from inside a mounted sub-application
    if origin_allowed(request, request.config_dict[HUB].config.server.allowed_origins):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Vary"] = "Origin"
