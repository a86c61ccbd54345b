"""pushgate.js, served by pushgate itself, in chromium: forced onto long and short polling,
loaded both as a classic script and as an ES module.
"""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("browser")
pytest_plugins = ["browser"]

from browser import html_page, js  # noqa: E402

CLIENT_SCRIPT = """
const pg = new Pushgate(SERVER_URL, {token: TOKEN, transports: TRANSPORTS,
                                     minReconnectDelay: 300, pollInterval: 300});
pg.on("state", ctx => report("state", ctx));
const board = pg.subscribe(CHANNEL, {
  onSubscribed: ctx => report("subscribed", ctx),
  onPublication: ctx => report("publication", {data: ctx.data, offset: ctx.offset}),
  onError: ctx => report("sub_error", {message: String(ctx.error && ctx.error.message)}),
});
window.board = board;
pg.connect();
"""


def page_for(server_url: str, token: str, channel: str, transport: str, module: bool) -> str:
    consts = (
        f"const SERVER_URL = {js(server_url)};\nconst TOKEN = {js(token)};\n"
        f"const CHANNEL = {js(channel)};\nconst TRANSPORTS = {js([transport])};\n"
    )
    if module:
        script = (
            f"import Pushgate from {js(server_url + '/static/pushgate.mjs')};\n"
            + consts
            + CLIENT_SCRIPT
        )
        return html_page(script, scripts=[], module=True)
    return html_page(consts + CLIENT_SCRIPT, scripts=[server_url + "/static/pushgate.js"])


@pytest.mark.parametrize(
    ("transport", "module"), [("longpoll", False), ("poll", True), ("websocket", True)]
)
async def test_pushgate_js_delivers_once_in_order_across_a_cut(
    make_server, server_config, pages, page, transport, module
):
    server = await make_server(server_config(f"[server]\nallowed_origins = [{js(pages.origin)}]\n"))
    user = f"pg-{transport}"
    channel = f"board:{transport}"
    pages.add("/pg.html", page_for(server.url, server.token(user), channel, transport, module))
    await page.goto(pages.url("/pg.html"))
    connected = await page.wait_for_report("state", where=lambda e: e["state"] == "connected")
    assert connected["transport"] == transport
    await page.wait_for_report("subscribed")

    # commands travel on the same transport
    await page.evaluate("window.board.publish({from: 'page'})")
    stats = await page.evaluate("window.board.presenceStats()")
    assert stats["numClients"] == 1
    for n in range(1, 11):
        await server.publish(channel, n)
    await page.wait_for_report("publication", where=lambda e: e["data"] == 10)

    mark = page.mark()
    await server.api("disconnect", {"user": user, "disconnect": {"code": 4000, "reason": "cut"}})
    await page.wait_for_report(
        "state", where=lambda e: e["state"] == "connecting" and e["code"] == 4000, start=mark
    )
    for n in range(11, 21):
        await server.publish(channel, n)
    again = await page.wait_for_report("subscribed", start=mark)
    assert again["wasRecovering"] is True and again["recovered"] is True
    await server.publish(channel, "end")
    await page.wait_for_report("publication", where=lambda e: e["data"] == "end")

    received = [e["data"] for e in page.reports_of("publication")]
    assert received == [{"from": "page"}, *range(1, 21), "end"]
    offsets = [e["offset"] for e in page.reports_of("publication")]
    assert offsets == sorted(set(offsets))
    assert not page.reports_of("sub_error")
