"""End to end with the real centrifuge-js client (npm ``centrifuge``) in Node.

Each ``JsClient`` is one ``node tests/js/driver.mjs`` process holding one Centrifuge
client that talks to a real pushgate server over a real socket. Tests send it JSON
commands and wait, with a timeout, for the JSON events it reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

TESTS = Path(__file__).parents[1]
DRIVER = TESTS / "js" / "driver.mjs"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(
    NODE is None or not (TESTS / "node_modules" / "centrifuge").is_dir(),
    reason="needs node and tests/node_modules (run `cd tests && npm install`)",
)

WAIT = 5.0

Event = dict
Predicate = Callable[[Event], bool]


class JsClient:
    """One centrifuge-js client in a Node process, driven over stdin/stdout."""

    def __init__(self, name: str, build: str = "") -> None:
        self.name = name
        #: "protobuf": the driver runs centrifuge-js's Protobuf build
        self.build = build
        self.events: list[Event] = []
        self.token_provider: Callable[[Event], str | None] | None = None
        #: answers getState: the (offset, epoch) the app loaded its state at
        self.state_provider: Callable[[Event], tuple[int, str]] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._changed = asyncio.Event()
        self._ids = 0
        self._reader: asyncio.Task | None = None
        self._stderr: asyncio.Task | None = None
        self.stderr = b""

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            NODE,
            str(DRIVER),
            *((self.build,) if self.build else ()),
            cwd=str(TESTS),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read())
        self._stderr = asyncio.create_task(self._read_stderr())
        await self.wait(lambda e: e["event"] == "ready", timeout=10)

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        while line := await self._proc.stdout.readline():
            event = json.loads(line)
            event["t"] = time.monotonic()
            self.events.append(event)
            if event["event"] == "need_token":
                self._answer_token(event)
            elif event["event"] == "need_state":
                self._answer_state(event)
            self._changed.set()
        self.events.append({"event": "exited", "t": time.monotonic()})
        self._changed.set()

    async def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        self.stderr = await self._proc.stderr.read()

    def _answer_token(self, event: Event) -> None:
        if self.token_provider is None:
            self.send({"cmd": "token", "req": event["req"], "error": "no token provider"})
            return
        token = self.token_provider(event)
        if token is None:
            self.send({"cmd": "token", "req": event["req"], "unauthorized": True})
        else:
            self.send({"cmd": "token", "req": event["req"], "token": token})

    def _answer_state(self, event: Event) -> None:
        assert self.state_provider is not None, "getState asked without a state provider"
        offset, epoch = self.state_provider(event)
        self.send({"cmd": "state_position", "req": event["req"], "offset": offset, "epoch": epoch})

    def send(self, message: dict) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(message).encode() + b"\n")

    def _describe(self) -> str:
        tail = "\n".join(json.dumps(e) for e in self.events[-30:])
        return f"[{self.name}] last events:\n{tail}\nstderr: {self.stderr.decode()[-2000:]}"

    async def wait(self, predicate: Predicate, timeout: float = WAIT, start: int = 0) -> Event:
        """The first event from index ``start`` on that matches, waiting up to ``timeout``."""
        deadline = asyncio.get_running_loop().time() + timeout
        index = start
        while True:
            while index < len(self.events):
                event = self.events[index]
                index += 1
                if predicate(event):
                    return event
                if event["event"] == "exited":
                    pytest.fail(f"node driver exited while waiting\n{self._describe()}")
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                pytest.fail(f"timed out after {timeout}s waiting for an event\n{self._describe()}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def call(self, cmd: str, timeout: float = WAIT, **args: object) -> Event:
        """Send a command; return its ``result`` or ``reply_error`` event."""
        self._ids += 1
        ident = self._ids
        self.send({"id": ident, "cmd": cmd, **args})
        return await self.wait(
            lambda e: e["event"] in ("result", "reply_error") and e.get("id") == ident, timeout
        )

    async def ok(self, cmd: str, timeout: float = WAIT, **args: object) -> dict:
        reply = await self.call(cmd, timeout, **args)
        assert reply["event"] == "result", f"{cmd} failed: {reply}\n{self._describe()}"
        return reply["result"]

    async def fail(self, cmd: str, timeout: float = WAIT, **args: object) -> dict:
        reply = await self.call(cmd, timeout, **args)
        assert reply["event"] == "reply_error", f"{cmd} should fail: {reply}"
        return reply["error"]

    # --- conveniences ---------------------------------------------------------------
    async def connect(self, url: str, **args: object) -> Event:
        mark = len(self.events)
        await self.ok("connect", url=url, **args)
        return await self.wait(state("connected"), start=mark)

    async def subscribe(self, channel: str, **args: object) -> Event:
        mark = len(self.events)
        await self.ok("subscribe", channel=channel, **args)
        return await self.wait(sub_state(channel, "subscribed", "unsubscribed"), start=mark)

    def matching(self, predicate: Predicate, start: int = 0) -> list[Event]:
        return [e for e in self.events[start:] if predicate(e)]

    def publications(self, channel: str, start: int = 0) -> list[Event]:
        return self.matching(
            lambda e: e["event"] == "publication" and e["channel"] == channel, start
        )

    async def close(self) -> None:
        if self._proc is None:
            return
        if self._proc.returncode is None:
            self._proc.kill()
        await self._proc.wait()
        for task in (self._reader, self._stderr):
            if task is not None:
                with contextlib.suppress(Exception):
                    await task


def state(*states: str) -> Predicate:
    return lambda e: e["event"] == "state" and e["state"] in states


def sub_state(channel: str, *states: str) -> Predicate:
    return lambda e: (
        e["event"] == "sub_state" and e["channel"] == channel and (e["state"] in states)
    )


def publication(channel: str, data: object) -> Predicate:
    return lambda e: e["event"] == "publication" and e["channel"] == channel and (e["data"] == data)


@pytest.fixture
async def js() -> AsyncIterator[Callable[[str], asyncio.Future]]:
    clients: list[JsClient] = []

    async def spawn(name: str = "js") -> JsClient:
        client = JsClient(name)
        clients.append(client)
        await client.start()
        return client

    yield spawn
    await asyncio.gather(*(c.close() for c in clients))
    for client in clients:
        broken = client.matching(lambda e: e["event"] in ("unhandled", "bad_command"))
        assert not broken, f"[{client.name}] driver trouble: {broken}"


# --- 1. delivery ---------------------------------------------------------------------
async def test_receives_fifty_publications_in_order(server, js):
    alice = await js("alice")
    await alice.connect(server.ws_url, token=server.token("alice"))
    subscribed = await alice.subscribe("board:1")
    assert subscribed["state"] == "subscribed"

    offsets = [(await server.publish("board:1", {"n": n}))["offset"] for n in range(50)]
    await alice.wait(publication("board:1", {"n": 49}))

    pubs = alice.publications("board:1")
    assert [p["data"]["n"] for p in pubs] == list(range(50))
    assert [p["offset"] for p in pubs] == offsets
    assert all(a < b for a, b in itertools.pairwise(offsets))


# --- 2. presence, join and leave -----------------------------------------------------
async def test_presence_and_join_leave_between_two_clients(server, js):
    alice, bob = await js("alice"), await js("bob")
    alice_conn = await alice.connect(server.ws_url, token=server.token("alice"))
    bob_conn = await bob.connect(server.ws_url, token=server.token("bob"))
    await alice.subscribe("board:team", options={"joinLeave": True})

    mark = len(alice.events)
    assert (await bob.subscribe("board:team"))["state"] == "subscribed"
    join = await alice.wait(lambda e: e["event"] == "join" and e["user"] == "bob", start=mark)
    assert join == {**join, "channel": "board:team", "client": bob_conn["client"]}

    for client in (alice, bob):
        presence = await client.ok("presence", channel="board:team", via="sub")
        users = {cid: info["user"] for cid, info in presence["clients"].items()}
        assert users == {alice_conn["client"]: "alice", bob_conn["client"]: "bob"}
        stats = await client.ok("presenceStats", channel="board:team", via="sub")
        assert stats == {"numClients": 2, "numUsers": 2}

    mark = len(alice.events)
    await bob.ok("unsubscribe", channel="board:team")
    leave = await alice.wait(lambda e: e["event"] == "leave" and e["user"] == "bob", start=mark)
    assert leave["client"] == bob_conn["client"]
    stats = await alice.ok("presenceStats", channel="board:team", via="sub")
    assert stats == {"numClients": 1, "numUsers": 1}

    # Back in, then gone with the whole connection.
    await bob.subscribe("board:team")
    await alice.wait(lambda e: e["event"] == "join" and e["user"] == "bob", start=mark)
    mark = len(alice.events)
    await bob.ok("disconnect")
    leave = await alice.wait(lambda e: e["event"] == "leave" and e["user"] == "bob", start=mark)
    assert leave["client"] == bob_conn["client"]
    presence = await alice.ok("presence", channel="board:team", via="sub")
    assert [info["user"] for info in presence["clients"].values()] == ["alice"]


# --- 3. permissions ------------------------------------------------------------------
async def test_permission_refusals_and_grants(server, js):
    alice = await js("alice")
    await alice.connect(server.ws_url, token=server.token("alice"))
    connected = len(alice.events)

    refused = await alice.subscribe("private:x")
    assert (refused["state"], refused["code"]) == ("unsubscribed", 103)
    await alice.ok("removeSubscription", channel="private:x")

    granted = await alice.subscribe("private:x", token=server.sub_token("alice", "private:x"))
    assert granted["state"] == "subscribed"

    refused = await alice.subscribe("notifications:#bob")
    assert (refused["state"], refused["code"]) == ("unsubscribed", 103)
    mine = await alice.subscribe("notifications:#alice")
    assert mine["state"] == "subscribed"

    unknown = await alice.subscribe("nope:1")
    assert (unknown["state"], unknown["code"]) == ("unsubscribed", 102)

    error = await alice.fail("publish", channel="notifications:#alice", data={"x": 1})
    assert error["code"] == 103

    # Refusals are per request: the connection and the granted subscriptions stay up.
    await server.publish("private:x", {"ok": "private"})
    await server.publish("notifications:#alice", {"ok": "personal"})
    await alice.wait(publication("private:x", {"ok": "private"}))
    await alice.wait(publication("notifications:#alice", {"ok": "personal"}))
    assert not alice.matching(state("disconnected", "connecting"), start=connected)


# --- 4. token expiry and refresh -----------------------------------------------------
async def test_connection_token_is_refreshed_before_expiry(server, js):
    alice = await js("alice")
    alice.token_provider = lambda event: server.token("alice", ttl=3600)
    issued = time.time()
    await alice.connect(server.ws_url, token=server.token("alice", ttl=3), getToken=True)
    connected = len(alice.events)
    await alice.subscribe("board:refresh")

    await alice.wait(lambda e: e["event"] == "need_token" and e["channel"] is None, timeout=6)
    # Let wall-clock time pass the first token's expiry (plus a tick of the server's
    # expiry timer): what is under test is that nothing happens then.
    await asyncio.sleep(max(0.0, issued + 4.5 - time.time()))
    await server.publish("board:refresh", {"after": "expiry"})
    await alice.wait(publication("board:refresh", {"after": "expiry"}))

    assert not alice.matching(state("disconnected", "connecting"), start=connected)
    assert not alice.matching(lambda e: e["event"] == "client_error")
    assert (await alice.ok("state"))["state"] == "connected"


async def test_expired_token_on_connect_asks_for_a_new_one(server, js):
    alice = await js("alice")
    alice.token_provider = lambda event: server.token("alice", ttl=3600)
    await alice.ok(
        "connect", url=server.ws_url, token=server.token("alice", ttl=-10), getToken=True
    )

    error = await alice.wait(lambda e: e["event"] == "client_error")
    assert (error["type"], error["error"]["code"]) == ("connect", 109)
    await alice.wait(lambda e: e["event"] == "need_token")
    await alice.wait(state("connected"))
    assert not alice.matching(state("disconnected"))


async def test_token_expiry_without_refresh_disconnects_with_3005(server, js):
    """The control for the refresh test: when getToken fails, the server does cut it."""
    alice = await js("alice")
    alice.token_provider = None  # getToken rejects; centrifuge-js retries it in 5-10 s
    await alice.connect(server.ws_url, token=server.token("alice", ttl=2), getToken=True)
    connected = len(alice.events)
    await alice.wait(lambda e: e["event"] == "need_token", timeout=5)
    refresh_failed = await alice.wait(lambda e: e["event"] == "client_error")
    assert refresh_failed["type"] == "refreshToken"
    gone = await alice.wait(state("connecting", "disconnected"), timeout=6, start=connected)
    assert (gone["state"], gone["code"], gone["reason"]) == (
        "connecting",
        3005,
        "connection expired",
    ), gone


# --- 5. recovery after a forced reconnect --------------------------------------------
async def test_recovers_publications_missed_while_reconnecting(server, js):
    alice = await js("alice")
    await alice.connect(
        server.ws_url,
        token=server.token("alice"),
        options={"minReconnectDelay": 300, "maxReconnectDelay": 600},
    )
    await alice.subscribe("board:rec")
    for n in range(1, 6):
        await server.publish("board:rec", n)
    await alice.wait(publication("board:rec", 5))

    mark = len(alice.events)
    reply = await server.api(
        "disconnect", {"user": "alice", "disconnect": {"code": 4000, "reason": "test reconnect"}}
    )
    assert "error" not in reply, reply
    for n in range(6, 16):
        await server.publish("board:rec", n)

    connecting = await alice.wait(state("connecting"), start=mark)
    assert (connecting["code"], connecting["reason"]) == (4000, "test reconnect")
    resubscribed = await alice.wait(sub_state("board:rec", "subscribed"), start=mark)
    assert resubscribed["wasRecovering"] is True
    assert resubscribed["recovered"] is True
    await alice.wait(publication("board:rec", 15))

    assert [p["data"] for p in alice.publications("board:rec")] == list(range(1, 16))
    # 6..15 came back through recovery, in the new subscription, not before the cut.
    after = alice.events.index(resubscribed)
    assert [p["data"] for p in alice.publications("board:rec", start=after)] == list(range(6, 16))
    offsets = [p["offset"] for p in alice.publications("board:rec")]
    assert offsets == sorted(set(offsets))
    assert not alice.matching(sub_state("board:rec", "unsubscribed"))


# --- 6. history ----------------------------------------------------------------------
async def test_history_limit_reverse_and_since(server, js):
    alice = await js("alice")
    await alice.connect(server.ws_url, token=server.token("alice"))
    await alice.subscribe("board:hist")
    results = [await server.publish("board:hist", {"n": n}) for n in range(10)]

    last5 = await alice.ok("history", channel="board:hist", via="sub", limit=5, reverse=True)
    assert [p["data"]["n"] for p in last5["publications"]] == [9, 8, 7, 6, 5]
    assert [p["offset"] for p in last5["publications"]] == [r["offset"] for r in results][:4:-1]
    assert (last5["offset"], last5["epoch"]) == (results[-1]["offset"], results[-1]["epoch"])

    since = {"offset": results[6]["offset"], "epoch": results[6]["epoch"]}
    after = await alice.ok("history", channel="board:hist", via="sub", since=since, limit=10)
    assert [p["data"]["n"] for p in after["publications"]] == [7, 8, 9]

    first3 = await alice.ok("history", channel="board:hist", via="sub", limit=3)
    assert [p["data"]["n"] for p in first3["publications"]] == [0, 1, 2]


# --- 7. server-side subscriptions ----------------------------------------------------
async def test_server_side_subscription_from_token_channels(server, js):
    alice = await js("alice")
    mark = len(alice.events)
    await alice.connect(server.ws_url, token=server.token("alice", channels=["board:srv"]))
    subscribed = await alice.wait(
        lambda e: e["event"] == "server_sub_state" and e["state"] == "subscribed", start=mark
    )
    assert subscribed["channel"] == "board:srv"

    await server.publish("board:srv", {"via": "token"})
    got = await alice.wait(publication("board:srv", {"via": "token"}))
    assert got["scope"] == "client"


# --- 8. disconnect without reconnect -------------------------------------------------
async def test_api_disconnect_default_code_stops_reconnecting(server, js):
    alice = await js("alice")
    await alice.connect(
        server.ws_url,
        token=server.token("alice"),
        options={"minReconnectDelay": 100, "maxReconnectDelay": 200},
    )
    mark = len(alice.events)
    reply = await server.api("disconnect", {"user": "alice"})
    assert "error" not in reply, reply

    gone = await alice.wait(state("disconnected", "connecting"), start=mark)
    assert (gone["state"], gone["code"]) == ("disconnected", 3503)
    assert (await alice.ok("state"))["state"] == "disconnected"


# --- 9. emulation: HTTP streaming, and falling back to it ------------------------------
def emulation_options(server) -> dict:
    return {
        "emulationEndpoint": server.url + "/emulation",
        "minReconnectDelay": 200,
        "maxReconnectDelay": 400,
    }


async def test_http_stream_emulation_works_fully(server, js):
    alice = await js("alice")
    bob = await js("bob")
    endpoints = [{"transport": "http_stream", "endpoint": server.url + "/connection/http_stream"}]
    connected = await alice.connect(
        endpoints, token=server.token("alice"), options=emulation_options(server)
    )
    assert connected["transport"] == "http_stream"
    await bob.connect(server.ws_url, token=server.token("bob"))
    await alice.subscribe("board:emu", options={"joinLeave": True})
    await bob.subscribe("board:emu")
    await alice.wait(lambda e: e["event"] == "join" and e["user"] == "bob")
    for n in range(1, 6):
        await server.publish("board:emu", n)
    await alice.ok("publish", channel="board:emu", data=6)
    await bob.wait(publication("board:emu", 6))
    stats = await alice.ok("presenceStats", channel="board:emu", via="sub")
    assert (stats["numClients"], stats["numUsers"]) == (2, 2)
    history = await alice.ok("history", channel="board:emu", via="sub", limit=2, reverse=True)
    assert [p["data"] for p in history["publications"]] == [6, 5]
    # recovery over the emulated transport
    mark = len(alice.events)
    await server.api("disconnect", {"user": "alice", "disconnect": {"code": 4000, "reason": "x"}})
    for n in range(7, 12):
        await server.publish("board:emu", n)
    resubscribed = await alice.wait(sub_state("board:emu", "subscribed"), start=mark)
    assert resubscribed["recovered"] is True
    await alice.wait(publication("board:emu", 11))
    assert [p["data"] for p in alice.publications("board:emu")] == list(range(1, 12))


async def test_falls_back_from_websocket_to_http_stream(server, js):
    alice = await js("alice")
    endpoints = [
        # a WebSocket endpoint that refuses (as a proxy that blocks WebSocket would)
        {"transport": "websocket", "endpoint": server.url.replace("http", "ws") + "/blocked"},
        {"transport": "http_stream", "endpoint": server.url + "/connection/http_stream"},
    ]
    connected = await alice.connect(
        endpoints, token=server.token("alice"), options=emulation_options(server)
    )
    assert connected["transport"] == "http_stream"
    await alice.subscribe("board:fallback")
    await server.publish("board:fallback", "through the fallback")
    await alice.wait(publication("board:fallback", "through the fallback"))


# --- 10. Centrifugo semantics (issue 16) -------------------------------------------------
SEMANTICS = """
[[namespace]]
name = "small"
history_size = 2
history_ttl = "600s"
force_recovery = true
allow_subscribe_for_client = true
[[namespace]]
name = "askrecover"
history_size = 100
history_ttl = "600s"
allow_recovery = true
allow_subscribe_for_client = true
[[namespace]]
name = "now"
history_size = 1
history_ttl = "600s"
force_recovery = true
force_recovery_mode = "cache"
allow_subscribe_for_client = true
[[namespace]]
name = "market"
history_size = 100
history_ttl = "600s"
allow_subscribe_for_client = true
allow_tags_filter = true
"""
FAST_RECONNECT = {"minReconnectDelay": 100, "maxReconnectDelay": 200}


async def stream_top(server, channel: str) -> tuple[int, str]:
    reply = await server.api("history", {"channel": channel, "limit": 0})
    return reply["result"]["offset"], reply["result"]["epoch"]


async def test_get_state_reloads_when_recovery_is_impossible(make_server, server_config, js):
    server = await make_server(server_config(SEMANTICS))
    await server.publish("small:1", "before")
    alice = await js("alice")
    state = {"position": await stream_top(server, "small:1")}
    alice.state_provider = lambda event: state["position"]
    await alice.connect(server.ws_url, token=server.token("alice"), options=FAST_RECONNECT)
    subscribed = await alice.subscribe("small:1", getState=True)
    assert subscribed["state"] == "subscribed"
    assert len(alice.matching(lambda e: e["event"] == "need_state")) == 1

    mark = len(alice.events)
    await server.api("disconnect", {"user": "alice", "disconnect": {"code": 4000, "reason": "x"}})
    for n in range(5):  # more than the channel keeps: recovery is impossible
        await server.publish("small:1", n)
    state["position"] = await stream_top(server, "small:1")
    # error 112 (the SDK set the reject-unrecovered flag) made the SDK ask getState again
    await alice.wait(lambda e: e["event"] == "need_state", start=mark)
    again = await alice.wait(sub_state("small:1", "subscribed"), start=mark)
    assert again["recovered"] is True
    assert alice.publications("small:1", start=mark) == []
    await server.publish("small:1", "after")
    await alice.wait(publication("small:1", "after"))


async def test_get_state_with_an_empty_epoch_recovers(make_server, server_config, js):
    server = await make_server(server_config(SEMANTICS))
    await server.publish("askrecover:1", "seen")
    offset, _epoch = await stream_top(server, "askrecover:1")
    await server.publish("askrecover:1", "missed")
    alice = await js("alice")
    alice.state_provider = lambda event: (offset, "")
    await alice.connect(server.ws_url, token=server.token("alice"))
    subscribed = await alice.subscribe("askrecover:1", getState=True, options={"recoverable": True})
    assert (subscribed["wasRecovering"], subscribed["recovered"]) == (True, True)
    await alice.wait(publication("askrecover:1", "missed"))
    assert [p["data"] for p in alice.publications("askrecover:1")] == ["missed"]


async def test_recoverable_asked_by_the_client(make_server, server_config, js):
    server = await make_server(server_config(SEMANTICS))
    alice = await js("alice")
    await alice.connect(server.ws_url, token=server.token("alice"), options=FAST_RECONNECT)
    subscribed = await alice.subscribe("askrecover:2", options={"recoverable": True})
    assert subscribed["recoverable"] is True
    await server.publish("askrecover:2", 1)
    await alice.wait(publication("askrecover:2", 1))
    mark = len(alice.events)
    await server.api("disconnect", {"user": "alice", "disconnect": {"code": 4000, "reason": "x"}})
    await server.publish("askrecover:2", 2)
    again = await alice.wait(sub_state("askrecover:2", "subscribed"), start=mark)
    assert (again["wasRecovering"], again["recovered"]) == (True, True)
    await alice.wait(publication("askrecover:2", 2))


async def test_cache_recovery_hands_the_latest_publication_on_subscribe(
    make_server, server_config, js
):
    server = await make_server(server_config(SEMANTICS))
    for song in ("first song", "second song"):
        await server.publish("now:playing", {"song": song})
    alice = await js("alice")
    await alice.connect(server.ws_url, token=server.token("alice"))
    subscribed = await alice.subscribe("now:playing", options={"since": {}})
    assert (subscribed["wasRecovering"], subscribed["recovered"]) == (True, True)
    await alice.wait(publication("now:playing", {"song": "second song"}))
    assert [p["data"] for p in alice.publications("now:playing")] == [{"song": "second song"}]


async def test_tags_filter(make_server, server_config, js):
    server = await make_server(server_config(SEMANTICS))
    alice = await js("alice")
    await alice.connect(server.ws_url, token=server.token("alice"))
    tags_filter = {
        "op": "or",
        "nodes": [
            {"key": "ticker", "cmp": "eq", "val": "AAPL"},
            {"key": "volume", "cmp": "gte", "val": "1000"},
        ],
    }
    await alice.subscribe("market:1", options={"tagsFilter": tags_filter})
    for data, tags in [
        ("aapl", {"ticker": "AAPL"}),
        ("small msft", {"ticker": "MSFT", "volume": "10"}),
        ("big msft", {"ticker": "MSFT", "volume": "5000"}),
    ]:
        await server.api("publish", {"channel": "market:1", "data": data, "tags": tags})
    await server.publish("market:1", "untagged")
    await alice.wait(publication("market:1", "big msft"))
    await server.api("publish", {"channel": "market:1", "data": "end", "tags": {"ticker": "AAPL"}})
    await alice.wait(publication("market:1", "end"))
    assert [p["data"] for p in alice.publications("market:1")] == ["aapl", "big msft", "end"]


async def test_map_subscriptions_are_refused_clearly(make_server, server_config, js):
    server = await make_server(server_config(SEMANTICS))
    alice = await js("alice")
    await alice.connect(server.ws_url, token=server.token("alice"))
    refused = await alice.subscribe("market:map", options={"map": True})
    assert (refused["state"], refused["code"]) == ("unsubscribed", 108)
    assert "map subscriptions are not supported" in refused["reason"]
