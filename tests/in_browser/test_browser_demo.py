"""The team board (demo/) in chromium: two browser contexts are two users. pushgate and the
demo run in-process on an ephemeral port with a tmp SQLite file and a short polling
session timeout; every page fails the test on a console error."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

pytest.register_assert_rewrite("browser")
pytest_plugins = ["browser"]

from browser import _PAGES, BrowserPage  # noqa: E402

from demo.server import Running, start  # noqa: E402
from demo.store import Store  # noqa: E402
from pushgate.transport.app_keys import HUB  # noqa: E402
from tests.e2e.test_demo import demo_config  # noqa: E402

SESSION_TIMEOUT = 3.0  # polling sessions of closed tabs end after this
OFFLINE_DELAY = 0.5  # presence.offline_delay: a user gone this long is offline
HANDOFF_TTL = 2.0  # a notification no tab shows this long is handed back to the backend

DRAG_DEADLINE = 1.0
AT_ONCE = 2.0  # seconds: the badge shows the network gone within this
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@pytest.fixture
async def demo(tmp_path) -> AsyncIterator[Running]:
    config = demo_config(
        tmp_path,
        f'[polling]\nsession_timeout = "{SESSION_TIMEOUT}s"\nhold = "20s"\n',
        offline_delay=f"{OFFLINE_DELAY}s",
    )
    running = await start(config, db_path=str(tmp_path / "demo.sqlite3"), handoff_ttl=HANDOFF_TTL)
    yield running
    await running.close()


OpenBoard = Callable[..., Awaitable[BrowserPage]]


@pytest.fixture
async def open_board(browser, demo, request) -> AsyncIterator[OpenBoard]:
    """``await open_board(user, transport=None, context=None)``: a tab of the board page,
    connected and loaded; tabs of one user share a context (and so the cookie)."""
    contexts = {}
    pages: list[BrowserPage] = []

    async def open_(
        user: str, transport: str | None = None, board: int = 1, viewport: dict | None = None
    ) -> BrowserPage:
        if user not in contexts:
            contexts[user] = await browser.new_context(viewport=viewport or DESKTOP)
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
        timeout=(SESSION_TIMEOUT + OFFLINE_DELAY + 2) * 1000,
    )
    assert time.monotonic() - closed < SESSION_TIMEOUT + OFFLINE_DELAY + 2
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


async def test_the_bell_hands_off_what_no_tab_showed(open_board, demo, caplog):
    """Every tab of bob closed: a card assigned to him is handed back to the backend (to
    e-mail it) after the hand-off TTL. A tab of his open in time shows it, and nothing is
    handed off — whether it was open when it came or opened a moment after."""
    import logging

    caplog.set_level(logging.INFO, logger="demo.hooks")
    alice = await open_board("alice")
    bob = await open_board("bob")
    await open_board.contexts.pop("bob").close()  # every tab of bob

    async def handoffs() -> list:
        return await alice.evaluate("fetch('/demo/api/handoffs?as=bob').then(r => r.json())")

    async def assign(card: int) -> None:
        await alice.evaluate(
            f"fetch('/demo/api/cards/{card}', {{method: 'PATCH', headers: {{'Content-Type': "
            f"'application/json'}}, body: JSON.stringify({{assignee: 'bob'}})}})"
        )

    await assign(2)
    assigned = time.monotonic()
    async with asyncio.timeout(HANDOFF_TTL + 3):
        while not await handoffs():  # the backend's table: polled, it has no event
            await asyncio.sleep(0.1)
    assert time.monotonic() - assigned >= HANDOFF_TTL - 0.1
    [handed] = await handoffs()
    assert handed["text"] == "Alice assigned you “Pricing page copy”"
    assert any("hand-off: bob did not see" in r.getMessage() for r in caplog.records)

    # bob's tab is open: it shows the next one (its toast), acknowledges it, no hand-off
    bob = await open_board("bob")
    await assign(3)
    await bob.wait_for_selector(".toast >> text=Alice assigned you “Set up status page”")
    # bob opens a tab just after the third one came: its bell shows it, no hand-off either
    await open_board.contexts.pop("bob").close()
    await assign(5)
    bob = await open_board("bob")
    await bob.wait_for_report("bell", where=lambda e: e["unread"] >= 1)
    await alice.wait_for_timeout(HANDOFF_TTL * 1000 + 1000)  # past every TTL
    assert len(await handoffs()) == 1


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


async def test_a_returning_user_shows_online_again_when_she_uses_the_board(open_board, demo):
    """carol went away, then comes back to a fresh board page and uses it: the others see
    her online again (her page used to read "am I away?" before the board had loaded)."""
    alice = await open_board("alice")
    carol = await open_board("carol")
    await carol.goto(f"{demo.url}/demo/board/1?away=1")  # this tab: away after 1 s idle
    await alice.wait_for_function(
        "document.querySelector('#members [data-user=carol]').dataset.status === 'away'"
    )
    mark = carol.mark()
    await carol.goto(f"{demo.url}/demo/board/1")  # back later: a new page, away after 60 s
    await carol.wait_for_report("board-loaded", start=mark)
    await carol.mouse.move(200, 200)
    await carol.mouse.move(300, 300)
    await alice.wait_for_function(
        "document.querySelector('#members [data-user=carol]').dataset.status === 'online'",
        timeout=3000,
    )
    assert await status_of(carol, "carol") == "online"


async def assert_tabs_whole(page: BrowserPage, viewport: dict) -> None:
    """Every board tab is shown whole: not clipped by the tab bar nor by the screen."""
    tabs = await page.eval_on_selector_all(
        ".board-tab",
        """tabs => tabs.map(t => {
             const box = t.getBoundingClientRect(), bar = t.parentElement.getBoundingClientRect();
             return {text: t.textContent, left: box.left, right: box.right,
                     barLeft: bar.left, barRight: bar.right,
                     clipped: t.scrollWidth > t.clientWidth};
           })""",
    )
    assert [t["text"] for t in tabs] == ["Website launch", "Mobile app"]
    for tab in tabs:
        assert not tab["clipped"], tab
        assert tab["barLeft"] - 0.5 <= tab["left"] and tab["right"] <= tab["barRight"] + 0.5, tab
        assert tab["left"] >= 0 and tab["right"] <= viewport["width"], tab


async def column_order(page: BrowserPage, column: str) -> list[str]:
    return await page.eval_on_selector_all(
        f'.cards[data-column="{column}"] .card', "nodes => nodes.map(n => n.dataset.id)"
    )


async def toasts(page: BrowserPage) -> list[str]:
    return [t.strip() for t in await page.locator(".toast").all_text_contents()]


async def test_a_move_made_offline_goes_back_then_happens_when_online(open_board):
    """Offline, a dragged card returns to its place with one plain message (it used to
    vanish, with two toasts saying "Failed to fetch"); back online, the move is made."""
    alice = await open_board("alice")
    bob = await open_board("bob")
    alice.allow("ERR_INTERNET_DISCONNECTED")
    todo = await column_order(alice, "todo")
    assert "1" in todo

    mark = alice.mark()
    await alice.context.set_offline(True)
    await alice.wait_for_selector('#conn[data-state="offline"]', timeout=AT_ONCE * 1000)
    assert (await alice.text_content("#conn-state")).strip() == "Offline"

    await alice.locator('.card[data-id="1"]').drag_to(alice.locator('.cards[data-column="done"]'))
    await alice.wait_for_selector(".toast")
    await alice.wait_for_selector(in_column("todo", 1), timeout=1000)
    await alice.wait_for_report("move-failed", where=lambda e: e["id"] == 1, start=mark)
    assert await column_order(alice, "todo") == todo  # back in its place
    [message] = await toasts(alice)
    assert "offline" in message.lower() and "Write the launch blog post" in message
    assert "fetch" not in message.lower()
    assert await bob.is_visible(in_column("todo", 1))

    # an edit made offline: the dialog stays open with what was typed, and says why
    await alice.click('.card[data-id="3"]')
    await alice.fill("#f-title", "Set up the status page")
    await alice.click("#f-save")
    problem = await alice.wait_for_selector("#dialog-error:visible")
    assert "offline" in (await problem.text_content()).lower()
    assert await alice.input_value("#f-title") == "Set up the status page"
    await alice.click("#f-cancel")

    await alice.context.set_offline(False)
    await alice.wait_for_report(
        "card", where=lambda e: e["id"] == 1 and e["version"] == 2, start=mark
    )
    for page in (alice, bob):
        await page.wait_for_selector(in_column("done", 1))
    assert await alice.get_attribute("#conn", "data-state") == "connected"


async def test_a_move_the_server_fails_goes_back_and_can_be_tried_again(open_board, monkeypatch):
    """A move is a client RPC the backend answers (the rpc proxy); when it cannot save it,
    the card goes back, the message says so in plain words and offers to try again."""
    alice = await open_board("alice")

    def locked(*args, **kwargs):
        raise RuntimeError("database is locked")

    monkeypatch.setattr(Store, "update_card", locked)
    mark = alice.mark()
    await alice.locator('.card[data-id="2"]').drag_to(alice.locator('.cards[data-column="doing"]'))
    await alice.wait_for_selector(".toast")
    await alice.wait_for_selector(in_column("todo", 2), timeout=1000)
    [message] = await toasts(alice)
    assert "Pricing page copy" in message
    assert "database" not in message and "500" not in message
    failed = await alice.wait_for_report("move-failed", where=lambda e: e["id"] == 2, start=mark)
    assert (failed["status"], failed["retry"]) == (500, "button")

    monkeypatch.undo()
    await alice.locator(".toast").get_by_role("button", name="Try again").click()
    await alice.wait_for_report("card", where=lambda e: e["id"] == 2 and e["version"] == 2)
    await alice.wait_for_selector(in_column("doing", 2))


async def test_the_page_needs_no_token_and_a_move_is_an_rpc(open_board, demo):
    """The board page connects with its cookie only (pushgate's connect proxy asks the demo
    backend), and a drag is a client RPC through pushgate, not an HTTP request."""
    alice = await open_board("alice")
    users = {client.user for client in demo.app[HUB].clients.values()}
    assert "alice" in users
    alice.allow("status of 404")
    status = await alice.evaluate("fetch('/demo/api/token').then(r => r.status)")
    assert status == 404  # there is no token endpoint to ask

    requests: list[str] = []

    async def spy(route):
        requests.append(route.request.method)
        await route.continue_()

    await alice.route("**/demo/api/**", spy)
    await alice.locator('.card[data-id="1"]').drag_to(alice.locator('.cards[data-column="done"]'))
    await alice.wait_for_report("card", where=lambda e: e["id"] == 1 and e["version"] == 2)
    await alice.wait_for_selector(in_column("done", 1))
    assert "PATCH" not in requests


async def test_the_other_screens_show_who_moved_a_card(open_board):
    alice = await open_board("alice")
    bob = await open_board("bob")
    await alice.locator('.card[data-id="1"]').drag_to(alice.locator('.cards[data-column="done"]'))

    actor = bob.locator(f'{in_column("done", 1)} .card-actor[data-user="alice"]')
    await actor.wait_for(timeout=5000)
    assert await actor.get_attribute("aria-label") == "Alice Chen moved this card to Done"
    await bob.wait_for_selector("#announcer >> text=Alice Chen moved “Write the launch blog post”")
    await alice.wait_for_report("card", where=lambda e: e["id"] == 1 and e["version"] == 2)
    assert await alice.locator(".card-actor").count() == 0  # not on the mover's own screen


async def test_on_a_phone_an_offline_move_goes_back_and_the_others_see_who_made_it(open_board):
    """390x844: every board tab is whole, the badge shows offline at once, "Move to" made
    offline goes back and happens once online, and alice sees bob's face on the card."""
    alice = await open_board("alice")
    bob = await open_board("bob", viewport=PHONE)
    bob.allow("ERR_INTERNET_DISCONNECTED")
    await assert_tabs_whole(bob, PHONE)

    mark = bob.mark()
    await bob.context.set_offline(True)
    await bob.wait_for_selector('#conn[data-state="offline"]', timeout=AT_ONCE * 1000)
    await bob.click('.card[data-id="2"]')
    await bob.select_option("#f-column", "doing")
    await bob.click("#f-save")
    await bob.wait_for_report("move-failed", where=lambda e: e["id"] == 2, start=mark)
    await bob.wait_for_selector(in_column("todo", 2), timeout=1000)
    toast = await bob.locator(".toast").bounding_box()
    assert toast["x"] >= 0 and toast["x"] + toast["width"] <= PHONE["width"]

    await bob.context.set_offline(False)
    await bob.wait_for_selector(in_column("doing", 2))
    actor = alice.locator(f'{in_column("doing", 2)} .card-actor[data-user="bob"]')
    await actor.wait_for(timeout=5000)
    assert await actor.get_attribute("aria-label") == "Bob Li moved this card to Doing"


@pytest.mark.parametrize("viewport", [{"width": 800, "height": 700}, PHONE])
async def test_the_board_fits_narrow_screens(open_board, viewport):
    """Board tabs are never cut, columns fill the board's height, the card dialog speaks
    of people and times (no internal version number)."""
    alice = await open_board("alice", viewport=viewport)
    await assert_tabs_whole(alice, viewport)
    bottoms = await alice.eval_on_selector_all(
        ".column", "cols => cols.map(c => c.getBoundingClientRect().bottom)"
    )
    assert all(viewport["height"] - 40 <= b <= viewport["height"] for b in bottoms), bottoms
    await alice.click('.card[data-id="1"]')
    meta = await alice.text_content("#dialog-meta")
    assert "version" not in meta.lower()
