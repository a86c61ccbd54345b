"""centrifuge-js in chromium without WebSocket: it falls back to HTTP streaming, then SSE.

The page's origin differs from the server's and the server allows exactly that origin,
so CORS on the streaming endpoints and on ``/emulation`` is exercised for real.
"""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("browser")
pytest_plugins = ["browser"]

from browser import html_page, js  # noqa: E402

CLIENT_SCRIPT = """
const base = SERVER_URL.replace("http", "ws");
const centrifuge = new Centrifuge([
  {transport: "websocket", endpoint: base + "/connection/websocket"},
  {transport: "http_stream", endpoint: SERVER_URL + "/connection/http_stream"},
  {transport: "sse", endpoint: SERVER_URL + "/connection/sse"},
], {token: TOKEN, emulationEndpoint: SERVER_URL + "/emulation"});
centrifuge.on("connecting", ctx => report("connecting", {code: ctx.code, reason: ctx.reason}));
centrifuge.on("connected", ctx => report("connected", {transport: ctx.transport}));
centrifuge.on("disconnected", ctx => report("disconnected", {code: ctx.code}));
const sub = centrifuge.newSubscription(CHANNEL);
sub.on("subscribed", async ctx => {
  report("subscribed", {recovered: ctx.recovered, wasRecovering: ctx.wasRecovering});
  if (!ctx.wasRecovering) {
    await sub.publish({from: "page"});
    const stats = await sub.presenceStats();
    const presence = await sub.presence();
    report("presence", {clients: stats.numClients, users: Object.values(presence.clients)
      .map(c => c.user)});
  }
});
sub.on("publication", ctx => report("publication", {data: ctx.data, offset: ctx.offset}));
sub.on("error", ctx => report("sub_error", {message: String(ctx.error?.message)}));
window.history_of = async () => (await sub.history({limit: 3, reverse: true}))
  .publications.map(p => p.data);
sub.subscribe();
centrifuge.connect();
"""


def client_page(server_url: str, token: str, channel: str) -> str:
    consts = (
        f"const SERVER_URL = {js(server_url)};\nconst TOKEN = {js(token)};\n"
        f"const CHANNEL = {js(channel)};"
    )
    return html_page(consts + CLIENT_SCRIPT)


@pytest.mark.parametrize("expected", ["http_stream", "sse"])
async def test_fallback_without_websocket(make_server, server_config, pages, page, expected):
    server = await make_server(server_config(f"[server]\nallowed_origins = [{js(pages.origin)}]\n"))
    user = f"browser-{expected}"
    channel = f"board:{expected}"
    await page.add_init_script("delete window.WebSocket")
    if expected == "sse":
        # a proxy that breaks streamed fetch responses but lets EventSource through
        await page.route("**/connection/http_stream", lambda route: route.abort())
        page.allow("http_stream")
        page.allow("Failed to fetch")
    page.allow("net::ERR_FAILED")
    pages.add("/page.html", client_page(server.url, server.token(user), channel))
    await page.goto(pages.url("/page.html"))

    connected = await page.wait_for_report("connected")
    assert connected["transport"] == expected
    presence = await page.wait_for_report("presence")
    assert presence == {**presence, "clients": 1, "users": [user]}
    first = await page.wait_for_report("publication")
    assert first["data"] == {"from": "page"}

    for n in range(1, 11):
        await server.publish(channel, n)
    await page.wait_for_report("publication", where=lambda e: e["data"] == 10)
    assert await page.evaluate("window.history_of()") == [10, 9, 8]

    mark = page.mark()
    await server.api("disconnect", {"user": user, "disconnect": {"code": 4000, "reason": "cut"}})
    await page.wait_for_report("connecting", start=mark)
    for n in range(11, 21):
        await server.publish(channel, n)
    resubscribed = await page.wait_for_report("subscribed", start=mark)
    assert resubscribed["wasRecovering"] is True and resubscribed["recovered"] is True
    await server.publish(channel, "end")
    await page.wait_for_report("publication", where=lambda e: e["data"] == "end")
    received = [e["data"] for e in page.reports_of("publication")]
    assert received == [{"from": "page"}, *range(1, 21), "end"]
    again = await page.wait_for_report("connected", start=mark)
    assert again["transport"] == expected
