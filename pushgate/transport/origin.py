"""The ``allowed_origins`` check shared by every browser-facing endpoint."""

from __future__ import annotations

from aiohttp import web


def origin_allowed(request: web.Request, allowed: list[str]) -> bool:
    """True when no list is configured, the request has no Origin (not a browser),
    or its Origin is on the list (``*`` allows any)."""
    if not allowed:
        return True
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return "*" in allowed or origin in allowed


def refuse_origin(request: web.Request) -> web.Response:
    return web.json_response(
        {"error": f"origin {request.headers.get('Origin')!r} is not allowed"}, status=403
    )
