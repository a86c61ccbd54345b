"""RPC methods pushgate answers itself, whatever proxies are configured.

Method names beginning with ``pushgate.`` are reserved: pushgate handles them and never
passes them to an RPC proxy (an unknown one is error 104). ``update_user_status`` (the
name Centrifugo PRO gives its client RPC) is answered too, as ``pushgate.presence``
with ``active``. Each takes a JSON object and replies with an empty result.

- ``pushgate.presence {"state": "active" | "idle" | "hidden"}``: the connection's attention;
- ``pushgate.ack {"channel", "offset", "epoch"?}``: a notification was shown (no hand-off);
- ``pushgate.mark_read {"channel", "offset", "epoch"}``: read up to there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import orjson

from pushgate.engine.tracking import ACTIVE
from pushgate.hub import notifications, status
from pushgate.hub.errors import ErrorBadRequest, ErrorMethodNotFound
from pushgate.json_types import JsonObject

if TYPE_CHECKING:
    from pushgate.hub.client import Client

PREFIX = "pushgate."
#: Centrifugo PRO's client RPC for "the user is active"
CENTRIFUGO_USER_STATUS = "update_user_status"


def owns(method: str) -> bool:
    """True for the RPC methods pushgate keeps for itself."""
    return method.startswith(PREFIX) or method == CENTRIFUGO_USER_STATUS


async def _presence(client: Client, params: JsonObject) -> None:
    state = status.parse_attention(params.get("state"))
    if state is None:
        raise ErrorBadRequest("bad request: state must be one of active, idle, hidden")
    await client.set_attention(state)


async def _active(client: Client, params: JsonObject) -> None:
    await client.set_attention(ACTIVE)


METHODS: dict[str, Callable[[Client, JsonObject], Awaitable[None]]] = {
    "pushgate.presence": _presence,
    "pushgate.ack": notifications.ack,
    "pushgate.mark_read": notifications.mark_read,
    CENTRIFUGO_USER_STATUS: _active,
}


async def call(client: Client, method: str, data: bytes | None) -> None:
    """Run a reserved method; HubError 104 for an unknown one, 107 for bad data."""
    handler = METHODS.get(method)
    if handler is None:
        raise ErrorMethodNotFound
    try:
        params = orjson.loads(data) if data else {}
    except orjson.JSONDecodeError:
        params = None
    if not isinstance(params, dict):
        raise ErrorBadRequest(f"bad request: {method} takes a JSON object")
    await handler(client, params)
