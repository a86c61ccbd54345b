"""The admin page in chromium: login, live numbers, lookups, disconnect, publish, logout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.centrifuge_helpers import subscribed

pytest.register_assert_rewrite("browser")
pytest_plugins = ["browser"]

from tests.centrifuge_helpers import clients_fixture  # noqa: E402,F401

ADMIN = """
[admin]
password = "admin-pass"
stats_interval = "0.5s"
"""

SCREENSHOT = Path(__file__).parent.parent / "docs" / "img" / "admin.png"


async def test_admin_page(make_server, server_config, page, clients):
    server = await make_server(server_config(ADMIN))
    async with server.session.get(server.url + "/admin/api/overview") as response:
        assert response.status == 401  # not logged in
    page.allow(r"status of 401 \(Unauthorized\)")  # the wrong password, on purpose
    await page.goto(server.url + "/admin")
    await page.fill("input[name=password]", "wrong")
    await page.click("button")
    await page.wait_for_selector("#error:has-text('Wrong password')")
    await page.fill("input[name=password]", "admin-pass")
    await page.click("button")
    await page.wait_for_selector("#t-nodes")
    # live: the page is itself a pushgate client and numbers follow connections
    await page.wait_for_function("document.getElementById('live').textContent.startsWith('live')")
    alice, alice_events = clients(server, "alice")
    await alice.connect()
    _, events = await subscribed(alice, "board:admin")
    # alice plus the admin page's own connection
    await page.wait_for_function("Number(document.body.dataset.clients) >= 2", timeout=10000)

    await page.fill("#publish-channel", "board:admin")
    await page.fill("#publish-data", '{"from": "admin"}')
    await page.click("#publish-form button")
    await events.wait_for("publication", lambda c: c.pub.data == {"from": "admin"})
    await page.wait_for_function(
        "document.getElementById('publish-out').textContent.includes('offset 1')"
    )

    await page.fill("#channel-name", "board:admin")
    await page.click("#channel-form button")
    await page.wait_for_function(
        "document.getElementById('channel-out').textContent.includes('subscribers\":')"
    )
    channel_text = await page.text_content("#channel-out")
    assert (
        '"subscribers": 1' in channel_text
        and '"alice"' in channel_text
        and '"from": "admin"' in channel_text
    )

    await page.fill("#user-name", "alice")
    await page.click("#user-form button")
    await page.wait_for_function(
        "document.getElementById('user-out').textContent.includes('websocket')"
    )
    assert '"online": true' in await page.text_content("#user-out")
    if os.environ.get("PUSHGATE_SCREENSHOTS"):  # `make screenshots` refreshes docs/img
        await page.set_viewport_size({"width": 1280, "height": 800})
        await page.screenshot(path=str(SCREENSHOT))
    await page.click("#disconnect")
    gone = await alice_events.wait_for("disconnected", timeout=5)
    assert gone.code == 3503
    await page.wait_for_function(
        "document.getElementById('user-out').textContent.includes('was disconnected')"
    )

    # logging out ends the session on the server: the page shows the login again and
    # the cookie the browser held no longer opens anything
    cookie = next(c for c in await page.context.cookies() if c["name"] == "pushgate_admin")
    await page.click("#logout")
    await page.wait_for_selector("input[name=password]")
    async with server.session.get(
        server.url + "/admin/api/overview", cookies={"pushgate_admin": cookie["value"]}
    ) as response:
        assert response.status == 401
