"""The admin page at ``/admin``: live numbers of the cluster, lookups, disconnect, publish.

Behind ``admin.password``: a JSON login (throttled, login_throttle.py) opens a
server-side session (admin_sessions.py) whose id is an HttpOnly, SameSite=Strict
cookie, ``Secure`` over TLS; ``POST /admin/logout`` ends it. Every POST must come from
the page itself (same_origin.py). The page is itself a pushgate client: it connects with
pushgate.js as ``pushgate-admin`` with an internal token (hub/internal.py) that the
server mints with a key of its own and that alone grants a server-side subscription
to the reserved channel ``__pushgate:admin``, where every node publishes its own numbers
each ``admin.stats_interval``. So the page shows every node, whichever one serves it,
and no client token, whatever its user, can read or write that channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiohttp import web

from pushgate.engine.base import UnrecoverablePosition
from pushgate.hub import internal
from pushgate.hub.client import count_limit, has_history
from pushgate.hub.errors import HubError
from pushgate.hub.hub import Hub
from pushgate.transport.app_keys import HUB
from pushgate.web.admin_sessions import AdminSessions
from pushgate.web.login_throttle import LoginThrottle
from pushgate.web.same_origin import json_error, refuse_unless_page_post

log = logging.getLogger("pushgate.admin")

ADMIN_USER = "pushgate-admin"
ADMIN_CHANNEL = "__pushgate:admin"
COOKIE = "pushgate_admin"
PAGE = Path(__file__).with_name("admin.html")
LOGIN_PAGE = Path(__file__).with_name("admin_login.html")
#: the page's connection token lasts this long; pushgate.js asks for a new one before
TOKEN_TTL = 300.0


@dataclass(slots=True)
class Admin:
    """The admin page's state of one application."""

    sessions: AdminSessions
    throttle: LoginThrottle


ADMIN = web.AppKey("admin", Admin)


def _hub(request: web.Request) -> Hub:
    return request.config_dict[HUB]


def _admin(request: web.Request) -> Admin:
    return request.config_dict[ADMIN]


def _page_on(request: web.Request) -> None:
    if not _hub(request).config.admin.password:
        raise web.HTTPNotFound(text="the admin page is off: set admin.password")


async def _logged_in(request: web.Request) -> bool:
    try:
        return await _admin(request).sessions.valid(request.cookies.get(COOKIE))
    except Exception as exc:
        log.warning("admin session not checked: the engine failed: %s", exc)
        raise json_error(web.HTTPServiceUnavailable, "the engine is unreachable") from None


async def _require_login(request: web.Request) -> None:
    _page_on(request)
    if not await _logged_in(request):
        raise json_error(web.HTTPUnauthorized, "log in first")


def _refuse_cross_origin(request: web.Request) -> None:
    refused = refuse_unless_page_post(request)
    if refused is not None:
        raise refused


def served_over_tls(request: web.Request) -> bool:
    """TLS here (``server.tls_cert``), or at a proxy in front that says so. Trusting
    ``X-Forwarded-Proto`` only ever adds ``Secure`` to a cookie: nothing to spoof."""
    if _hub(request).config.server.tls_cert or request.secure:
        return True
    forwarded = request.headers.get("X-Forwarded-Proto", "")
    return forwarded.split(",")[0].strip().lower() == "https"


async def page(request: web.Request) -> web.Response:
    _page_on(request)
    shown = PAGE if await _logged_in(request) else LOGIN_PAGE
    return web.Response(body=shown.read_bytes(), content_type="text/html")


async def _password_given(request: web.Request) -> str:
    try:
        body = await request.json()
    except ValueError:
        raise json_error(web.HTTPBadRequest, "the body must be JSON") from None
    given = body.get("password") if isinstance(body, dict) else None
    if not isinstance(given, str):
        raise json_error(web.HTTPBadRequest, "password required")
    return given


async def login(request: web.Request) -> web.Response:
    _page_on(request)
    _refuse_cross_origin(request)
    hub, admin = _hub(request), _admin(request)
    try:
        wait = await admin.throttle.admit(request.remote)
    except Exception as exc:
        log.warning("admin login not checked: the engine failed: %s", exc)
        raise json_error(web.HTTPServiceUnavailable, "the engine is unreachable") from None
    if wait:
        count_limit("admin_login")
        log.warning(
            "admin login refused: too many failed logins (retry in %d s)",
            wait,
            extra={"remote": request.remote},
        )
        return web.json_response(
            {"error": f"too many failed logins: try again in {wait} s"},
            status=429,
            headers={"Retry-After": str(wait)},
        )
    given = await _password_given(request)
    password = hub.config.admin.password
    if not hmac.compare_digest(given.encode(), password.encode()):
        log.warning("admin login refused: wrong password", extra={"remote": request.remote})
        return web.json_response({"error": "wrong password"}, status=401)
    await admin.throttle.succeeded(request.remote)
    session_id = await admin.sessions.create()
    log.info("admin logged in", extra={"remote": request.remote})
    response = web.json_response({})
    response.set_cookie(
        COOKIE,
        session_id,
        max_age=int(hub.config.admin.session_ttl),
        httponly=True,
        samesite="Strict",
        secure=served_over_tls(request),
        path="/admin",
    )
    return response


async def logout(request: web.Request) -> web.Response:
    _page_on(request)
    _refuse_cross_origin(request)
    await _admin(request).sessions.revoke(request.cookies.get(COOKIE))
    response = web.json_response({})
    response.del_cookie(COOKIE, path="/admin")
    return response


async def connect_info(request: web.Request) -> web.Response:
    await _require_login(request)
    engine = _hub(request).engine
    token = await internal.mint(engine, ADMIN_USER, [ADMIN_CHANNEL], TOKEN_TTL)
    return web.json_response({"token": token, "channel": ADMIN_CHANNEL})


async def overview(request: web.Request) -> web.Response:
    await _require_login(request)
    hub = _hub(request)
    nodes = await hub.info()
    return web.json_response(
        {
            "nodes": nodes,
            # distinct over the cluster: a user or channel on two nodes counts once
            "channels": len(await hub.cluster_channel_counts()),
            "users": await hub.cluster_user_count(),
        }
    )


async def channel(request: web.Request) -> web.Response:
    await _require_login(request)
    hub = _hub(request)
    name = request.query.get("name", "")
    try:
        options = hub.rules.options(name)
    except HubError as error:
        return web.json_response({"error": error.message}, status=400)
    counts = await hub.cluster_channel_counts()
    out: dict = {"channel": name, "subscribers": counts.get(name, 0)}
    if options.presence:
        presence = await hub.engine.presence(name)
        out["presence"] = [{"client": c.client, "user": c.user} for c in presence.values()]
    if has_history(options):
        with contextlib.suppress(UnrecoverablePosition):
            history = await hub.engine.history(name, limit=10, reverse=True)
            out["offset"] = history.position.offset
            out["epoch"] = history.position.epoch
            out["publications"] = [
                {"offset": p.offset, "data": orjson.loads(p.data)} for p in history.publications
            ]
    return web.json_response(out)


async def user(request: web.Request) -> web.Response:
    await _require_login(request)
    hub = _hub(request)
    name = request.query.get("name", "")
    if not name:
        return web.json_response({"error": "name required"}, status=400)
    online, last_seen = (await hub.user_status([name]))[name]
    connections = await hub.cluster_user_connections(name)
    return web.json_response(
        {"user": name, "online": online, "last_seen": last_seen, "connections": connections}
    )


async def disconnect(request: web.Request) -> web.Response:
    _refuse_cross_origin(request)
    await _require_login(request)
    body = await request.json()
    name = body.get("user") if isinstance(body, dict) else None
    if not isinstance(name, str) or not name:
        return web.json_response({"error": "user required"}, status=400)
    await _hub(request).disconnect_user(name)
    log.info("admin disconnected a user", extra={"user": name})
    return web.json_response({})


async def publish(request: web.Request) -> web.Response:
    _refuse_cross_origin(request)
    await _require_login(request)
    body = await request.json()
    if not isinstance(body, dict) or not isinstance(body.get("channel"), str):
        return web.json_response({"error": "channel and data required"}, status=400)
    try:
        data = orjson.dumps(orjson.loads(body.get("data", "")))
    except orjson.JSONDecodeError:
        return web.json_response({"error": "data must be JSON"}, status=400)
    try:
        position = await _hub(request).publish(body["channel"], data)
    except HubError as error:
        return web.json_response({"error": error.message}, status=400)
    return web.json_response({"offset": position.offset, "epoch": position.epoch})


class StatsPublisher:
    """Publishes this node's live numbers to the admin channel at a fixed interval."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self.hub.config.admin.password:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        hub = self.hub
        interval = hub.config.admin.stats_interval
        last = (time.monotonic(), hub.published, hub.delivered)
        while True:
            await asyncio.sleep(interval)
            now = (time.monotonic(), hub.published, hub.delivered)
            elapsed = max(now[0] - last[0], 1e-6)
            stats = {
                **hub.local_info(),
                "publications_per_second": round((now[1] - last[1]) / elapsed, 1),
                "deliveries_per_second": round((now[2] - last[2]) / elapsed, 1),
                "at": time.time(),
            }
            last = now
            if ADMIN_CHANNEL not in hub.channels and not hub.engine.multi_node:
                continue  # nobody is watching on this one-node cluster
            try:
                await hub.publish(ADMIN_CHANNEL, orjson.dumps(stats), internal=True)
            except Exception as exc:
                log.warning("admin stats not published: %s", exc)


def add_routes(app: web.Application) -> None:
    hub = app[HUB]
    config = hub.config.admin
    app[ADMIN] = Admin(
        AdminSessions(hub.engine, config.password, config.session_ttl),
        LoginThrottle(hub.engine, config),
    )
    routes = app.router
    routes.add_get("/admin", page)
    routes.add_post("/admin/login", login)
    routes.add_post("/admin/logout", logout)
    routes.add_get("/admin/api/connect", connect_info)
    routes.add_get("/admin/api/overview", overview)
    routes.add_get("/admin/api/channel", channel)
    routes.add_get("/admin/api/user", user)
    routes.add_post("/admin/api/disconnect", disconnect)
    routes.add_post("/admin/api/publish", publish)
