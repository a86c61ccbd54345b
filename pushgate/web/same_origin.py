"""The checks every admin POST passes: the page's own Origin and a JSON body.

A browser sends ``Origin`` with every POST, same-origin ones included; a request whose
Origin is missing or names another host than the request's ``Host`` did not come from
the admin page (403). A JSON ``Content-Type`` is not one a plain HTML form can send, so
a cross-site form cannot reach these endpoints either (415).
"""

from __future__ import annotations

import logging

import orjson
from aiohttp import web

from pushgate.transport.origin import same_origin

log = logging.getLogger("pushgate.admin")


def quoted(text: str | None, limit: int = 200) -> str:
    """A client-supplied string for a log line: escaped (repr) and cut short."""
    return repr(text if text is None else text[:limit])


def json_error(status: type[web.HTTPException], message: str) -> web.HTTPException:
    """An HTTP error (to raise) whose body is ``{"error": message}``."""
    return status(text=orjson.dumps({"error": message}).decode(), content_type="application/json")


def refuse_unless_page_post(request: web.Request) -> web.HTTPException | None:
    """403 for another origin, 415 for a body that is not JSON (to raise); None when
    the request passes."""
    origin = request.headers.get("Origin")
    if not origin or not same_origin(request, origin):
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
