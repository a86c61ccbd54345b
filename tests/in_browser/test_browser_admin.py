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

SCREENSHOT = Path(__file__).parents[2] / "docs" / "img" / "admin.png"


async def test_admin_page(make_server, server_config, page, clients):
    server = await make_server(server_config(ADMIN))
    async with server.session.get(server.url + "/admin/api/overview") as response:
        assert response.status == 401  # not logged in
    page.allow(r"status of 401 \(Unauthorized\)")  # the wrong password, on purpose
    page.allow(r"status of 400 \(Bad Request\)")  # a channel of no namespace, on purpose
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
    await page.wait_for_selector("#channel-out .status:has-text('1 subscriber in board:admin')")
    assert await page.text_content("#channel-out .chips") == "alice"
    cells = await page.locator("#channel-out td").all_text_contents()
    assert cells[0] == "1" and '"from": "admin"' in cells[1]

    await page.fill("#user-name", "alice")
    await page.click("#user-form button")
    await page.wait_for_selector("#user-out .status:has-text('alice is online on 1 connection')")
    assert "websocket" in await page.locator("#user-out td").all_text_contents()
    if os.environ.get("PUSHGATE_SCREENSHOTS"):  # `make screenshots` refreshes docs/img
        await page.set_viewport_size({"width": 1280, "height": 800})
        await page.screenshot(path=str(SCREENSHOT))
    await page.click("#disconnect")
    gone = await alice_events.wait_for("disconnected", timeout=5)
    assert gone.code == 3503
    await page.wait_for_selector("#user-out:has-text('alice was disconnected')")
    # an offline user says when they were last seen, in words; an unknown one says so
    await page.click("#user-form button")
    await page.wait_for_selector("#user-out .status:has-text('alice is offline, last seen')")
    assert " ago (" in await page.text_content("#user-out .status")
    await page.fill("#user-name", "nobody-ever")
    await page.click("#user-form button")
    await page.wait_for_selector("#user-out .status:has-text('nobody-ever has not been seen')")
    await page.fill("#channel-name", "nope:1")
    await page.click("#channel-form button")
    await page.wait_for_selector("#channel-out .error:has-text('Could not look that up')")

    # logging out ends the session on the server: the page shows the login again and
    # the cookie the browser held no longer opens anything
    cookie = next(c for c in await page.context.cookies() if c["name"] == "pushgate_admin")
    await page.click("#logout")
    await page.wait_for_selector("input[name=password]")
    async with server.session.get(
        server.url + "/admin/api/overview", cookies={"pushgate_admin": cookie["value"]}
    ) as response:
        assert response.status == 401


async def login(page, url: str) -> None:
    await page.goto(url + "/admin")
    await page.fill("input[name=password]", "admin-pass")
    await page.click("button")
    await page.wait_for_function("document.getElementById('live').textContent.startsWith('live')")


async def test_users_are_counted_once_across_nodes_and_the_page_fits_a_phone(
    make_server, redis_config, page, clients
):
    """Two nodes of one cluster; three users, two of them on both nodes (five
    connections): the Users tile says 3, not the nodes' 2 + 3. On a 390 px phone the page
    is no wider than the screen."""
    config = redis_config(ADMIN)
    first, second = await make_server(config), await make_server(config)
    for server, user in (
        (first, "u1"),
        (first, "u2"),
        (second, "u2"),
        (second, "u3"),
        (second, "u1"),
    ):
        client, _ = clients(server, user)
        await client.connect()
    await page.set_viewport_size({"width": 390, "height": 844})
    await login(page, first.url)
    await page.wait_for_function("document.body.dataset.users === '3'", timeout=15000)
    assert await page.text_content("#t-users") == "3"
    # both nodes' own rows are there; their users add up to more than the cluster's
    await page.wait_for_function(
        "document.querySelectorAll('#nodes tr').length === 2", timeout=15000
    )
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page is {width} px wide on a 390 px screen"
    await page.fill("#user-name", "u2")
    await page.click("#user-form button")
    await page.wait_for_selector("#user-out .status:has-text('u2 is online on 2 connections')")
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"with a lookup shown the page is {width} px wide"
