"""Closing a browser tab takes its user out of presence within a second, whichever
transport pushgate.js was on (the demo's online dot used to stay green ~25 s on SSE).
"""

from __future__ import annotations

import asyncio

import pytest
from centrifuge import Client

pytest.register_assert_rewrite("browser")
pytest_plugins = ["browser"]

from browser import js  # noqa: E402

from tests.centrifuge_helpers import Recorder, subscribed  # noqa: E402
from tests.in_browser.test_browser_pushgate_js import page_for  # noqa: E402

WITHIN = 1.0


@pytest.mark.parametrize("transport", ["sse", "longpoll", "poll", "websocket"])
async def test_closing_the_tab_drops_presence_within_a_second(
    make_server, server_config, pages, page, transport
):
    server = await make_server(server_config(f"[server]\nallowed_origins = [{js(pages.origin)}]\n"))
    channel = f"board:tab-{transport}"
    watcher = Client(server.ws_url, token=server.token("watcher"), events=Recorder())
    await watcher.connect()
    try:
        _, recorder = await subscribed(watcher, channel)
        user = f"tab-{transport}"
        pages.add("/tab.html", page_for(server.url, server.token(user), channel, transport, False))
        await page.goto(pages.url("/tab.html"))
        connected = await page.wait_for_report("state", where=lambda e: e["state"] == "connected")
        assert connected["transport"] == transport
        await page.wait_for_report("subscribed")
        await recorder.wait_for("join", lambda ctx: ctx.info.user == user)

        loop = asyncio.get_running_loop()
        closed_at = loop.time()
        await page.close()
        await recorder.wait_for("leave", lambda ctx: ctx.info.user == user, timeout=30)
        took = loop.time() - closed_at
        assert took < WITHIN, f"{transport}: the leave came {took:.2f}s after the tab closed"
        presence = await server.api("presence", {"channel": channel})
        assert {c["user"] for c in presence["result"]["presence"].values()} == {"watcher"}
    finally:
        await watcher.disconnect()
