"""pushgate.js in chromium tells pushgate its user's attention, acknowledges notifications
once the page shows them, and keeps the user's read positions.

The page's visibility is set by the test (``document.hidden`` and a ``visibilitychange``
event, what the browser does when a tab goes to the background); the user's status is
read back through the server API and the events a real webhook endpoint receives.
"""

from __future__ import annotations

import asyncio

import pytest

pytest.register_assert_rewrite("browser")
pytest_plugins = ["browser"]

from browser import html_page, js  # noqa: E402

from tests.centrifuge_helpers import wait_until  # noqa: E402
from tests.event_sink import WEBHOOK_SECRET, EventSink  # noqa: E402

PAGE = """
window.setHidden = (hidden) => {
  Object.defineProperty(document, 'hidden', {value: hidden, configurable: true});
  document.dispatchEvent(new Event('visibilitychange'));
};
if (START_HIDDEN) Object.defineProperty(document, 'hidden', {value: true, configurable: true});
const pg = new Pushgate(SERVER_URL, {token: TOKEN, transports: TRANSPORTS, idleAfter: 1,
                                     minReconnectDelay: 300, pollInterval: 300});
pg.on("state", ctx => report("state", ctx));
pg.on("attention", ctx => report("attention", ctx));
pg.on("read", ctx => report("read", ctx));
pg.subscribe(CHANNEL, {
  onSubscribed: ctx => report("subscribed", ctx),
  onPublication: ctx => report("publication", {data: ctx.data, offset: ctx.offset}),
});
window.pg = pg;
pg.connect();
"""


@pytest.fixture
async def sink():
    sink = EventSink()
    await sink.start()
    yield sink
    await sink.stop()


async def open_page(pages, page, server, user: str, transport: str, hidden: bool = False):
    consts = (
        f"const SERVER_URL = {js(server.url)};\nconst TOKEN = {js(server.token(user))};\n"
        f"const CHANNEL = {js(f'notifications:#{user}')};\n"
        f"const TRANSPORTS = {js([transport])};\nconst START_HIDDEN = {js(hidden)};\n"
    )
    pages.add(
        f"/{user}.html", html_page(consts + PAGE, scripts=[server.url + "/static/pushgate.js"])
    )
    await page.goto(pages.url(f"/{user}.html"))
    await page.wait_for_report("subscribed")


async def status(server, user: str) -> str:
    reply = await server.api("user_status", {"users": [user]})
    return reply["result"]["statuses"][0]["status"]


@pytest.mark.parametrize("transport", ["websocket", "longpoll"])
async def test_pushgate_js_tells_attention_and_acks_what_the_page_shows(
    make_server, server_config, pages, page, sink, transport
):
    server = await make_server(
        server_config(
            f"[server]\nallowed_origins = [{js(pages.origin)}]\n"
            f'[events]\nenabled = true\nwebhook_url = "{sink.url}"\n'
            f'webhook_secret = "{WEBHOOK_SECRET}"\n'
            'retry_min_delay = "0.1s"\nretry_max_delay = "0.3s"\n'
        )
    )
    user = f"pat-{transport}"
    await open_page(pages, page, server, user, transport)
    assert await status(server, user) == "active"

    async def is_(expected: str) -> bool:
        return await status(server, user) == expected

    await page.wait_for_report("attention", where=lambda e: e["state"] == "idle")
    await wait_until(lambda: is_("idle"), 3, "idle after idleAfter without input")
    await page.mouse.move(10, 10)
    await page.mouse.move(40, 40)
    await wait_until(lambda: is_("active"), 3, "active again on input")
    await page.evaluate("window.setHidden(true)")
    await wait_until(lambda: is_("hidden"), 3, "hidden with the page")

    # a hidden page does not acknowledge: the notification is handed off
    await server.api(
        "publish", {"channel": f"notifications:#{user}", "data": {"n": 1}, "handoff": 0.5}
    )
    await page.wait_for_report("publication", where=lambda e: e["data"] == {"n": 1})
    await sink.wait_for(lambda s: s.of("notification_handoff"), what="the unseen one handed off")
    # one that arrives while hidden and is shown before its TTL is not
    await server.api(
        "publish", {"channel": f"notifications:#{user}", "data": {"n": 2}, "handoff": 1.5}
    )
    await page.wait_for_report("publication", where=lambda e: e["data"] == {"n": 2})
    await page.evaluate("window.setHidden(false)")
    await asyncio.sleep(2.0)  # past the second TTL
    assert [e["data"] for e in sink.of("notification_handoff")] == [{"n": 1}]

    # read positions: marked here, told back (to every connection of the user)
    marked = await page.evaluate(
        f"window.pg.markRead({js(f'notifications:#{user}')}, 2, '')"
        ".then(() => null, e => e.message)"
    )
    assert marked is None
    read = await page.wait_for_report("read")
    assert (read["channel"], read["offset"]) == (f"notifications:#{user}", 2)
    got = await page.evaluate(f"window.pg.readPosition({js(f'notifications:#{user}')})")
    assert got == {"offset": 2, "epoch": ""}


async def test_a_tab_opened_in_the_background_is_never_shown_active(
    make_server, server_config, pages, page, sink
):
    server = await make_server(
        server_config(
            f"[server]\nallowed_origins = [{js(pages.origin)}]\n"
            f'[events]\nenabled = true\nwebhook_url = "{sink.url}"\n'
            f'webhook_secret = "{WEBHOOK_SECRET}"\n'
        )
    )
    await open_page(pages, page, server, "quinn", "websocket", hidden=True)
    await sink.wait_for(lambda s: s.of("user_online", user="quinn"), what="quinn online")
    assert await status(server, "quinn") == "hidden"
    await page.evaluate("window.setHidden(false)")
    await sink.wait_for(lambda s: s.of("user_status", user="quinn"), what="quinn active")
    statuses = [e["status"] for e in sink.of("user_online", "user_status", user="quinn")]
    assert statuses == ["hidden", "active"]
