"""Typed keys of the aiohttp application's shared state."""

from aiohttp import web

from pushgate.hub.hub import Hub
from pushgate.transport.ws_connection import OpenSockets

HUB = web.AppKey("hub", Hub)
#: the lean WebSocket sockets of this application, for shutdown to wait on
OPEN_SOCKETS = web.AppKey("open_sockets", OpenSockets)
