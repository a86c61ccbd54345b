"""centrifuge-js in a real browser (Debian's chromium via Playwright) over WebSocket.

The page is served from another origin than the pushgate server (``pages``): a
WebSocket needs no CORS, but the default (empty) ``allowed_origins`` admits same-origin
pages only, so the page's origin is listed.
"""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("browser")
pytest_plugins = ["browser"]

from browser import html_page, js  # noqa: E402

CLIENT_SCRIPT = """
const centrifuge = new Centrifuge(WS_URL, {token: TOKEN});
centrifuge.on("connecting", ctx => report("connecting", {code: ctx.code, reason: ctx.reason}));
centrifuge.on("connected", ctx => report("connected", {transport: ctx.transport}));
centrifuge.on("disconnected", ctx => report("disconnected", {code: ctx.code, reason: ctx.reason}));
centrifuge.on("error", ctx => report("client_error", {message: String(ctx.error?.message)}));
const sub = centrifuge.newSubscription(CHANNEL);
sub.on("subscribed", ctx => report("subscribed", {
  recovered: ctx.recovered, wasRecovering: ctx.wasRecovering, recoverable: ctx.recoverable,
}));
sub.on("publication", ctx => report("publication", {data: ctx.data, offset: ctx.offset}));
sub.on("error", ctx => report("sub_error", {message: String(ctx.error?.message)}));
sub.subscribe();
centrifuge.connect();
"""


def client_page(ws_url: str, token: str, channel: str) -> str:
    consts = (
        f"const WS_URL = {js(ws_url)};\nconst TOKEN = {js(token)};\nconst CHANNEL = {js(channel)};"
    )
    return html_page(consts + CLIENT_SCRIPT)


async def test_websocket_publications_recovered_across_a_server_cut(
    make_server, server_config, pages, page
):
    server = await make_server(server_config(f"[server]\nallowed_origins = [{js(pages.origin)}]\n"))
    user = "browser-ws"
    pages.add("/ws.html", client_page(server.ws_url, server.token(user), "board:1"))
    await page.goto(pages.url("/ws.html"))

    connected = await page.wait_for_report("connected")
    assert connected["transport"] == "websocket"
    await page.wait_for_report("subscribed")

    for n in range(1, 21):
        await server.publish("board:1", n)
    await page.wait_for_reports("publication", 20)

    mark = page.mark()
    reply = await server.api(
        "disconnect", {"user": user, "disconnect": {"code": 4000, "reason": "cut"}}
    )
    assert "error" not in reply, reply
    connecting = await page.wait_for_report("connecting", start=mark)
    assert (connecting["code"], connecting["reason"]) == (4000, "cut")
    # The client waits >= 500 ms before reconnecting: these are published meanwhile.
    for n in range(21, 41):
        await server.publish("board:1", n)
    assert not page.reports_of("connected", start=mark), "reconnected before 21..40 were out"

    resubscribed = await page.wait_for_report("subscribed", start=mark)
    assert resubscribed["wasRecovering"] is True
    assert resubscribed["recovered"] is True
    await page.wait_for_reports("publication", 40)
    # A sentinel after the rest: any duplicate would have arrived before it.
    await server.publish("board:1", "end")
    await page.wait_for_report("publication", where=lambda e: e["data"] == "end")

    received = [e["data"] for e in page.reports_of("publication")]
    assert received == [*range(1, 41), "end"]
    # 21..40 came back through recovery, after the resubscription and not before the cut.
    after = page.reports.index(resubscribed)
    assert [e["data"] for e in page.reports_of("publication", start=after)][:20] == list(
        range(21, 41)
    )
    offsets = [e["offset"] for e in page.reports_of("publication")]
    assert offsets == sorted(set(offsets))
    assert not page.reports_of("disconnected")
    assert not page.reports_of("sub_error")
    assert len(page.reports_of("connected")) == 2
