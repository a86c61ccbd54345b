"""The team board (demo/) in chromium: two browser contexts are two users. pushgate and the
demo run in-process on an ephemeral port with a tmp SQLite file and a short polling
session timeout; every page fails the test on a console error."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

pytest.register_assert_rewrite("browser")
pytest_plugins = ["browser"]

from browser import _PAGES, BrowserPage  # noqa: E402

from demo.server import Running, start  # noqa: E402
from tests.conftest import make_config  # noqa: E402

SESSION_TIMEOUT = 3.0  # polling sessions of closed tabs end after this

DRAG_DEADLINE = 1.0


@pytest.fixture
async def demo(tmp_path) -> AsyncIterator[Running]:
    config = make_config(
        tmp_path, f'[polling]\nsession_timeout = "{SESSION_TIMEOUT}s"\nhold = "20s"\n'
    )
    running = await start(config, db_path=str(tmp_path / "demo.sqlite3"))
    yield running
    await running.close()


OpenBoard = Callable[..., Awaitable[BrowserPage]]


@pytest.fixture
async def open_board(browser, demo, request) -> AsyncIterator[OpenBoard]:
    """``await open_board(user, transport=None, context=None)``: a tab of the board page,
    connected and loaded; tabs of one user share a context (and so the cookie)."""
    contexts = {}
    pages: list[BrowserPage] = []

    async def open_(user: str, transport: str | None = None, board: int = 1) -> BrowserPage:
        if user not in contexts:
            contexts[user] = await browser.new_context(viewport={"width": 1280, "height": 800})
        page = BrowserPage(await contexts[user].new_page())
        await page.install()
        pages.append(page)
        request.node.stash.setdefault(_PAGES, []).append(page)
        query = f"?as={user}" + (f"&transport={transport}" if transport else "")
        await page.goto(f"{demo.url}/demo/board/{board}{query}")
        state = await page.wait_for_report("state", where=lambda e: e["state"] == "connected")
        if transport:
            assert state["transport"] == transport
        await page.wait_for_report("subscribed", where=lambda e: e["channel"] == "board")
        await page.wait_for_report("board-loaded")
        await page.wait_for_selector(".card")
        return page

    open_.contexts = contexts  # type: ignore[attr-defined]
    yield open_
    for context in contexts.values():
        await context.close()
    for page in pages:
        page.check()


def in_column(column: str, card: int) -> str:
    return f'.cards[data-column="{column}"] .card[data-id="{card}"]'


async def status_of(page: BrowserPage, user: str) -> str:
    return await page.get_attribute(f'#members [data-user="{user}"]', "data-status")


@pytest.mark.parametrize("transport", [None, "longpoll"])
async def test_a_drag_moves_the_card_on_every_screen(open_board, transport):
    alice = await open_board("alice", transport)
    bob = await open_board("bob", transport)
    assert await alice.is_visible(in_column("todo", 1))
    assert await bob.is_visible(in_column("todo", 1))

    await alice.locator('.card[data-id="1"]').drag_to(alice.locator('.cards[data-column="done"]'))
    dropped = time.monotonic()
    await bob.wait_for_selector(in_column("done", 1), timeout=DRAG_DEADLINE * 1000)
    assert time.monotonic() - dropped < DRAG_DEADLINE
    await alice.wait_for_selector(in_column("done", 1))
    await bob.wait_for_report("card", where=lambda e: e["id"] == 1 and e["version"] == 2)
    await alice.wait_for_report("card", where=lambda e: e["id"] == 1 and e["version"] == 2)
    assert await bob.locator(".card").count() == await alice.locator(".card").count() == 6

    # both drag the same card at the same moment: every screen ends in the server's order
    await alice.evaluate("window.board.moveCard(1, 'doing', null)")
    await bob.evaluate("window.board.moveCard(1, 'todo', null)")
    for page in (alice, bob):
        await page.wait_for_report("card", where=lambda e: e["id"] == 1 and e["version"] == 4)
    final = await alice.evaluate("fetch('/demo/api/boards/1').then(r => r.json())")
    column = next(c["column"] for c in final["cards"] if c["id"] == 1)
    for page in (alice, bob):
        await page.wait_for_selector(in_column(column, 1))
        order = await page.eval_on_selector_all(
            f'.cards[data-column="{column}"] .card', "nodes => nodes.map(n => n.dataset.id)"
        )
        assert order[-1] == "1"


async def test_assigning_rings_the_bell_on_every_tab_of_the_assignee(open_board):
    bob_tab1 = await open_board("bob")
    bob_tab2 = await open_board("bob")
    alice = await open_board("alice")
    for tab in (bob_tab1, bob_tab2):
        await tab.wait_for_report("bell", where=lambda e: e["unread"] == 0)
    start = {id(tab): tab.mark() for tab in (bob_tab1, bob_tab2)}

    await alice.click('.card[data-id="2"]')
    await alice.select_option("#f-assignee", "bob")
    await alice.click("#f-save")
    for tab in (bob_tab1, bob_tab2):
        await tab.wait_for_report("bell", where=lambda e: e["unread"] == 1, start=start[id(tab)])
        assert await tab.text_content("#bell-count") == "1"
        await tab.wait_for_selector(".toast >> text=Alice assigned you “Pricing page copy”")

    # a mention adds one more; opening the bell on one tab clears it on both
    await alice.click('.card[data-id="3"]')
    await alice.fill("#f-description", "@bob can you check the DNS?")
    await alice.click("#f-save")
    for tab in (bob_tab1, bob_tab2):
        await tab.wait_for_report("bell", where=lambda e: e["unread"] == 2, start=start[id(tab)])
    await bob_tab1.click("#bell")
    await bob_tab1.wait_for_selector(
        ".notification >> text=Alice mentioned you in “Set up status page”"
    )
    assert await bob_tab1.locator(".notification").count() == 2
    for tab in (bob_tab1, bob_tab2):
        await tab.wait_for_report("bell", where=lambda e: e["unread"] == 0, start=start[id(tab)])
        assert await tab.is_hidden("#bell-count")
    assert await alice.text_content("#bell-count") == "0"


@pytest.mark.parametrize("transport", [None, "longpoll"])
async def test_closing_every_tab_turns_the_dot_off(open_board, transport):
    alice = await open_board("alice", transport)
    bob_tab1 = await open_board("bob", transport)
    bob_tab2 = await open_board("bob", transport)
    await alice.wait_for_function(
        "document.querySelector('#members [data-user=bob]').dataset.status === 'online'"
    )
    assert await status_of(alice, "carol") == "offline"
    assert await status_of(bob_tab1, "alice") == "online"

    await bob_tab1.close()  # one tab of two: bob is still online
    await alice.wait_for_timeout(300 if transport is None else SESSION_TIMEOUT * 1000 + 500)
    assert await status_of(alice, "bob") == "online"

    closed = time.monotonic()
    await open_board.contexts["bob"].close()  # the last tab
    await alice.wait_for_function(
        "document.querySelector('#members [data-user=bob]').dataset.status === 'offline'",
        timeout=(SESSION_TIMEOUT + 2) * 1000,
    )
    assert time.monotonic() - closed < SESSION_TIMEOUT + 2
    assert bob_tab2.is_closed()


async def test_away_after_inactivity(open_board, demo):
    alice = await open_board("alice")
    bob = await open_board("bob")
    await bob.goto(f"{demo.url}/demo/board/1?away=1")  # this tab: away after 1 s idle
    await alice.wait_for_function(
        "document.querySelector('#members [data-user=bob]').dataset.status === 'away'"
    )
    await bob.mouse.move(200, 200)
    await bob.mouse.move(300, 300)
    await alice.wait_for_function(
        "document.querySelector('#members [data-user=bob]').dataset.status === 'online'",
        timeout=3000,
    )


async def test_after_a_drop_the_board_shows_what_it_missed(open_board, demo):
    bob = await open_board("bob")
    alice = await open_board("alice")

    async def server_api(method: str, params: dict) -> dict:
        return await alice.evaluate(
            """([method, params, key]) => fetch('/api/' + method, {method: 'POST',
                 headers: {'X-API-Key': key}, body: JSON.stringify(params)}).then(r => r.json())""",
            [method, params, "test-api-key"],
        )

    async def cut_and_change(card: int, column: str, lose_history: bool) -> dict:
        # the connection drops (4500: pushgate.js stays down until told to connect) ...
        mark = bob.mark()
        await server_api(
            "disconnect", {"user": "bob", "disconnect": {"code": 4500, "reason": "cut"}}
        )
        await bob.wait_for_report("state", where=lambda e: e["state"] == "disconnected", start=mark)
        # ... alice moves a card meanwhile ...
        await alice.evaluate(f"window.board.moveCard({card}, '{column}', null)")
        await alice.wait_for_report(
            "card", where=lambda e: e["id"] == card and e["column"] == column
        )
        assert not await bob.is_visible(in_column(column, card))
        if lose_history:
            await server_api("history_remove", {"channel": "board:1"})
        # ... and the network comes back
        await bob.evaluate("window.board.pg().connect()")
        again = await bob.wait_for_report(
            "subscribed", where=lambda e: e["channel"] == "board", start=mark
        )
        await bob.wait_for_selector(in_column(column, card))
        return again

    recovered = await cut_and_change(4, "done", lose_history=False)
    assert recovered["wasRecovering"] is True and recovered["recovered"] is True
    reloaded = await cut_and_change(5, "todo", lose_history=True)
    assert reloaded["wasRecovering"] is True and reloaded["recovered"] is False
