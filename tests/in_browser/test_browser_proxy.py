"""centrifuge-js in chromium with no token at all: the browser's session cookie goes with
the WebSocket handshake, pushgate's connect proxy asks the backend (tests/proxy_backend.py)
who that is, and RPCs, subscriptions and publications are the backend's to decide."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("browser")
pytest_plugins = ["browser"]

from browser import html_page, js  # noqa: E402

from tests.proxy_backend import ProxyBackend  # noqa: E402

SCRIPT = """
const centrifuge = new Centrifuge(WS_URL);  // no token, no getToken: the cookie is enough
centrifuge.on("connected", ctx => report("connected", {data: ctx.data}));
centrifuge.on("disconnected", ctx => report("disconnected", {code: ctx.code, reason: ctx.reason}));
centrifuge.on("error", ctx => report("client_error", {code: ctx.error?.code}));
centrifuge.once("connected", async () => {
  const who = await centrifuge.rpc("whoami", {});
  report("rpc", {data: who.data});
  try { await centrifuge.rpc("fail", {}); }
  catch (e) { report("rpc_error", {code: e.code, message: e.message}); }
  const project = centrifuge.newSubscription("proj:1");
  project.on("subscribed", ctx => report("subscribed", {channel: "proj:1", data: ctx.data}));
  project.subscribe();
  const stranger = centrifuge.newSubscription("proj:2");
  stranger.on("unsubscribed", ctx => report("unsubscribed", {channel: "proj:2", code: ctx.code}));
  stranger.subscribe();
  const chat = centrifuge.newSubscription("chat:1");
  chat.on("publication", ctx => report("publication", {data: ctx.data}));
  chat.on("subscribed", async () => {
    await chat.publish({text: "  from the browser "});
    try { await chat.publish({text: "spam spam"}); }
    catch (e) { report("publish_error", {code: e.code}); }
  });
  chat.subscribe();
});
centrifuge.connect();
"""


@pytest.fixture
async def backend():
    backend = ProxyBackend()
    await backend.start()
    yield backend
    await backend.stop()


@pytest.fixture
async def proxied(make_server, server_config, backend, pages):
    origins = f"[server]\nallowed_origins = [{js(pages.origin)}]\n"
    config = server_config(backend.toml() + origins, **ProxyBackend.overrides())
    server = await make_server(config)
    pages.add("/app.html", html_page(f"const WS_URL = {js(server.ws_url)};\n" + SCRIPT))
    return server


async def test_centrifuge_js_with_only_a_cookie(proxied, backend, pages, page):
    session = backend.login("alice")
    await page.context.add_cookies([{"name": "session", "value": session, "url": proxied.url}])
    await page.goto(pages.url("/app.html"))

    connected = await page.wait_for_report("connected")
    assert connected["data"] == {"greeting": "hello alice"}
    assert (await page.wait_for_report("rpc"))["data"] == {"user": "alice", "cookie": True}
    failed = await page.wait_for_report("rpc_error")
    assert (failed["code"], failed["message"]) == (1002, "that went wrong")
    subscribed = await page.wait_for_report("subscribed")
    assert subscribed["data"] == {"welcome": "proj:1"}
    assert (await page.wait_for_report("unsubscribed"))["code"] == 403
    publication = await page.wait_for_report("publication")
    assert publication["data"] == {"text": "from the browser", "by": "alice", "checked": True}
    assert (await page.wait_for_report("publish_error"))["code"] == 1001
    call = await backend.wait_for_call("connect")
    assert call.headers["Cookie"] == f"session={session}"
    assert call.body["name"] == "js"
    assert not page.reports_of("disconnected")


async def test_centrifuge_js_without_a_session_is_told_so(proxied, backend, pages, page):
    await page.goto(pages.url("/app.html"))
    disconnected = await page.wait_for_report("disconnected")
    assert (disconnected["code"], disconnected["reason"]) == (4501, "unauthorized")
    assert not page.reports_of("connected")
    assert "Cookie" not in (await backend.wait_for_call("connect")).headers
