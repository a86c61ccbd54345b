"""``POST /api/<method>``: the server API over HTTP, with API key authentication.

Answers ``{"result": …}`` or ``{"error": {"code", "message"}}`` with status 200 as
Centrifugo does (what ``cent`` expects); 401 for a missing or wrong key, 400 for a
body that is not a JSON object, 404 for an unknown method — never a 500.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable

import orjson
from aiohttp import web

from pushgate import metrics
from pushgate.api.methods import METHODS, published, start_publish
from pushgate.engine.base import StreamPosition
from pushgate.hub.errors import ErrorBadRequest, ErrorInternal, ErrorMethodNotFound, HubError
from pushgate.hub.hub import Hub
from pushgate.transport.app_keys import HUB

log = logging.getLogger("pushgate.api")


def _json(body: dict, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _error(error: HubError, status: int = 200) -> web.Response:
    return _json({"error": {"code": error.code, "message": error.message}}, status)


def _authorized(request: web.Request, key: str) -> bool:
    """The key in ``X-API-Key``, ``Authorization: apikey <key>`` or, as Centrifugo
    accepts it, the ``api_key`` query parameter (never logged: no access log is kept and
    refusals name only the method and the peer)."""
    given = request.headers.get("X-API-Key")
    if given is None:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "apikey":
            given = value.strip()
    if given is None:
        given = request.query.get("api_key")
    return given is not None and hmac.compare_digest(given.encode(), key.encode())


async def call(hub: Hub, method: str, params: dict) -> dict:
    """Run one method; HubError for anything the caller did wrong."""
    if method == "batch":
        return await batch(hub, params)
    handler = METHODS.get(method)
    if handler is None:
        raise ErrorMethodNotFound(f"method not found: {method}")
    if not isinstance(params, dict):
        raise ErrorBadRequest("bad request: parameters must be a JSON object")
    return await handler(hub, params)


async def _reply(hub: Hub, method: str, params: object) -> dict:
    try:
        return {method: await call(hub, method, params)}  # type: ignore[arg-type]  # call() and batch() check params
    except HubError as error:
        return {"error": {"code": error.code, "message": error.message}}
    except Exception:
        log.exception("API %s failed inside a batch", method)
        return {"error": {"code": ErrorInternal.CODE, "message": ErrorInternal.MESSAGE}}


async def batch(hub: Hub, params: dict) -> dict:
    commands = params.get("commands")
    if not isinstance(commands, list) or not all(
        isinstance(c, dict) and len(c) == 1 for c in commands
    ):
        raise ErrorBadRequest("bad request: commands must be a list of {method: params} objects")
    calls = [next(iter(c.items())) for c in commands]
    if any(method == "batch" for method, _ in calls):
        raise ErrorBadRequest("bad request: batch inside batch")
    if params.get("parallel"):
        return {"replies": await _parallel(hub, calls)}
    return {"replies": [await _reply(hub, m, p) for m, p in calls]}


async def _parallel(hub: Hub, calls: list[tuple[str, object]]) -> list[dict | None]:
    """Every command started at once. A publish is started right here and its reply
    taken from the position the engine returns, or awaited as the engine's future (no
    task or coroutine per publication: a batch of thousands is the publisher's hot
    path); other methods run as their own tasks."""
    replies: list[dict | None] = [None] * len(calls)
    started: list[tuple[int, bool, Awaitable]] = []
    for index, (method, params) in enumerate(calls):
        if method == "publish" and isinstance(params, dict):
            try:
                position = start_publish(hub, params)
                if isinstance(position, StreamPosition):
                    replies[index] = {"publish": published(position)}
                else:
                    started.append((index, True, position))
            except HubError as error:
                replies[index] = _error_reply(error)
            except Exception:
                log.exception("API publish failed inside a batch")
                replies[index] = _error_reply(ErrorInternal())
        else:
            started.append((index, False, _reply(hub, method, params)))
    results = await asyncio.gather(*(a for _, _, a in started), return_exceptions=True)
    for (index, is_publish, _), result in zip(started, results, strict=True):
        if not is_publish:
            replies[index] = result  # type: ignore[assignment]  # _reply answers every Exception
        elif isinstance(result, HubError):
            replies[index] = _error_reply(result)
        elif isinstance(result, BaseException):
            if not isinstance(result, Exception):
                raise result
            log.error("API publish failed inside a batch", exc_info=result)
            replies[index] = _error_reply(ErrorInternal())
        else:
            replies[index] = {"publish": published(result)}
    return replies  # every index answered above


def _error_reply(error: HubError) -> dict:
    return {"error": {"code": error.code, "message": error.message}}


async def api_handler(request: web.Request) -> web.Response:
    started = time.perf_counter()
    response = await _api(request)
    method = request.match_info["method"]
    known = method == "batch" or method in METHODS
    label = method if known else "unknown"
    body = response.body  # _api's responses are JSON bytes
    ok = response.status == 200 and isinstance(body, bytes) and b'"error"' not in body[:10]
    result = "ok" if ok else "error"
    metrics.API_REQUESTS.labels(label, result).inc()
    metrics.API_DURATION.labels(label).observe(time.perf_counter() - started)
    return response


def _too_large(method: str) -> web.Response:
    log.info("API %s refused: body larger than api.max_body_bytes", method)
    metrics.LIMIT_HITS.labels("api_body").inc()
    return _error(ErrorBadRequest("bad request: body too large"), 413)


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The body, or ValueError past ``limit`` bytes (a chunked body has no length)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            raise ValueError("body too large")
        chunks.append(chunk)
    return b"".join(chunks)


async def _api(request: web.Request) -> web.Response:
    hub: Hub = request.app[HUB]
    api = hub.config.api
    method = request.match_info["method"]
    if not api.insecure and (not api.key or not _authorized(request, api.key)):
        log.info("API %s refused: bad or missing API key from %s", method, request.remote)
        return _json({"error": {"code": 101, "message": "unauthorized"}}, 401)
    if method != "batch" and method not in METHODS:
        return _error(ErrorMethodNotFound(f"method not found: {method}"), 404)
    if hub.draining:
        # clients are being told to reconnect elsewhere: a publication accepted now
        # could reach nobody, so the caller is told to retry on another node
        return _error(ErrorInternal("shutting down: retry on another node"), 503)
    if request.content_length and request.content_length > api.max_body_bytes:
        return _too_large(method)
    try:
        raw = await _read_body(request, api.max_body_bytes)
    except ValueError:
        return _too_large(method)
    try:
        params = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError as exc:
        log.info("API %s: body is not JSON: %s", method, exc)
        return _error(ErrorBadRequest("bad request: body is not valid JSON"), 400)
    if not isinstance(params, dict):
        return _error(ErrorBadRequest("bad request: body must be a JSON object"), 400)
    try:
        result = await call(hub, method, params)
    except HubError as error:
        log.info("API %s: %s", method, error.message)
        return _error(error)
    except Exception:
        log.exception("API %s failed", method)
        return _error(ErrorInternal())
    if method == "batch":
        return _json(result)  # Centrifugo answers a batch with top-level "replies"
    return _json({"result": result})
