"""pushgate asks the board's backend: who connects, who may follow a board, and card moves.

pushgate's proxies (docs/proxy.md) POST Centrifugo's proxy JSON here, and the answer is
what the page gets:

- ``/demo/proxy/connect``: the user of the ``demo_user`` cookie (pushgate forwards the
  page's Cookie header), with ``info`` (name, colour) for presence; no cookie: disconnect
  4501 "pick a user first". The page needs no token at all.
- ``/demo/proxy/subscribe``: ``board:<id>`` for the board's members only (error 403).
- ``/demo/proxy/rpc``: ``move_card`` ``{id, column, before}`` — the page's drag and drop.
  The backend orders and saves the move, publishes the card's new state to the board (the
  same ``publish_change`` as every other write) and answers with the card; errors carry
  HTTP-like codes (400 invalid, 403 not a member, 404 gone, 500 our fault).

Only pushgate may call these: each request must carry ``X-Proxy-Key`` (the proxies'
``static_headers``), else 403 — a browser that found these URLs cannot claim to be anyone.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from aiohttp import web

from demo.app import SETTINGS, USERS, current_user, db, publish_change
from demo.store import Invalid, NotFound

log = logging.getLogger("demo.proxy")

KEY_HEADER = "X-Proxy-Key"


def answer(body: dict[str, Any]) -> web.Response:
    return web.json_response(body)


def error(code: int, message: str) -> web.Response:
    return answer({"error": {"code": code, "message": message}})


async def proxy_request(request: web.Request) -> dict[str, Any]:
    """The request's JSON, once its key is checked (403 without the right one)."""
    key = request.app[SETTINGS].proxy_key
    if not key or not hmac.compare_digest(request.headers.get(KEY_HEADER, ""), key):
        raise web.HTTPForbidden(text="pushgate's proxy key expected")
    return await request.json()


async def connect(request: web.Request) -> web.Response:
    await proxy_request(request)
    user_id = current_user(request)
    if user_id is None:
        return answer({"disconnect": {"code": 4501, "reason": "pick a user first"}})
    user = request.app[USERS][user_id]
    info = {"name": user["name"], "color": user["color"]}  # shown to others in presence
    return answer({"result": {"user": user_id, "info": info}})


async def subscribe(request: web.Request) -> web.Response:
    body = await proxy_request(request)
    namespace, _, name = str(body.get("channel", "")).partition(":")
    if namespace != "board" or not name.isdigit():
        return error(403, "not a channel of this backend")
    if not await db(request, "is_member", int(name), body.get("user", "")):
        return error(403, "not a member of this board")
    return answer({"result": {}})


async def rpc(request: web.Request) -> web.Response:
    body = await proxy_request(request)
    method, user = body.get("method"), body.get("user", "")
    data = body.get("data")
    if method != "move_card":
        return error(404, f"no method {method!r}")
    if not user or not isinstance(data, dict) or not isinstance(data.get("id"), int):
        return error(400, "move_card needs {id, column, before}")
    try:
        card = await db(request, "card", data["id"])
        if not await db(request, "is_member", card["board_id"], user):
            return error(403, "not a member of this board")
        changes = {"column": data.get("column") or card["column"], "before": data.get("before")}
        change = await db(request, "update_card", data["id"], user, changes)
    except NotFound as exc:
        return error(404, str(exc))
    except Invalid as exc:
        return error(400, str(exc))
    except Exception:
        log.exception("move_card %r by %s failed", data, user)
        return error(500, "the move could not be saved")
    published = await publish_change(request, change, user)
    return answer({"result": {"data": {"card": change.card, "published": published}}})


def add_routes(app: web.Application) -> None:
    """On the demo app (mounted at /demo/)."""
    app.router.add_post("/proxy/connect", connect)
    app.router.add_post("/proxy/subscribe", subscribe)
    app.router.add_post("/proxy/rpc", rpc)
