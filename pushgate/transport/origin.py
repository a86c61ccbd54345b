"""The ``allowed_origins`` check and the CORS headers shared by every browser-facing endpoint.

A request without ``Origin`` is not a browser's (a backend, a native app, a test
client): it is let through, as browsers are the only ones CORS and origin checks can
protect. A browser's request is allowed when it is same-origin (the ``Origin``'s host
and port are the request's ``Host``), when its origin is listed in
``server.allowed_origins``, or when the list holds ``*``. With the list empty, only
same-origin pages may connect: Centrifugo's default, and the safe one — a page on
another site cannot use a visitor's cookies or network position to connect.

CORS answers: a listed origin is reflected with credentials allowed; an origin that
only ``*`` lets in gets ``Access-Control-Allow-Origin: *`` without credentials, so no
arbitrary site can make credentialed requests; same-origin requests need nothing.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _authority(host: str, port: int | None, scheme: str) -> tuple[str, int | None]:
    return host.lower(), port if port != DEFAULT_PORTS.get(scheme) else None


def same_origin(request: web.Request, origin: str) -> bool:
    """The ``Origin`` names the host and port this request was sent to (its ``Host``);
    the scheme is not compared, so a TLS-terminating proxy in front changes nothing."""
    try:
        parts = urlsplit(origin)
        origin_port = parts.port
    except ValueError:
        return False
    if not parts.hostname or parts.scheme not in DEFAULT_PORTS:
        return False
    host = request.headers.get("Host", "")
    try:
        target = urlsplit(f"{parts.scheme}://{host}")
        target_port = target.port
    except ValueError:
        return False
    if not target.hostname:
        return False
    return _authority(parts.hostname, origin_port, parts.scheme) == _authority(
        target.hostname, target_port, parts.scheme
    )


def origin_allowed(request: web.Request, allowed: list[str]) -> bool:
    """True for a request without Origin (not a browser), a same-origin one, a listed
    origin, or any origin when the list holds ``*``."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return origin in allowed or "*" in allowed or same_origin(request, origin)


def cors_headers(request: web.Request, allowed: list[str]) -> dict[str, str]:
    """The CORS headers of an answer to ``request`` (none when it needs none)."""
    origin = request.headers.get("Origin")
    if not origin or same_origin(request, origin):
        return {}
    if origin in allowed:
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Credentials": "true",
            "Vary": "Origin",
        }
    if "*" in allowed:
        return {"Access-Control-Allow-Origin": "*"}
    return {}


def refuse_origin(request: web.Request) -> web.Response:
    return web.json_response(
        {"error": f"origin {request.headers.get('Origin')!r} is not allowed"}, status=403
    )
