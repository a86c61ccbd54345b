"""Noticing at once that the peer of an open HTTP response went away.

aiohttp does not cancel a handler whose client disconnected (``handler_cancellation``
is off, as it should be for handlers that must finish their cleanup), and a stream
or a held poll writes nothing for up to a ping interval or a hold: without a watch,
a closed browser tab would stay a connected client — in presence, channel counts and
user status — until the next write failed. ``watch_loss`` puts a thin protocol in
front of aiohttp's own for the life of one request: every event passes through
unchanged, and losing the connection also calls the watcher's callback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from aiohttp import web

#: a polling or BOSH session whose held request lost its connection ends unless another
#: request of it comes within this long: a closed tab is gone at once, while a client
#: that merely dropped one request and sent the next is not disturbed
LOST_GRACE = 0.5


class _LossWatch(asyncio.Protocol):
    """Forwards every protocol event to aiohttp's handler; tells ``on_lost`` of a loss."""

    __slots__ = ("_inner", "_on_lost")

    def __init__(self, inner: asyncio.Protocol, on_lost: Callable[[], None]) -> None:
        self._inner = inner
        self._on_lost: Callable[[], None] | None = on_lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        on_lost, self._on_lost = self._on_lost, None
        self._inner.connection_lost(exc)
        if on_lost is not None:
            on_lost()


def watch_loss(request: web.Request, on_lost: Callable[[], None]) -> Callable[[], None]:
    """Call ``on_lost`` when ``request``'s connection is lost; returns the function that
    ends the watch (call it when the response is done, lost or not)."""
    transport = request.transport
    if transport is None or transport.is_closing():
        on_lost()
        return _nothing
    # aiohttp's RequestHandler: a streaming asyncio.Protocol (typed BaseProtocol here)
    inner = cast(asyncio.Protocol, transport.get_protocol())
    watch = _LossWatch(inner, on_lost)
    transport.set_protocol(watch)

    def unwatch() -> None:
        watch._on_lost = None
        if transport.get_protocol() is watch:
            transport.set_protocol(inner)

    return unwatch


async def held_until(request: web.Request, waiter: asyncio.Future, timeout: float) -> bool:
    """Wait for ``waiter`` up to ``timeout`` while watching ``request``'s connection;
    True when the client went away meanwhile (``waiter`` is left as it is)."""
    gone = asyncio.get_running_loop().create_future()

    def lost() -> None:
        if not gone.done():
            gone.set_result(None)

    unwatch = watch_loss(request, lost)
    try:
        # asyncio.wait cancels neither future: ``waiter`` stays the caller's
        await asyncio.wait((waiter, gone), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        unwatch()
    return gone.done()


def _nothing() -> None:
    pass
