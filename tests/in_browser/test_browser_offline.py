"""pushgate.js follows the browser's network: on `offline` it shows the connection lost at
once, and on `online` it reconnects at once (no backoff wait), recovering what it missed —
on every transport. Playwright's ``context.set_offline`` takes the network away and fires
the window's ``offline``/``online`` events, as a laptop losing Wi-Fi does.
"""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("browser")
pytest_plugins = ["browser"]

from browser import html_page, js  # noqa: E402

OFFLINE = 5  # Pushgate.errors.OFFLINE: the state event's code when the network went away
AT_ONCE = 2.0  # seconds: what "at once" means here (the old behaviour took 15-35 s)

SCRIPT = """
const pg = new Pushgate(SERVER_URL, {token: TOKEN, transports: TRANSPORTS,
                                     // a reconnect in time can only be the online event's
                                     minReconnectDelay: 60000, maxReconnectDelay: 60000,
                                     pollInterval: 300});
pg.on("state", ctx => report("state", ctx));
pg.subscribe(CHANNEL, {
  onSubscribed: ctx => report("subscribed", ctx),
  onPublication: ctx => report("publication", {data: ctx.data, offset: ctx.offset}),
});
window.pg = pg;
pg.connect();
"""


@pytest.mark.parametrize("transport", ["websocket", "sse", "longpoll", "poll"])
async def test_offline_shows_at_once_and_online_reconnects_at_once(
    make_server, server_config, pages, page, transport
):
    server = await make_server(server_config(f"[server]\nallowed_origins = [{js(pages.origin)}]\n"))
    channel = f"board:offline-{transport}"
    consts = (
        f"const SERVER_URL = {js(server.url)};\n"
        f"const TOKEN = {js(server.token('roamer'))};\n"
        f"const CHANNEL = {js(channel)};\nconst TRANSPORTS = {js([transport])};\n"
    )
    pages.add(
        "/offline.html", html_page(consts + SCRIPT, scripts=[server.url + "/static/pushgate.js"])
    )
    page.allow("ERR_INTERNET_DISCONNECTED")  # requests made while offline fail, as they should
    await page.goto(pages.url("/offline.html"))
    await page.wait_for_report("state", where=lambda e: e["state"] == "connected")
    await page.wait_for_report("subscribed")
    await server.publish(channel, 1)
    await page.wait_for_report("publication", where=lambda e: e["data"] == 1)

    mark = page.mark()
    await page.context.set_offline(True)
    lost = await page.wait_for_report("state", start=mark, timeout=AT_ONCE)
    assert lost["state"] == "connecting"  # it will reconnect by itself
    assert lost["code"] == OFFLINE and lost["reason"] == "offline"
    assert await page.evaluate("pg.state") == "connecting"

    for n in (2, 3):  # published while this browser is away
        await server.publish(channel, n)
    back = page.mark()
    await page.context.set_offline(False)
    connected = await page.wait_for_report(
        "state", where=lambda e: e["state"] == "connected", start=back, timeout=AT_ONCE
    )
    assert connected["transport"] == transport
    again = await page.wait_for_report("subscribed", start=back)
    assert again["wasRecovering"] is True and again["recovered"] is True
    await server.publish(channel, 4)
    await page.wait_for_report("publication", where=lambda e: e["data"] == 4)
    assert [e["data"] for e in page.reports_of("publication")] == [1, 2, 3, 4]
