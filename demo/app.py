"""The team board's backend: an aiohttp app the launcher mounts at ``/demo/``.

It is the product side of the integration. It owns the state (SQLite, ``store.py``),
decides who may see and change what — pushgate asks it who connects, who may follow a board
and how a card moves (its proxies, ``proxy.py``: the pages need no token) — and after every
committed write publishes the result through pushgate's HTTP server API:

- ``board:<id>``: ``{type: "card", card, actor}``, the card's whole new state with its
  ``version``;
- ``notifications:#<user>``: ``{type: "notification", notification}``, with a hand-off TTL:
  if no tab of the user shows it in time, pushgate hands it back (demo/hooks.py).

Online dots and read positions are pushgate's own: the pages subscribe to the members'
status channels (``status:<user>``) and mark notifications read with ``pushgate.mark_read``.

Pages: ``/demo/`` picks a user (cookie ``demo_user``, or ``?as=<user>`` on any page) and a
board; ``/demo/board/<id>`` is the board. The cookie's path is ``/``, so it also goes with
the page's connection to pushgate, whose connect proxy hands it to ``proxy.py``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from demo.hooks import hook
from demo.push import PushgateError, ServerApi
from demo.store import COLUMN_TITLES, COLUMNS, Change, Invalid, NotFound, Store

log = logging.getLogger("demo")

STATIC = Path(__file__).with_name("static")
COOKIE = "demo_user"
PREFIX = "/demo"
#: the cookie's path: the pages' and pushgate's (/connection/…), whose connect proxy
#: hands it back to this backend
COOKIE_PATH = "/"


@dataclass
class Settings:
    db_path: str
    pushgate_url: str
    """Where the backend reaches pushgate's server API (``http://127.0.0.1:8000``)."""
    api_key: str
    proxy_key: str = ""
    """What pushgate's proxy calls carry in ``X-Proxy-Key`` (their ``static_headers``)."""
    browser_pushgate_url: str = ""
    """What pages pass to ``new Pushgate()``: ``''`` is the page's own origin."""
    away_after: float = 60.0
    """Seconds without input before a visible page counts as idle (amber)."""
    status_namespace: str = "status"
    """pushgate's ``presence.status_namespace``: teammates' dots come from there."""
    handoff_ttl: float = 30.0
    """Seconds a notification waits for a tab to show it before pushgate hands it back."""
    webhook_secret: str = ""
    """pushgate's ``events.webhook_secret``: what signs the events it sends us."""


STORE = web.AppKey("store", Store)
API = web.AppKey("api", ServerApi)
SETTINGS = web.AppKey("settings", Settings)
USERS = web.AppKey("users", dict)


# --- plumbing -------------------------------------------------------------------------------
async def db(request: web.Request, method: str, *args: Any, **kwargs: Any) -> Any:
    """Run a Store method off the event loop."""
    return await asyncio.to_thread(getattr(request.app[STORE], method), *args, **kwargs)


def current_user(request: web.Request) -> str | None:
    user = request.query.get("as") or request.cookies.get(COOKIE)
    return user if user in request.app[USERS] else None


def need_user(request: web.Request) -> str:
    user = current_user(request)
    if user is None:
        raise web.HTTPUnauthorized(
            text='{"error": "pick a user first"}', content_type="application/json"
        )
    return user


async def need_member(request: web.Request, board_id: int) -> str:
    user = need_user(request)
    if not await db(request, "is_member", board_id, user):
        raise web.HTTPForbidden(text='{"error": "not a member"}', content_type="application/json")
    return user


async def body(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(
            text='{"error": "body: JSON expected"}', content_type="application/json"
        ) from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(
            text='{"error": "body: object expected"}', content_type="application/json"
        )
    return data


def int_param(request: web.Request, name: str) -> int:
    try:
        return int(request.match_info[name])
    except ValueError:
        raise web.HTTPNotFound() from None


@web.middleware
async def errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except NotFound as exc:
        return web.json_response({"error": str(exc)}, status=404)
    except Invalid as exc:
        return web.json_response({"error": str(exc)}, status=400)


def page(name: str):
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.FileResponse(STATIC / name, headers={"Cache-Control": "no-cache"})
        user = request.query.get("as")
        if user in request.app[USERS]:
            response.set_cookie(COOKIE, user, path=COOKIE_PATH, samesite="Lax", max_age=30 * 86400)
        return response

    return handler


# --- publishing ---------------------------------------------------------------------------
async def publish_change(request: web.Request, change: Change, actor: str) -> bool:
    """The committed write, to everyone who should see it. Returns False if pushgate
    could not be reached (the state is saved; clients catch up on their next load)."""
    api = request.app[API]
    card = change.card
    jobs = [
        api.publish(
            f"board:{card['board_id']}",
            {"type": "card", "card": card, "actor": actor},
            idempotency_key=f"card-{card['id']}-v{card['version']}",
        )
    ]
    for notice in change.notices:
        jobs.append(notify(request, notice))
    results = await asyncio.gather(*jobs, return_exceptions=True)
    failed = [r for r in results if isinstance(r, Exception)]
    for exc in failed:
        log.warning("publish failed: %s", exc)
    return not failed


async def notify(request: web.Request, notice: dict[str, Any]) -> None:
    """A notification to the user's tabs, handed back to us if none shows it in time;
    where pushgate put it is kept, for read positions."""
    notification = notice["notification"]
    published = await request.app[API].publish(
        f"notifications:#{notice['user']}",
        {"type": "notification", "notification": notification},
        idempotency_key=f"notification-{notification['id']}",
        handoff=request.app[SETTINGS].handoff_ttl,
    )
    await db(request, "set_position", notification["id"], published["offset"], published["epoch"])


# --- handlers: session -----------------------------------------------------------
async def login(request: web.Request) -> web.Response:
    data = await body(request)
    user = data.get("user")
    if not isinstance(user, str) or user not in request.app[USERS]:
        return web.json_response({"error": "unknown user"}, status=400)
    response = web.json_response({"user": user})
    response.set_cookie(COOKIE, user, path=COOKIE_PATH, samesite="Lax", max_age=30 * 86400)
    return response


async def logout(request: web.Request) -> web.Response:
    response = web.json_response({})
    response.del_cookie(COOKIE, path=COOKIE_PATH)
    return response


async def me(request: web.Request) -> web.Response:
    user = current_user(request)
    settings = request.app[SETTINGS]
    return web.json_response(
        {
            "user": user,
            "users": list(request.app[USERS].values()),
            "boards": await db(request, "boards_for", user) if user else [],
            "config": {
                "pushgate_url": settings.browser_pushgate_url,
                "away_after": settings.away_after,
                "status_namespace": settings.status_namespace,
                "columns": [{"id": c, "title": COLUMN_TITLES[c]} for c in COLUMNS],
            },
        }
    )


# --- handlers: board and cards ----------------------------------------------------------------
async def get_board(request: web.Request) -> web.Response:
    board_id = int_param(request, "board_id")
    await need_member(request, board_id)
    board = await db(request, "board", board_id)
    cards = await db(request, "cards", board_id)
    users = request.app[USERS]
    try:
        statuses = await request.app[API].user_status(board["members"])
    except PushgateError as exc:
        log.warning("user_status: %s", exc)
        statuses = {}
    members = []
    for member in board["members"]:
        status = statuses.get(member, {})
        members.append(
            {
                **users[member],
                "online": bool(status.get("online")),
                "status": status.get("status", "offline"),
                "last_seen": status.get("last_seen", 0),
            }
        )
    return web.json_response({"board": board, "members": members, "cards": cards})


async def create_card(request: web.Request) -> web.Response:
    board_id = int_param(request, "board_id")
    user = await need_member(request, board_id)
    data = await body(request)
    change = await db(
        request,
        "create_card",
        board_id,
        user,
        data.get("title"),
        data.get("description") or "",
        data.get("column") or "todo",
        data.get("assignee") or None,
    )
    published = await publish_change(request, change, user)
    return web.json_response({"card": change.card, "published": published}, status=201)


EDITABLE = ("title", "description", "assignee", "column", "before")


async def update_card(request: web.Request) -> web.Response:
    card_id = int_param(request, "card_id")
    card = await db(request, "card", card_id)
    user = await need_member(request, card["board_id"])
    data = await body(request)
    changes = {k: data[k] for k in EDITABLE if k in data}
    if "before" in changes and "column" not in changes:
        changes["column"] = card["column"]
    change = await db(request, "update_card", card_id, user, changes)
    published = await publish_change(request, change, user)
    return web.json_response({"card": change.card, "published": published})


async def delete_card(request: web.Request) -> web.Response:
    card_id = int_param(request, "card_id")
    card = await db(request, "card", card_id)
    user = await need_member(request, card["board_id"])
    change = await db(request, "update_card", card_id, user, {"deleted": True})
    published = await publish_change(request, change, user)
    return web.json_response({"card": change.card, "published": published})


# --- handlers: notifications and presence ---------------------------------------------------------
async def notifications(request: web.Request) -> web.Response:
    """The stored list, each marked read or not by pushgate's read position."""
    user = need_user(request)
    try:
        read = await request.app[API].read_position(user, f"notifications:#{user}")
    except PushgateError as exc:
        log.warning("read_state: %s", exc)
        read = None
    return web.json_response(await db(request, "notifications", user, read))


async def handoffs(request: web.Request) -> web.Response:
    """What pushgate handed back for the signed-in user (what we would have e-mailed)."""
    return web.json_response(await db(request, "handoffs", need_user(request)))


# --- the app --------------------------------------------------------------------------------------
def create_demo_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[errors])
    app[SETTINGS] = settings

    async def resources(app: web.Application):
        app[STORE] = await asyncio.to_thread(Store, settings.db_path)
        app[USERS] = {u["id"]: u for u in await asyncio.to_thread(app[STORE].users)}
        app[API] = ServerApi(settings.pushgate_url, settings.api_key)
        await app[API].start()
        yield
        await app[API].close()
        app[STORE].close()

    app.cleanup_ctx.append(resources)
    r = app.router
    r.add_get("/", page("index.html"))
    r.add_get("/board/{board_id:\\d+}", page("board.html"))
    r.add_static("/static/", STATIC, show_index=False)
    r.add_post("/api/login", login)
    r.add_post("/api/logout", logout)
    r.add_get("/api/me", me)
    r.add_get("/api/boards/{board_id:\\d+}", get_board)
    r.add_post("/api/boards/{board_id:\\d+}/cards", create_card)
    r.add_patch("/api/cards/{card_id:\\d+}", update_card)
    r.add_delete("/api/cards/{card_id:\\d+}", delete_card)
    r.add_get("/api/notifications", notifications)
    r.add_get("/api/handoffs", handoffs)
    r.add_post("/hooks/pushgate", hook(settings.webhook_secret, STORE))
    return app
