"""centrifuge-js's Protobuf browser build (``centrifuge.protobuf.js``) in chromium.

Over WebSocket: the ``centrifuge-protobuf`` subprotocol must be selected or the client
aborts and reconnects for ever (the bug this covers). Without WebSocket: the Protobuf
build tries SSE, which cannot carry it; pushgate refuses it with 400 so the client moves
on to HTTP streaming (Protobuf bodies, ``EmulationRequest`` messages) and works there.
Data travels as bytes: the page publishes the UTF-8 of JSON and decodes what it gets.
"""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("browser")
pytest_plugins = ["browser"]

from browser import html_page, js  # noqa: E402

CLIENT_SCRIPT = """
const encode = value => new TextEncoder().encode(JSON.stringify(value));
const decode = bytes => JSON.parse(new TextDecoder().decode(bytes));
const centrifuge = new Centrifuge(TRANSPORTS, {
  token: TOKEN, emulationEndpoint: SERVER_URL + "/emulation",
  minReconnectDelay: 200, maxReconnectDelay: 400,
});
centrifuge.on("connecting", ctx => report("connecting", {code: ctx.code, reason: ctx.reason}));
centrifuge.on("connected", ctx => report("connected", {transport: ctx.transport}));
centrifuge.on("disconnected", ctx => report("disconnected", {code: ctx.code, reason: ctx.reason}));
centrifuge.on("error", ctx => report("client_error", {
  type: ctx.type, transport: ctx.transport || null, message: String(ctx.error?.message),
}));
const sub = centrifuge.newSubscription(CHANNEL, {joinLeave: true});
sub.on("subscribed", async ctx => {
  report("subscribed", {recovered: ctx.recovered, wasRecovering: ctx.wasRecovering});
  if (!ctx.wasRecovering) {
    await sub.publish(encode({from: "page"}));
    const stats = await sub.presenceStats();
    const presence = await sub.presence();
    report("presence", {clients: stats.numClients, users: Object.values(presence.clients)
      .map(c => c.user), connInfo: Object.values(presence.clients).map(c => decode(c.connInfo))});
  }
});
sub.on("join", ctx => report("join", {user: ctx.info.user}));
sub.on("leave", ctx => report("leave", {user: ctx.info.user}));
sub.on("publication", ctx => report("publication", {
  data: decode(ctx.data), offset: Number(ctx.offset), user: ctx.info ? ctx.info.user : null,
}));
sub.on("error", ctx => report("sub_error", {message: String(ctx.error?.message)}));
window.history_of = async () => (await sub.history({limit: 3, reverse: true}))
  .publications.map(p => decode(p.data));
sub.subscribe();
centrifuge.connect();
"""


def client_page(server_url: str, transports: list[dict], token: str, channel: str) -> str:
    consts = (
        f"const SERVER_URL = {js(server_url)};\nconst TRANSPORTS = {js(transports)};\n"
        f"const TOKEN = {js(token)};\nconst CHANNEL = {js(channel)};"
    )
    return html_page(consts + CLIENT_SCRIPT, scripts=("/centrifuge.protobuf.js",))


def ws_transports(server_url: str) -> list[dict]:
    base = server_url.replace("http", "ws")
    return [{"transport": "websocket", "endpoint": base + "/connection/websocket"}]


def sse_then_http_stream(server_url: str) -> list[dict]:
    return [
        {"transport": "sse", "endpoint": server_url + "/connection/sse"},
        {"transport": "http_stream", "endpoint": server_url + "/connection/http_stream"},
    ]


@pytest.mark.parametrize("transports", ["websocket", "sse_then_http_stream"])
async def test_protobuf_build_in_chromium(make_server, server_config, pages, page, transports):
    server = await make_server(server_config(f"[server]\nallowed_origins = [{js(pages.origin)}]\n"))
    user = f"browser-pb-{transports}"
    channel = f"board:pb-{transports}"
    expected = "websocket" if transports == "websocket" else "http_stream"
    endpoints = (ws_transports if transports == "websocket" else sse_then_http_stream)(server.url)
    if transports != "websocket":
        # the refused SSE attempt: chromium logs the failed EventSource, the client its
        # transport error, before it moves on
        page.allow("EventSource")
        page.allow("400")
    token = server.token(user, info={"team": 7})
    pages.add("/pb.html", client_page(server.url, endpoints, token, channel))
    await page.goto(pages.url("/pb.html"))

    connected = await page.wait_for_report("connected")
    assert connected["transport"] == expected
    presence = await page.wait_for_report("presence")
    assert presence == {**presence, "clients": 1, "users": [user], "connInfo": [{"team": 7}]}
    first = await page.wait_for_report("publication")
    assert (first["data"], first["user"]) == ({"from": "page"}, user)

    for n in range(1, 11):
        await server.publish(channel, n)
    await page.wait_for_report("publication", where=lambda e: e["data"] == 10)
    assert await page.evaluate("window.history_of()") == [10, 9, 8]

    # join and leave of another (JSON) connection, through the server API
    mark = page.mark()
    async with server.session.ws_connect(server.ws_url) as other:
        await other.send_json({"id": 1, "connect": {"token": server.token("bob")}})
        await other.receive_json(timeout=5)
        await other.send_json({"id": 2, "subscribe": {"channel": channel}})
        await page.wait_for_report("join", where=lambda e: e["user"] == "bob", start=mark)
    await page.wait_for_report("leave", where=lambda e: e["user"] == "bob", start=mark)

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

    errors = page.reports_of("client_error")
    if transports == "websocket":
        assert errors == []
    else:
        # only the refused SSE attempts, never a decoding failure of the working transport
        assert errors and all(e["transport"] == "sse" for e in errors), errors
