"""The team board's backend (demo/), without a browser: pushgate and the demo in-process on
an ephemeral port with a tmp SQLite file; cards with versions, notifications on assign and
@mention, what a subscribed centrifuge-python client receives through pushgate, and what
pushgate asks the backend through its proxies (the cookie's user, board members, moves)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from centrifuge import Client, ReplyError

from demo.server import Running, start
from tests.centrifuge_helpers import Recorder
from tests.conftest import make_config

#: what the demo needs of pushgate beyond the tests' base configuration (pushgate.toml
#: has the same): status channels for the dots, events (to the demo's own hook) for the
#: bell's hand-offs
DEMO_CONFIG = """
[[namespace]]
name = "status"
allow_subscribe_for_client = true
[events]
enabled = true
webhook_secret = "demo-webhook-secret"
retry_min_delay = "0.05s"
retry_max_delay = "0.5s"
"""


def demo_config(tmp_path, extra: str = "", offline_delay: str = "0.5s"):
    return make_config(
        tmp_path,
        DEMO_CONFIG + extra,
        presence__status_namespace="status",
        presence__offline_delay=offline_delay,
    )


@pytest.fixture
async def demo(tmp_path) -> AsyncIterator[Running]:
    running = await start(
        demo_config(tmp_path), db_path=str(tmp_path / "demo.sqlite3"), handoff_ttl=0.5
    )
    yield running
    await running.close()


class As:
    """The demo's HTTP API as one user (the ``demo_user`` cookie)."""

    def __init__(self, demo: Running, user: str | None) -> None:
        self.url = demo.url + "/demo"
        self.user = user
        jar = aiohttp.CookieJar(unsafe=True)  # cookies of 127.0.0.1 too
        self.session = aiohttp.ClientSession(cookie_jar=jar)
        if user:
            jar.update_cookies({"demo_user": user})

    async def call(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        async with self.session.request(method, self.url + path, json=body) as response:
            text = await response.text()
            assert response.status == status, (response.status, text)
            return (
                await response.json(content_type=None) if "json" in response.content_type else text
            )

    async def close(self) -> None:
        await self.session.close()


@pytest.fixture
async def users(demo) -> AsyncIterator[Any]:
    made: list[As] = []

    def make(user: str | None) -> As:
        made.append(As(demo, user))
        return made[-1]

    yield make
    for user in made:
        await user.close()


def ws_url(demo: Running) -> str:
    return demo.url.replace("http", "ws") + "/connection/websocket"


async def client_for(demo: Running, api: As) -> tuple[Client, Recorder]:
    """A centrifuge-python connection with the user's cookie and no token: pushgate's
    connect proxy asks the demo backend who that is."""
    events = Recorder()
    cookie = {"Cookie": f"demo_user={api.user}"}
    client = Client(ws_url(demo), events=events, headers=cookie)
    await client.connect()
    await events.wait_for("connected")
    return client, events


async def subscribe(client: Client, channel: str) -> Recorder:
    events = Recorder()
    sub = client.new_subscription(channel, events=events)
    await sub.subscribe()
    await sub.ready(timeout=5)
    return events


async def test_card_create_move_edit_carry_versions(demo, users):
    alice = users("alice")
    board = await alice.call("GET", "/api/boards/1")
    assert [m["id"] for m in board["members"]] == ["alice", "bob", "carol", "dave"]
    assert all(c["version"] == 1 for c in board["cards"])

    created = await alice.call(
        "POST", "/api/boards/1/cards", {"title": "Ship it", "column": "todo"}, status=201
    )
    card = created["card"]
    assert (card["version"], card["column"], created["published"]) == (1, "todo", True)
    moved = (await alice.call("PATCH", f"/api/cards/{card['id']}", {"column": "doing"}))["card"]
    assert (moved["column"], moved["version"]) == ("doing", 2)
    edited = (await alice.call("PATCH", f"/api/cards/{card['id']}", {"title": "Ship it today"}))[
        "card"
    ]
    assert (edited["title"], edited["column"], edited["version"]) == ("Ship it today", "doing", 3)

    # "before": lands just before that card of the column, only the moved card changes
    doing = [
        c for c in (await alice.call("GET", "/api/boards/1"))["cards"] if c["column"] == "doing"
    ]
    first = min(doing, key=lambda c: c["position"])
    again = (
        await alice.call(
            "PATCH", f"/api/cards/{card['id']}", {"column": "doing", "before": first["id"]}
        )
    )["card"]
    assert again["position"] < first["position"] and again["version"] == 4
    after = {c["id"]: c for c in (await alice.call("GET", "/api/boards/1"))["cards"]}
    assert after[first["id"]]["version"] == first["version"]

    deleted = (await alice.call("DELETE", f"/api/cards/{card['id']}"))["card"]
    assert deleted["deleted"] is True and deleted["version"] == 5
    await alice.call("PATCH", f"/api/cards/{card['id']}", {"title": "x"}, status=404)

    # refusals
    await alice.call("PATCH", "/api/cards/1", {"column": "later"}, status=400)
    await alice.call("PATCH", "/api/cards/1", {"assignee": "erin"}, status=400)  # not a member
    await alice.call("POST", "/api/boards/1/cards", {"title": "  "}, status=400)
    await users("erin").call("GET", "/api/boards/1", status=403)
    await users(None).call("GET", "/api/boards/1", status=401)
    await users(None).call("GET", "/api/token", status=404)  # no tokens: the cookie does


async def test_pushgate_asks_the_backend_who_connects_listens_and_moves(demo, users):
    """The connect proxy (the cookie's user), the subscribe proxy (board members only) and
    the rpc proxy (move_card: saved, published to the board, answered with the card)."""
    alice, erin = users("alice"), users("erin")
    nobody_events = Recorder()
    nobody = Client(ws_url(demo), events=nobody_events)
    await nobody.connect()
    gone = await nobody_events.wait_for("disconnected")
    assert (gone.code, gone.reason) == (4501, "pick a user first")

    client, _ = await client_for(demo, alice)
    stranger, _ = await client_for(demo, erin)
    try:
        board = await subscribe(client, "board:1")
        refused = Recorder()
        await stranger.new_subscription("board:1", events=refused).subscribe()
        assert (await refused.wait_for("unsubscribed")).code == 403

        moved = await client.rpc("move_card", {"id": 1, "column": "doing", "before": None})
        card = moved.data["card"]
        assert (card["id"], card["column"], card["version"]) == (1, "doing", 2)
        pub = await board.wait_for("publication")
        assert (pub.pub.data["card"]["version"], pub.pub.data["actor"]) == (2, "alice")
        saved = next(c for c in (await alice.call("GET", "/api/boards/1"))["cards"] if c["id"] == 1)
        assert saved["column"] == "doing"

        for data, code in (
            ({"id": 1, "column": "later"}, 400),
            ({"id": 999, "column": "done"}, 404),
            ({"column": "done"}, 400),
        ):
            with pytest.raises(ReplyError) as failed:
                await client.rpc("move_card", data)
            assert failed.value.code == code
        with pytest.raises(ReplyError) as not_member:
            await stranger.rpc("move_card", {"id": 1, "column": "done"})
        assert not_member.value.code == 403
    finally:
        await client.disconnect()
        await stranger.disconnect()
        await nobody.disconnect()

    # only pushgate may call the proxy endpoints: it sends the key, a browser cannot
    for path in ("connect", "subscribe", "rpc"):
        body = {"client": "x", "user": "alice", "method": "move_card", "channel": "board:1"}
        async with erin.session.post(f"{erin.url}/proxy/{path}", json=body) as response:
            assert response.status == 403


async def test_assign_and_mention_create_notifications(demo, users):
    alice, bob, carol = users("alice"), users("bob"), users("carol")
    await alice.call("PATCH", "/api/cards/2", {"assignee": "bob"})
    notes = await bob.call("GET", "/api/notifications")
    assert notes["unread"] == 1
    assert notes["items"][0]["kind"] == "assigned"
    assert notes["items"][0]["text"] == "Alice assigned you “Pricing page copy”"

    # a mention by id or first name; the author and repeated mentions notify no one
    await alice.call(
        "PATCH", "/api/cards/2", {"description": "@Carol has numbers, @alice writes, @bob"}
    )
    carol_notes = await carol.call("GET", "/api/notifications")
    assert [n["kind"] for n in carol_notes["items"]] == ["mention"]
    assert (await alice.call("GET", "/api/notifications"))["items"] == []
    bob_notes = await bob.call("GET", "/api/notifications")
    assert [n["kind"] for n in bob_notes["items"]] == ["mention", "assigned"]
    await alice.call("PATCH", "/api/cards/2", {"description": "@carol has numbers, @bob"})
    assert len((await carol.call("GET", "/api/notifications"))["items"]) == 1

    # assigning to oneself is not news; a new card may assign and mention at once
    await bob.call("PATCH", "/api/cards/3", {"assignee": "bob"})
    await bob.call(
        "POST", "/api/boards/1/cards", {"title": "Ask @dave", "assignee": "carol"}, status=201
    )
    assert (await users("dave").call("GET", "/api/notifications"))["unread"] == 1
    assert (await carol.call("GET", "/api/notifications"))["unread"] == 2

    # read positions are pushgate's: bob's page marks the newest one read (pushgate.js's
    # markRead; the server API's mark_read here), and everything up to it is read
    newest = bob_notes["items"][0]
    assert newest["offset"] and newest["epoch"]
    await mark_read(demo, "bob", newest["offset"], newest["epoch"])
    notes = await bob.call("GET", "/api/notifications")
    assert notes["unread"] == 0 and all(n["read"] for n in notes["items"])
    await alice.call("PATCH", "/api/cards/1", {"assignee": "bob"})
    notes = await bob.call("GET", "/api/notifications")
    assert notes["unread"] == 1 and [n["read"] for n in notes["items"]] == [False, True, True]


async def mark_read(demo: Running, user: str, offset: int, epoch: str) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            demo.url + "/api/mark_read",
            json={
                "user": user,
                "channel": f"notifications:#{user}",
                "offset": offset,
                "epoch": epoch,
            },
            headers={"X-API-Key": "test-api-key"},
        ) as response,
    ):
        assert "result" in await response.json(), await response.text()


async def test_changes_reach_subscribers_through_pushgate(demo, users):
    alice, bob = users("alice"), users("bob")
    client, _ = await client_for(demo, bob)  # bob's cookie, no token
    try:
        board = await subscribe(client, "board:1")
        bell = await subscribe(client, "notifications:#bob")
        await alice.call("PATCH", "/api/cards/1", {"column": "done", "assignee": "bob"})
        pub = await board.wait_for("publication")
        assert pub.pub.data["type"] == "card"
        assert pub.pub.data["actor"] == "alice"
        assert pub.pub.data["card"]["id"] == 1
        assert (pub.pub.data["card"]["column"], pub.pub.data["card"]["version"]) == ("done", 2)
        assert pub.pub.info is None  # from the server API, not from a client
        note = await bell.wait_for("publication")
        assert note.pub.data["type"] == "notification"
        assert note.pub.data["notification"]["kind"] == "assigned"
        assert note.pub.tags == {"pushgate.ack": "0.5"}  # shown in time, or handed off
        await client.rpc(
            "pushgate.ack", {"channel": "notifications:#bob", "offset": note.pub.offset}
        )
        await client.rpc(
            "pushgate.mark_read",
            {
                "channel": "notifications:#bob",
                "offset": note.pub.offset,
                "epoch": (await bob.call("GET", "/api/notifications"))["items"][0]["epoch"],
            },
        )
        assert (await bob.call("GET", "/api/notifications"))["unread"] == 0

        # the dots: pushgate's status of each member, live on their status channels
        status = await subscribe(client, "status:bob")
        [subscribed] = status.of("subscribed")
        assert subscribed.data["status"] == "active"
        await client.rpc("pushgate.presence", {"state": "idle"})
        idle = await status.wait_for("publication")
        assert idle.pub.data["status"] == "idle"
        members = {m["id"]: m for m in (await alice.call("GET", "/api/boards/1"))["members"]}
        assert (members["bob"]["online"], members["bob"]["status"]) == (True, "idle")
        assert (members["carol"]["online"], members["carol"]["status"]) == (False, "offline")
        await asyncio.sleep(1)  # past the hand-off TTL: nothing was handed off
        assert await bob.call("GET", "/api/handoffs") == []
    finally:
        await client.disconnect()


async def test_concurrent_moves_converge_on_the_last_version(demo, users):
    alice, bob = users("alice"), users("bob")
    client, _ = await client_for(demo, alice)
    try:
        board = await subscribe(client, "board:1")
        rng = random.Random(5)
        moves = [
            (alice if n % 2 else bob).call(
                "PATCH", "/api/cards/4", {"column": rng.choice(["todo", "doing", "done"])}
            )
            for n in range(20)
        ]
        answers = await asyncio.gather(*moves)
        # the database ordered them: one version each, 2..21
        assert sorted(a["card"]["version"] for a in answers) == list(range(2, 22))
        await board.wait_for("publication", lambda c: c.pub.data["card"]["version"] == 21)
        pubs = [c.pub.data["card"] for c in board.of("publication")]
        assert sorted(p["version"] for p in pubs) == list(range(2, 22))
        # a screen that applies only newer versions ends where the server ended,
        # whatever order the publications and the HTTP answers came in
        for order in (pubs, list(reversed(pubs)), [a["card"] for a in answers]):
            seen: dict[str, Any] = {"version": 1}
            for card in order:
                if card["version"] > seen["version"]:
                    seen = card
            final = next(
                c for c in (await alice.call("GET", "/api/boards/1"))["cards"] if c["id"] == 4
            )
            assert (seen["column"], seen["version"]) == (final["column"], final["version"])
            assert final["version"] == 21
    finally:
        await client.disconnect()


async def test_pages_and_redirects(demo, users):
    anyone = users(None)
    async with anyone.session.get(demo.url + "/", allow_redirects=False) as response:
        assert response.status == 302 and response.headers["Location"] == "/demo/"
    html = await anyone.call("GET", "/")
    assert "Who are you?" in html
    async with anyone.session.get(demo.url + "/demo/board/1?as=bob") as response:
        assert response.status == 200
        assert "/static/pushgate.js" in await response.text()
        assert response.cookies["demo_user"].value == "bob"
    me = await anyone.call("GET", "/api/me")
    assert me["user"] == "bob" and [b["id"] for b in me["boards"]] == [1, 2]
    async with anyone.session.get(demo.url + "/static/pushgate.js") as response:
        assert response.status == 200


async def test_a_notification_no_tab_shows_is_handed_back_once(demo, users):
    alice, bob = users("alice"), users("bob")
    await alice.call("PATCH", "/api/cards/2", {"assignee": "bob"})  # bob has no tab open
    async with asyncio.timeout(5):
        while not (handed := await bob.call("GET", "/api/handoffs")):
            await asyncio.sleep(0.05)
    [handoff] = handed
    assert handoff["text"] == "Alice assigned you “Pricing page copy”"
    assert (
        handoff["notification"] == (await bob.call("GET", "/api/notifications"))["items"][0]["id"]
    )


async def test_the_hook_refuses_what_pushgate_did_not_sign(demo):
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            demo.url + "/demo/hooks/pushgate",
            data=b'{"events": []}',
            headers={"X-Pushgate-Timestamp": "1", "X-Pushgate-Signature": "sha256=00"},
        ) as response,
    ):
        assert response.status == 401
