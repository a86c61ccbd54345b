"""The checks every admin POST passes: the page's own Origin and a JSON body.

A browser sends ``Origin`` with every POST, same-origin ones included; a request whose
Origin is missing or names another host than the request's ``Host`` did not come from
the admin page (403). A JSON ``Content-Type`` is not one a plain HTML form can send, so
a cross-site form cannot reach these endpoints either (415).
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import orjson
from aiohttp import web

log = logging.getLogger("pushgate.admin")

DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def quoted(text: str | None, limit: int = 200) -> str:
    """A client-supplied string for a log line: escaped (repr) and cut short."""
    return repr(text if text is None else text[:limit])


def _authority(host: str, scheme: str | None = None) -> str:
    host = host.strip().lower()
    for name, port in DEFAULT_PORTS.items():
        if (scheme is None or scheme == name) and host.endswith(port):
            return host[: -len(port)]
    return host


def same_origin(origin: str | None, host: str) -> bool:
    """True when ``origin`` (the Origin header) names the request's ``host``."""
    if not origin or not host:
        return False
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    if parts.scheme not in DEFAULT_PORTS or not parts.netloc or parts.path not in ("", "/"):
        return False
    return _authority(parts.netloc, parts.scheme) == _authority(host)


def json_error(status: type[web.HTTPException], message: str) -> web.HTTPException:
    """An HTTP error (to raise) whose body is ``{"error": message}``."""
    return status(text=orjson.dumps({"error": message}).decode(), content_type="application/json")


def refuse_unless_page_post(request: web.Request) -> web.HTTPException | None:
    """403 for another origin, 415 for a body that is not JSON (to raise); None when
    the request passes."""
    origin = request.headers.get("Origin")
    if not same_origin(origin, request.host):
        log.warning(
            "admin %s refused: Origin %s is not this page's (Host %s)",
            request.path,
            quoted(origin),
            quoted(request.host),
            extra={"remote": request.remote},
        )
        return json_error(
            web.HTTPForbidden, "cross-origin request refused: the Origin must be this page's"
        )
    if request.content_type != "application/json":
        log.warning(
            "admin %s refused: Content-Type %s is not application/json",
            request.path,
            quoted(request.content_type),
            extra={"remote": request.remote},
        )
        return json_error(web.HTTPUnsupportedMediaType, "Content-Type must be application/json")
    return None
