"""Typed keys of the aiohttp application's shared state."""

from aiohttp import web

from pushgate.hub.hub import Hub

HUB = web.AppKey("hub", Hub)
