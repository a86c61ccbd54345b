"""End to end with the real @stomp/stompjs 7 client in Node, over `ws`, against pushgate.

Each ``StompJsClient`` is one ``node tests/js/stomp_driver.mjs`` process holding one
stomp.js ``Client``; the same harness as the centrifuge-js tests drives it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.e2e.test_centrifuge_js import NODE, TESTS, JsClient, js, publication  # noqa: F401

DRIVER = TESTS / "js" / "stomp_driver.mjs"

pytestmark = pytest.mark.skipif(
    NODE is None or not (TESTS / "node_modules" / "@stomp" / "stompjs").is_dir(),
    reason="needs node and tests/node_modules (run `cd tests && npm install`)",
)


class StompJsClient(JsClient):
    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            NODE,
            str(DRIVER),
            cwd=str(TESTS),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read())
        self._stderr = asyncio.create_task(self._read_stderr())
        await self.wait(lambda e: e["event"] == "ready", timeout=10)

    async def stomp_connect(self, url: str, token: str, **options: object) -> dict:
        mark = len(self.events)
        headers = {"passcode": token, **options.pop("headers", {})}  # type: ignore[dict-item]
        await self.ok("connect", url=url, connectHeaders=headers, **options)
        return await self.wait(
            lambda e: e["event"] in ("connected", "stomp_error"), start=mark, timeout=5
        )

    async def stomp_subscribe(self, destination: str, sub_id: str, **headers: str) -> dict:
        receipt = f"sub-{sub_id}-{len(self.events)}"
        await self.ok("watchReceipt", receipt=receipt)
        await self.ok(
            "subscribe",
            destination=destination,
            subId=sub_id,
            headers={"receipt": receipt, **headers},
        )
        return await self.wait(
            lambda e: e["event"] == "receipt" and e["headers"]["receipt-id"] == receipt
        )

    def messages(self, subscription: str | None = None, start: int = 0) -> list[dict]:
        return self.matching(
            lambda e: (
                e["event"] == "message"
                and (subscription is None or e["headers"]["subscription"] == subscription)
            ),
            start,
        )


def stomp_message(body: object, subscription: str | None = None) -> Callable[[dict], bool]:
    return lambda e: (
        e["event"] == "message"
        and json.loads(e["body"]) == body
        and (subscription is None or e["headers"]["subscription"] == subscription)
    )


@pytest.fixture
async def stompjs() -> AsyncIterator[Callable[[str], asyncio.Future]]:
    clients: list[StompJsClient] = []

    async def spawn(name: str = "stompjs") -> StompJsClient:
        client = StompJsClient(name)
        clients.append(client)
        await client.start()
        return client

    yield spawn
    await asyncio.gather(*(c.close() for c in clients))
    for client in clients:
        broken = client.matching(lambda e: e["event"] in ("unhandled", "bad_command"))
        assert not broken, f"[{client.name}] driver trouble: {broken}"


@pytest.fixture
async def stomp_server(make_server, server_config):
    return await make_server(
        server_config("[stomp]\nheartbeat_send = 1000\nheartbeat_receive = 1000\n")
    )


def ws(server, path: str = "/stomp") -> str:
    return server.url.replace("http://", "ws://") + path


async def test_stompjs_receives_publications_in_order(stomp_server, stompjs):
    alice = await stompjs("alice")
    connected = await alice.stomp_connect(ws(stomp_server, "/ws"), stomp_server.token("alice"))
    assert connected["event"] == "connected", connected
    assert connected["headers"]["version"] == "1.2"
    await alice.stomp_subscribe("/topic/board:js", "sub-0")
    positions = [await stomp_server.publish("board:js", {"n": n}) for n in range(30)]
    await alice.wait(stomp_message({"n": 29}))
    messages = alice.messages("sub-0")
    assert [json.loads(m["body"]) for m in messages] == [{"n": n} for n in range(30)]
    assert [int(m["headers"]["x-pushgate-offset"]) for m in messages] == [
        p["offset"] for p in positions
    ]
    first = messages[0]["headers"]
    assert first["destination"] == "/topic/board:js"
    assert first["content-type"] == "application/json"


async def test_centrifuge_js_and_stompjs_get_the_same_stream(stomp_server, stompjs, js):  # noqa: F811
    stomp_client = await stompjs("stomp")
    cent = await js("centrifuge")
    await stomp_client.stomp_connect(ws(stomp_server), stomp_server.token("alice"))
    await stomp_client.stomp_subscribe("/topic/board:both", "s")
    await cent.connect(stomp_server.ws_url, token=stomp_server.token("bob"))
    await cent.subscribe("board:both")

    sent = [{"n": n, "text": f"line {n}:\n"} for n in range(25)]
    for data in sent:
        await stomp_server.publish("board:both", data)
    await stomp_client.wait(stomp_message(sent[-1]))
    await cent.wait(publication("board:both", sent[-1]))

    via_stomp = [
        (int(m["headers"]["x-pushgate-offset"]), json.loads(m["body"]))
        for m in stomp_client.messages("s")
    ]
    via_centrifuge = [(p["offset"], p["data"]) for p in cent.publications("board:both")]
    assert via_stomp == via_centrifuge
    assert [data for _, data in via_stomp] == sent

    # both count in presence
    presence = await stomp_server.api("presence", {"channel": "board:both"})
    users = sorted(info["user"] for info in presence["result"]["presence"].values())
    assert users == ["alice", "bob"]

    # a SEND from stomp.js reaches centrifuge-js
    await stomp_client.ok("publish", destination="/topic/board:both", body='{"from":"stomp"}')
    await cent.wait(publication("board:both", {"from": "stomp"}))


async def test_bad_token_gets_an_error_frame(stomp_server, stompjs):
    client = await stompjs("mallory")
    reply = await client.stomp_connect(ws(stomp_server), "garbage")
    assert reply["event"] == "stomp_error"
    assert reply["headers"]["message"] == "invalid token"
    await client.wait(lambda e: e["event"] == "ws_close")


async def test_heartbeats_keep_a_quiet_connection_up(stomp_server, stompjs):
    client = await stompjs("quiet")
    await client.stomp_connect(
        ws(stomp_server),
        stomp_server.token("alice"),
        heartbeatIncoming=1000,
        heartbeatOutgoing=1000,
    )
    await asyncio.sleep(4)
    assert not client.matching(lambda e: e["event"] in ("ws_close", "stomp_error"))
    assert (await client.ok("state"))["connected"] is True


async def test_reconnect_recovers_with_since_header(stomp_server, stompjs):
    client = await stompjs("rec")
    await client.stomp_connect(ws(stomp_server), stomp_server.token("alice"), reconnectDelay=200)
    await client.stomp_subscribe("/topic/board:recover", "r")
    for n in range(3):
        await stomp_server.publish("board:recover", n)
    await client.wait(stomp_message(2))
    last = client.messages("r")[-1]["headers"]
    since = f"{last['x-pushgate-epoch']}:{last['x-pushgate-offset']}"
    await client.ok("setSubscribeHeaders", subId="r", headers={"x-pushgate-since": since})

    mark = len(client.events)
    reply = await stomp_server.api(
        "disconnect", {"user": "alice", "disconnect": {"code": 4000, "reason": "go away"}}
    )
    assert "error" not in reply, reply
    error = await client.wait(lambda e: e["event"] == "stomp_error", start=mark)
    assert error["headers"]["message"] == "go away"
    await client.wait(lambda e: e["event"] == "ws_close", start=mark)
    for n in range(3, 6):
        await stomp_server.publish("board:recover", n)
    await client.wait(lambda e: e["event"] == "connected", start=mark)
    await client.wait(stomp_message(5))
    await stomp_server.publish("board:recover", 6)
    await client.wait(stomp_message(6))
    assert [json.loads(m["body"]) for m in client.messages("r")] == list(range(7))


async def test_server_side_subscription_reaches_unhandled_message(stomp_server, stompjs):
    client = await stompjs("srv")
    await client.stomp_connect(ws(stomp_server), stomp_server.token("alice", channels=["board:s"]))
    await asyncio.sleep(0.1)
    await stomp_server.publish("board:s", {"server": "side"})
    event = await client.wait(lambda e: e["event"] == "unhandled_message")
    assert event["headers"]["subscription"] == "/topic/board:s"
    assert json.loads(event["body"]) == {"server": "side"}


def test_driver_exists():
    assert Path(DRIVER).is_file()
