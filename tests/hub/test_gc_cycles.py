"""A closed connection leaves no reference cycle: reference counting frees all of it.

A node with many connections pays for the cyclic GC in full collections that walk
every object alive; a closed connection that only the collector can free (its
connection, session and client referring to each other) makes that garbage pile up
between collections and the collections more frequent. Each endpoint here opens
connections, subscribes them to two channels, closes them (a close frame from the
client, a disconnect by the server, the client dropping its socket without a word)
and checks that a collection with ``gc.DEBUG_SAVEALL`` finds nothing.

The server runs on uvloop, pushgate's loop in production, where nothing at all may be
left; and on asyncio's own loop, whose socket transports (CPython 3.11) refer to
themselves through a cached bound method: that cycle is the event loop's and is
set aside.
"""

from __future__ import annotations

import asyncio
import gc
import time
import types
import weakref
from asyncio import selector_events
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvloop
from aiohttp import web

from pushgate.auth import mint_connection_token
from pushgate.hub.hub import Hub
from pushgate.transport.app_keys import OPEN_SOCKETS
from tests import raw_clients
from tests.conftest import SECRET, free_port, make_config, start_server
from tests.raw_clients import HOST, WAIT, RawSocket, RawWebSocket

CONNECTIONS = 50
DOMAIN = "pushgate.test"
EXTRA_CONFIG = f"""
[[namespace]]
name = "room"
allow_subscribe_for_client = true
[xmpp]
domain = "{DOMAIN}"
"""


# --- one connection per dialect: connect, subscribe to two channels ----------------------
@dataclass
class Ports:
    http: int
    stomp: int


def make_token(user: str, **claims: object) -> str:
    return mint_connection_token(SECRET, user, ttl=3600, **claims)


async def centrifugo(url: str, token: Callable[..., str], user: str) -> RawWebSocket:
    """``user`` connected to the server at ``url`` and subscribed to two channels
    (also used by tests/hub/test_gc_freeze.py)."""
    port = int(url.rsplit(":", 1)[1])
    return await raw_clients.centrifugo_websocket(port, token(user), ("board:gc", "nohistory:gc"))


async def centrifugo_websocket(ports: Ports, user: str) -> RawWebSocket:
    return await centrifugo(f"http://{HOST}:{ports.http}", make_token, user)


def server_side(user: str) -> str:
    """A token whose ``channels`` claim subscribes to two channels (server-side)."""
    return make_token(user, channels=["board:gc", "notifications:gc"])


async def uni(ports: Ports, user: str) -> RawWebSocket:
    return await raw_clients.uni_websocket(ports.http, server_side(user))


async def stomp(ports: Ports, user: str) -> RawWebSocket:
    channels = ("board:gc", "nohistory:gc")
    return await raw_clients.stomp_websocket(ports.http, make_token(user), channels)


async def xmpp(ports: Ports, user: str) -> RawWebSocket:
    token = make_token(user)
    return await raw_clients.xmpp_websocket(ports.http, user, token, DOMAIN, ("gc1", "gc2"))


async def sse(ports: Ports, user: str) -> RawSocket:
    return await raw_clients.sse(ports.http, server_side(user))


async def http_stream(ports: Ports, user: str) -> RawSocket:
    return await raw_clients.http_stream(ports.http, server_side(user))


async def uni_sse(ports: Ports, user: str) -> RawSocket:
    return await raw_clients.uni_sse(ports.http, server_side(user))


async def stomp_tcp(ports: Ports, user: str) -> RawSocket:
    channels = ("board:gc", "nohistory:gc")
    return await raw_clients.stomp_tcp(ports.stomp, make_token(user), channels)


DIALECTS: dict[str, Callable[[Ports, str], Awaitable[RawSocket]]] = {
    "centrifugo": centrifugo_websocket,
    "uni": uni,
    "stomp": stomp,
    "xmpp": xmpp,
    "sse": sse,
    "http_stream": http_stream,
    "uni_sse": uni_sse,
    "stomp_tcp": stomp_tcp,
}
WEBSOCKETS = ("centrifugo", "uni", "stomp", "xmpp")
# A stream has no close of its own: the server ends it, or the client drops the socket.
CASES = [
    *(
        (dialect, how)
        for dialect in WEBSOCKETS
        for how in ("client-close", "server-disconnect", "abort")
    ),
    *(
        (dialect, how)
        for dialect in ("sse", "http_stream", "uni_sse")
        for how in ("server-disconnect", "abort")
    ),
    ("stomp_tcp", "server-disconnect"),
    ("stomp_tcp", "abort"),
]


# --- the check -------------------------------------------------------------------------
def describe(obj: object) -> str:
    kind = type(obj)
    name = f"{kind.__module__}.{kind.__qualname__}"
    if isinstance(obj, types.FunctionType | types.MethodType):
        name += f" {obj.__qualname__}"
    return name


def loops_own(garbage: list) -> set[int]:
    """Garbage that only asyncio's socket transports reach: their own cycle, not ours."""
    ids = {id(obj) for obj in garbage}
    seen: set[int] = set()
    todo = [obj for obj in garbage if isinstance(obj, selector_events._SelectorTransport)]
    while todo:
        obj = todo.pop()
        if id(obj) not in seen:
            seen.add(id(obj))
            todo.extend(r for r in gc.get_referents(obj) if id(r) in ids)
    return seen


async def wait_for(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.01)


async def open_and_close(
    runner: web.AppRunner, hub: Hub, ports: Ports, dialect: str, how: str, count: int
) -> list[weakref.ref]:
    """``count`` connections opened, subscribed and closed; weak references to their
    clients (the hub's object for a connection)."""
    open_sockets = runner.app[OPEN_SOCKETS]
    users = [f"gc-{dialect}-{how}-{i}" for i in range(count)]
    sockets = [await DIALECTS[dialect](ports, user) for user in users]
    await wait_for(lambda: len(hub.clients) == count, "every connection is registered")
    clients = [weakref.ref(client) for client in hub.clients.values()]
    if how == "client-close":
        await asyncio.gather(*(ws.close() for ws in sockets))  # type: ignore[attr-defined]
    elif how == "server-disconnect":
        for user in users:
            await hub.disconnect_user(user)
        await asyncio.gather(*(raw.closed() for raw in sockets))
    else:
        for raw in sockets:
            raw.abort()
    del sockets
    await wait_for(
        lambda: not hub.clients and not hub.users and not hub.channels,
        "the hub has forgotten every connection",
    )
    await wait_for(lambda: open_sockets.count == 0, "every WebSocket is closed")
    # A connection is freed the moment its close completes. One left in a cycle waits
    # for the collector instead: that is not waited for here, the check says what held it.
    deadline = time.monotonic() + 2.0
    while any(ref() is not None for ref in clients) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return clients


async def garbage_of_closed_connections(tmp_path: Path, dialect: str, how: str) -> Counter:
    """What a collection finds after CONNECTIONS connections were opened and closed, by
    type (less the event loop's own transport cycles)."""
    config = make_config(tmp_path, EXTRA_CONFIG, stomp__tcp_port=free_port())
    runner, hub, url = await start_server(config)
    ports = Ports(http=int(url.rsplit(":", 1)[1]), stomp=config.stomp.tcp_port)
    flags = gc.get_debug()
    try:
        # first connections warm caches up (imports, compiled patterns) unchecked
        await open_and_close(runner, hub, ports, dialect, how, 2)
        gc.collect()
        gc.garbage.clear()
        gc.set_debug(gc.DEBUG_SAVEALL)  # from here every collection keeps what it finds
        clients = await open_and_close(runner, hub, ports, dialect, how, CONNECTIONS)
        gc.collect()
        gc.set_debug(flags)
        skip = loops_own(gc.garbage)
        found = Counter(describe(obj) for obj in gc.garbage if id(obj) not in skip)
        gc.garbage.clear()
        if not found:
            assert all(ref() is None for ref in clients), "closed clients are still referenced"
        return found
    finally:
        gc.set_debug(flags)
        gc.garbage.clear()
        await runner.cleanup()


def run(loop: str, coro: Awaitable) -> object:
    factory = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


@pytest.mark.parametrize(("dialect", "how"), CASES)
@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_a_closed_connection_leaves_no_cyclic_garbage(tmp_path, loop, dialect, how):
    found = run(loop, garbage_of_closed_connections(tmp_path, dialect, how))
    total = sum(found.values())
    assert not found, (
        f"{total} objects ({total / CONNECTIONS:.1f} a connection) in reference cycles: "
        f"{found.most_common(12)}"
    )
