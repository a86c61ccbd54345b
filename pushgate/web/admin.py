"""The admin page at ``/admin``: live numbers of the cluster, lookups, disconnect, publish.

Behind ``admin.password`` (a signed, expiring cookie after login). The page is itself a
pushgate client: it connects with pushgate.js as the user ``pushgate-admin``, with a
server-side subscription to the private channel ``__admin#pushgate-admin`` (user-limited:
nobody else may join it), where every node publishes its own numbers each
``admin.stats_interval``. So the page shows every node, whichever one serves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from pathlib import Path

import orjson
from aiohttp import web

from pushgate.auth import mint_connection_token
from pushgate.engine.base import UnrecoverablePosition
from pushgate.hub.client import has_history
from pushgate.hub.errors import HubError
from pushgate.hub.hub import Hub
from pushgate.transport.app_keys import HUB

log = logging.getLogger("pushgate.admin")

ADMIN_USER = "pushgate-admin"
ADMIN_CHANNEL = f"__admin#{ADMIN_USER}"
COOKIE = "pushgate_admin"
PAGE = Path(__file__).with_name("admin.html")


def _key(password: str) -> bytes:
    return hashlib.sha256(b"pushgate-admin-session:" + password.encode()).digest()


def session_cookie(password: str, ttl: float) -> str:
    expires = str(int(time.time() + ttl))
    signature = hmac.new(_key(password), expires.encode(), hashlib.sha256).hexdigest()
    return f"{expires}.{signature}"


def valid_cookie(password: str, cookie: str | None) -> bool:
    if not password or not cookie or "." not in cookie:
        return False
    expires, _, signature = cookie.partition(".")
    expected = hmac.new(_key(password), expires.encode(), hashlib.sha256).hexdigest()
    return (
        hmac.compare_digest(signature, expected)
        and expires.isdigit()
        and int(expires) > time.time()
    )


def _hub(request: web.Request) -> Hub:
    return request.config_dict[HUB]


def _logged_in(request: web.Request) -> bool:
    return valid_cookie(_hub(request).config.admin.password, request.cookies.get(COOKIE))


def _require_login(request: web.Request) -> None:
    if not _hub(request).config.admin.password:
        raise web.HTTPNotFound(text="the admin page is off: set admin.password")
    if not _logged_in(request):
        raise web.HTTPUnauthorized(
            text='{"error": "log in first"}', content_type="application/json"
        )


LOGIN_FORM = """<!doctype html><html><head><meta charset=utf-8>
<meta name=viewport content="width=device-width,initial-scale=1"><title>pushgate admin</title>
<link rel=icon href="data:,">
<style>body{font:15px system-ui,sans-serif;background:#f3f4f8;display:grid;place-items:center;
height:100vh;margin:0}form{background:#fff;padding:28px 32px;border-radius:12px;
box-shadow:0 2px 12px #0001;display:grid;gap:12px;min-width:260px}h1{font-size:18px;margin:0}
input,button{font:inherit;padding:8px 10px;border-radius:8px;border:1px solid #ccd}
button{background:#3b5bdb;color:#fff;border:0;cursor:pointer}.err{color:#c92a2a}</style>
</head><body><form method=post action="/admin/login"><h1>pushgate admin</h1>
<input type=password name=password placeholder=Password
 autocomplete=current-password autofocus required>
{error}<button>Log in</button></form></body></html>"""


async def page(request: web.Request) -> web.Response:
    hub = _hub(request)
    if not hub.config.admin.password:
        raise web.HTTPNotFound(text="the admin page is off: set admin.password")
    if not _logged_in(request):
        return web.Response(text=LOGIN_FORM.replace("{error}", ""), content_type="text/html")
    return web.Response(body=PAGE.read_bytes(), content_type="text/html")


async def login(request: web.Request) -> web.Response:
    hub = _hub(request)
    password = hub.config.admin.password
    form = await request.post()
    given = str(form.get("password", ""))
    if not password or not hmac.compare_digest(given.encode(), password.encode()):
        log.warning("admin login refused", extra={"remote": request.remote})
        error = "<div class=err>Wrong password.</div>"
        return web.Response(
            text=LOGIN_FORM.replace("{error}", error), content_type="text/html", status=401
        )
    response = web.HTTPSeeOther("/admin")
    response.set_cookie(
        COOKIE,
        session_cookie(password, hub.config.admin.session_ttl),
        max_age=int(hub.config.admin.session_ttl),
        httponly=True,
        samesite="Strict",
        path="/admin",
    )
    raise response


async def logout(request: web.Request) -> web.Response:
    response = web.HTTPSeeOther("/admin")
    response.del_cookie(COOKIE, path="/admin")
    raise response


async def connect_info(request: web.Request) -> web.Response:
    _require_login(request)
    hub = _hub(request)
    secret = hub.config.token.hmac_secret
    if not secret:
        return web.json_response({"token": None, "channel": ADMIN_CHANNEL})
    token = mint_connection_token(secret, ADMIN_USER, ttl=3600, channels=[ADMIN_CHANNEL])
    return web.json_response({"token": token, "channel": ADMIN_CHANNEL})


async def overview(request: web.Request) -> web.Response:
    _require_login(request)
    hub = _hub(request)
    nodes = await hub.info()
    return web.json_response({"nodes": nodes, "channels": len(await hub.cluster_channel_counts())})


async def channel(request: web.Request) -> web.Response:
    _require_login(request)
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
    _require_login(request)
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
    _require_login(request)
    body = await request.json()
    name = body.get("user") if isinstance(body, dict) else None
    if not isinstance(name, str) or not name:
        return web.json_response({"error": "user required"}, status=400)
    await _hub(request).disconnect_user(name)
    log.info("admin disconnected a user", extra={"user": name})
    return web.json_response({})


async def publish(request: web.Request) -> web.Response:
    _require_login(request)
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
                await hub.publish(ADMIN_CHANNEL, orjson.dumps(stats))
            except Exception as exc:
                log.warning("admin stats not published: %s", exc)


def add_routes(app: web.Application) -> None:
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
