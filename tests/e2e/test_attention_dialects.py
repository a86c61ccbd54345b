"""Attention from the other dialects: @stomp/stompjs sends ``SEND /pushgate/presence`` with
a ``state`` header; strophe.js's presence ``<show>`` maps to idle or active, unavailable to
hidden. The user's status, read back through the server API, follows."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("browser")
pytest_plugins = ["browser"]

from browser import html_page, js  # noqa: E402

from tests.centrifuge_helpers import wait_until  # noqa: E402
from tests.e2e.test_stompjs import StompJsClient  # noqa: E402
from tests.e2e.test_stompjs import stompjs as stompjs  # noqa: E402 (the fixture)

DOMAIN = "pushgate.test"


async def status_is(server, user: str, expected: str) -> None:
    async def reached() -> bool:
        reply = await server.api("user_status", {"users": [user]})
        return reply["result"]["statuses"][0]["status"] == expected

    await wait_until(reached, 3, f"{user} {expected}")


async def test_stompjs_reports_attention_with_a_send(make_server, server_config, stompjs):
    server = await make_server(server_config())
    bob: StompJsClient = await stompjs("bob")
    url = server.url.replace("http://", "ws://") + "/stomp"
    assert (await bob.stomp_connect(url, server.token("bob")))["event"] == "connected"
    await status_is(server, "bob", "active")
    await bob.ok("publish", destination="/pushgate/presence", body="", headers={"state": "idle"})
    await status_is(server, "bob", "idle")
    await bob.ok("publish", destination="/pushgate/presence", body="", headers={"state": "active"})
    await status_is(server, "bob", "active")
    # a bad state is the dialect's own error
    await bob.ok("publish", destination="/pushgate/presence", body="", headers={"state": "nap"})
    error = await bob.wait(lambda e: e["event"] == "stomp_error")
    assert error["headers"]["message"] == "invalid state header"
    assert "active, idle or hidden" in error["body"]


STROPHE = """
const S = globalThis.Strophe;
let conn;
window.login = (token) => {
  conn = new S.Connection(SERVICE, {mechanisms: [S.SASLPlain]});
  conn.connect(`carol@${DOMAIN}/web`, token, status => {
    if (status === S.Status.CONNECTED) report("connected", {});
  });
};
window.show = (value) => {
  const p = globalThis.$pres();
  if (value) p.c("show").t(value);
  conn.send(p);
};
window.away = () => conn.send(globalThis.$pres({type: "unavailable"}));
"""


@pytest.mark.parametrize("service", ["/http-bind", "/xmpp-websocket"])
async def test_strophe_show_is_the_connection_s_attention(
    make_server, server_config, pages, page, service
):
    server = await make_server(
        server_config(
            f'[server]\nallowed_origins = [{js(pages.origin)}]\n[xmpp]\ndomain = "{DOMAIN}"\n'
        )
    )
    url = server.url + service
    if service == "/xmpp-websocket":
        url = url.replace("http://", "ws://")
    pages.add(
        "/x.html",
        html_page(
            f"const SERVICE = {js(url)};\nconst DOMAIN = {js(DOMAIN)};\n" + STROPHE,
            scripts=["/strophe.js"],
        ),
    )
    await page.goto(pages.url("/x.html"))
    await page.evaluate(f"window.login({js(server.token('carol'))})")
    await page.wait_for_report("connected")
    await page.evaluate("window.show('xa')")
    await status_is(server, "carol", "idle")
    await page.evaluate("window.show('chat')")
    await status_is(server, "carol", "active")
    await page.evaluate("window.show('dnd')")
    await status_is(server, "carol", "idle")
    await page.evaluate("window.away()")
    await status_is(server, "carol", "hidden")
    await page.evaluate("window.show(null)")
    await status_is(server, "carol", "active")
