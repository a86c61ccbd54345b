"""A page that only listens, with a plain browser EventSource on ``/connection/uni_sse``.

No client library: the page parses the messages itself. When the stream is cut the
browser reconnects on its own and sends the last event id back; pushgate recovers what
was missed from it.
"""

from __future__ import annotations

import json

import pytest

pytest.register_assert_rewrite("browser")
pytest_plugins = ["browser"]

from browser import html_page, js  # noqa: E402

PAGE_SCRIPT = """
const url = SERVER_URL + "/connection/uni_sse?cf_connect=" +
  encodeURIComponent(JSON.stringify({token: TOKEN}));
const source = new EventSource(url);
source.onmessage = event => {
  const message = JSON.parse(event.data);
  if (message.connect) {
    for (const [channel, sub] of Object.entries(message.connect.subs || {})) {
      report("subscribed", {channel, recovered: !!sub.recovered,
                            wasRecovering: !!sub.was_recovering});
      for (const pub of sub.publications || []) {
        report("publication", {data: pub.data, offset: pub.offset, recovered: true});
      }
    }
  } else if (message.pub) {
    report("publication", {data: message.pub.data, offset: message.pub.offset});
  } else if (message.disconnect) {
    report("disconnect", message.disconnect);
    if (!message.disconnect.reconnect) source.close();
  }
};
"""


async def test_event_source_receives_and_recovers_across_a_cut(
    make_server, server_config, pages, page
):
    server = await make_server(server_config(f"[server]\nallowed_origins = [{js(pages.origin)}]\n"))
    user = "listener"
    token = server.token(user, channels=["board:uni"])
    consts = f"const SERVER_URL = {js(server.url)};\nconst TOKEN = {js(token)};\n"
    pages.add("/listen.html", html_page(consts + PAGE_SCRIPT))
    page.allow("uni_sse")  # the browser logs the stream it lost when cut
    await page.goto(pages.url("/listen.html"))
    await page.wait_for_report("subscribed")

    for n in range(1, 11):
        await server.publish("board:uni", n)
    await page.wait_for_report("publication", where=lambda e: e["data"] == 10)

    mark = page.mark()
    await server.api("disconnect", {"user": user, "disconnect": {"code": 4000, "reason": "cut"}})
    bye = await page.wait_for_report("disconnect", start=mark)
    assert bye == {**bye, "code": 4000, "reconnect": True}
    for n in range(11, 21):
        await server.publish("board:uni", n)
    again = await page.wait_for_report("subscribed", start=mark, timeout=10)
    assert again["recovered"] is True and again["wasRecovering"] is True
    await server.publish("board:uni", "end")
    await page.wait_for_report("publication", where=lambda e: e["data"] == "end")

    received = [e["data"] for e in page.reports_of("publication")]
    assert received == [*range(1, 21), "end"]
    offsets = [e["offset"] for e in page.reports_of("publication")]
    assert offsets == sorted(set(offsets))
    # a terminal disconnect closes the page's EventSource for good
    await server.api("disconnect", {"user": user})
    final = await page.wait_for_report("disconnect", where=lambda e: e["code"] == 3503)
    assert final["reconnect"] is False
    assert json.loads(await page.evaluate("JSON.stringify(source.readyState)")) == 2
