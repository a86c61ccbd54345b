"""Authorization as a property: for random namespace permissions, user-limited channels,
subscription tokens (valid, expired, for another channel or user, signed with another
key, ``alg: none``, tampered), users (anonymous too) and transports (WebSocket and short
polling), a client receives a publication if and only if the rules allow it.

The model below restates the rules independently of pushgate's code:
- a subscription token decides alone: only a well-formed, unexpired token signed with
  the configured key, for this channel and this user, lets the client in;
- without a token, a user-limited channel (``ns:room#alice,bob``, when the namespace
  allows user-limited channels) admits exactly the users listed;
- otherwise ``allow_subscribe_for_client`` admits authenticated users, and anonymous
  ones too when ``allow_subscribe_for_anonymous`` is also on.
After every client tried, the API publishes to the channel and then to a sentinel
channel everyone is subscribed to; a client's sentinel publication arriving proves it
would have seen the first one (one connection's pushes are ordered).
"""

from __future__ import annotations

import asyncio
import base64
import tempfile
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pushgate.auth import mint_connection_token, mint_subscription_token
from tests.conftest import API_KEY, SECRET, make_config, start_server

USERS = ("alice", "bob", "carol", "")
TOKENS = (
    "none",
    "valid",
    "expired",
    "other_channel",
    "other_user",
    "other_key",
    "alg_none",
    "tampered",
)
TRANSPORTS = ("websocket", "poll")
SENTINEL = "open:sentinel"


@dataclass(frozen=True)
class Attempt:
    user: str
    token: str
    transport: str


@dataclass(frozen=True)
class Scenario:
    allow_client: bool
    allow_anonymous: bool
    allow_user_limited: bool
    limited_to: tuple[str, ...] | None  # None: not a user-limited channel
    attempts: tuple[Attempt, ...]

    @property
    def channel(self) -> str:
        if self.limited_to is None:
            return "ns:room"
        return "ns:room#" + ",".join(self.limited_to)

    def allows(self, attempt: Attempt) -> bool:
        if attempt.token != "none":
            return attempt.token == "valid"
        if self.limited_to is not None and self.allow_user_limited:
            return attempt.user in self.limited_to
        return self.allow_client and (attempt.user != "" or self.allow_anonymous)


scenarios = st.builds(
    Scenario,
    allow_client=st.booleans(),
    allow_anonymous=st.booleans(),
    allow_user_limited=st.booleans(),
    limited_to=st.none()
    | st.lists(st.sampled_from(USERS[:3]), min_size=1, max_size=2, unique=True).map(tuple),
    attempts=st.lists(
        st.builds(
            Attempt,
            user=st.sampled_from(USERS),
            token=st.sampled_from(TOKENS),
            transport=st.sampled_from(TRANSPORTS),
        ),
        min_size=1,
        max_size=4,
    ).map(tuple),
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def subscription_token(kind: str, user: str, channel: str) -> str:
    if kind == "none":
        return ""
    if kind == "valid":
        return mint_subscription_token(SECRET, user, channel)
    if kind == "expired":
        return mint_subscription_token(SECRET, user, channel, ttl=-120)
    if kind == "other_channel":
        return mint_subscription_token(SECRET, user, "ns:elsewhere")
    if kind == "other_user":
        return mint_subscription_token(SECRET, user + "-other", channel)
    if kind == "other_key":
        return mint_subscription_token("another-secret-0123456789abcdef0123", user, channel)
    if kind == "alg_none":
        header = _b64(b'{"alg":"none","typ":"JWT"}')
        payload = _b64(orjson.dumps({"sub": user, "channel": channel}))
        return f"{header}.{payload}."
    if kind == "tampered":  # a real token for someone else, its claims rewritten
        header, _, signature = mint_subscription_token(SECRET, "mallory", channel).split(".")
        payload = _b64(orjson.dumps({"sub": user, "channel": channel, "exp": 4102444800}))
        return f"{header}.{payload}.{signature}"
    raise AssertionError(kind)


CONFIG = """
[[namespace]]
name = "open"
allow_subscribe_for_client = true
allow_subscribe_for_anonymous = true
[[namespace]]
name = "ns"
allow_subscribe_for_client = {client}
allow_subscribe_for_anonymous = {anonymous}
allow_user_limited_channels = {limited}
"""


def _connect_params(user: str) -> dict:
    return {"token": mint_connection_token(SECRET, user)} if user else {}


class WsClient:
    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url.replace("http://", "ws://") + "/connection/websocket"
        self.pubs: list[str] = []

    async def _until_reply(self, cid: int) -> dict:
        async with asyncio.timeout(5):
            while True:
                message = await self.ws.receive()
                assert message.type == aiohttp.WSMsgType.TEXT, message
                for line in message.data.split("\n"):
                    if not line:
                        continue
                    reply = orjson.loads(line)
                    if reply.get("id") == cid:
                        return reply
                    self._note(reply)

    def _note(self, reply: dict) -> None:
        push = reply.get("push") or {}
        if "pub" in push:
            self.pubs.append(push["channel"])

    async def start(self, user: str, channel: str, token: str) -> dict:
        self.ws = await self.session.ws_connect(self.url)
        await self.ws.send_bytes(orjson.dumps({"id": 1, "connect": _connect_params(user)}))
        reply = await self._until_reply(1)
        assert "connect" in reply, reply
        sub = {"channel": channel, **({"token": token} if token else {})}
        await self.ws.send_bytes(orjson.dumps({"id": 2, "subscribe": sub}))
        result = await self._until_reply(2)
        await self.ws.send_bytes(orjson.dumps({"id": 3, "subscribe": {"channel": SENTINEL}}))
        assert "subscribe" in await self._until_reply(3)
        return result

    async def received(self) -> list[str]:
        async with asyncio.timeout(5):
            while SENTINEL not in self.pubs:
                message = await self.ws.receive()
                assert message.type == aiohttp.WSMsgType.TEXT, message
                for line in message.data.split("\n"):
                    if line:
                        self._note(orjson.loads(line))
        await self.ws.close()
        return self.pubs


class PollClient:
    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url + "/connection/poll"
        self.pubs: list[str] = []
        self.replies: dict[int, dict] = {}
        self.ack = 0
        self.rid = 0
        self.id = ""

    async def _post(self, commands: list[dict]) -> None:
        self.rid += 1
        body = {"session": self.id, "rid": self.rid, "ack": self.ack, "commands": commands}
        async with self.session.post(self.url, data=orjson.dumps(body)) as response:
            assert response.status == 200, await response.text()
            answer = await response.json()
        self.id = answer["session"]
        for seq, message in answer["messages"]:
            self.ack = max(self.ack, seq)
            if "id" in message:
                self.replies[message["id"]] = message
            push = message.get("push") or {}
            if "pub" in push:
                self.pubs.append(push["channel"])

    async def start(self, user: str, channel: str, token: str) -> dict:
        sub = {"channel": channel, **({"token": token} if token else {})}
        await self._post(
            [
                {"id": 1, "connect": _connect_params(user)},
                {"id": 2, "subscribe": sub},
                {"id": 3, "subscribe": {"channel": SENTINEL}},
            ]
        )
        assert "connect" in self.replies[1], self.replies
        assert "subscribe" in self.replies[3], self.replies
        return self.replies[2]

    async def received(self) -> list[str]:
        async with asyncio.timeout(5):
            while SENTINEL not in self.pubs:
                await self._post([])
                await asyncio.sleep(0.01)
        return self.pubs


async def run_scenario(scenario: Scenario, tmp: Path) -> None:
    config = make_config(
        tmp,
        CONFIG.format(
            client=str(scenario.allow_client).lower(),
            anonymous=str(scenario.allow_anonymous).lower(),
            limited=str(scenario.allow_user_limited).lower(),
        ),
        client__anonymous=True,
    )
    runner, _hub, url = await start_server(config)
    try:
        async with aiohttp.ClientSession() as session:
            clients = []
            for attempt in scenario.attempts:
                kind = WsClient if attempt.transport == "websocket" else PollClient
                client = kind(session, url)
                token = subscription_token(attempt.token, attempt.user, scenario.channel)
                reply = await client.start(attempt.user, scenario.channel, token)
                allowed = scenario.allows(attempt)
                assert ("subscribe" in reply) == allowed, (attempt, reply)
                clients.append((attempt, client))
            for channel in (scenario.channel, SENTINEL):
                async with session.post(
                    f"{url}/api/publish",
                    json={"channel": channel, "data": {"to": channel}},
                    headers={"X-API-Key": API_KEY},
                ) as response:
                    assert "result" in await response.json(), channel
            for attempt, client in clients:
                got = scenario.channel in await client.received()
                assert got == scenario.allows(attempt), (attempt, scenario)
    finally:
        await runner.cleanup()


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(scenario=scenarios)
@example(  # every kind of token, on both transports, is always tried
    Scenario(
        True,
        False,
        True,
        None,
        tuple(Attempt("alice", kind, TRANSPORTS[i % 2]) for i, kind in enumerate(TOKENS)),
    )
)
@example(
    Scenario(
        False,
        True,
        True,
        ("bob",),
        tuple(Attempt(u, "none", t) for u in USERS for t in TRANSPORTS),
    )
)
def test_a_client_receives_a_publication_iff_the_rules_allow_it(scenario: Scenario) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run_scenario(scenario, Path(tmp)))
