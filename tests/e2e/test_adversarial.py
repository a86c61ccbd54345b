"""Every attack of the security review against a served node, with a bystander measuring.

Each case starts ``pushgate serve`` as its own process (its own event loop, as in
production) and a *probe*: a healthy centrifuge-python subscriber of ``board:probe`` and
a publisher that publishes to it every 20 ms through the server API, stamping each
publication with its send time. While the probe runs, the case attacks the node with raw
sockets and real clients; then it checks what the attack was refused with, that the
node lost nothing (every probe publication arrived, once, in order) and that the
bystander's publish → receive latency stayed bounded. The bound here is generous (the
machine is shared); the figures of a run are in docs/security.md ("Adversarial run"),
printed per case with ``pytest -s tests/e2e/test_adversarial.py``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
import pytest
from centrifuge import Client, ClientEventHandler, SubscriptionEventHandler

from pushgate.auth import mint_connection_token
from tests import raw_clients
from tests.centrifuge_helpers import NodeProcess, Recorder, free_port, subscribed
from tests.conftest import API_KEY, BASE_CONFIG, SECRET
from tests.xmpp_helpers import Bosh, error_of, message

DOMAIN = "pushgate.test"
PASSWORD = "admin-pass-for-tests"
PROBE = "board:probe"
#: what the bystander may see at worst while an attack runs (generous: a shared machine)
P99_BOUND = 2.0
#: publications the bystander receives at least per case (one every 20 ms: a second)
MIN_PROBES = 50
EVIL = "https://evil.example"
BIG = "x" * 60000

CONFIG = (
    BASE_CONFIG.replace("[client]\n", "[client]\nqueue_max_bytes = 65536\n")
    + f"""
[[namespace]]
name = "team"
presence = true
join_leave = true
[[namespace]]
name = "closed"
history_size = 10
history_ttl = "60s"
[xmpp]
domain = "{DOMAIN}"
[admin]
password = "{PASSWORD}"
[stomp]
tcp_port = STOMP_PORT
"""
)


def token(user: str, **claims: object) -> str:
    return mint_connection_token(SECRET, user, ttl=3600, **claims)


@dataclass
class Node:
    """The served node, with an HTTP session for the API and an RSS reader."""

    process: NodeProcess
    session: aiohttp.ClientSession
    stomp_port: int

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def port(self) -> int:
        return self.process.port

    async def api(self, method: str, params: dict | bytes) -> dict:
        body = params if isinstance(params, bytes) else orjson.dumps(params)
        async with self.session.post(
            f"{self.url}/api/{method}",
            data=body,
            headers={"X-API-Key": API_KEY, "Content-Type": "application/json"},
        ) as response:
            return await response.json(content_type=None)

    def rss_mib(self) -> float:
        assert self.process.process is not None
        status = Path(f"/proc/{self.process.process.pid}/status").read_text()
        kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
        return kib / 1024

    def alive(self) -> bool:
        return self.process.process is not None and self.process.process.poll() is None


class _ProbeEvents(ClientEventHandler, SubscriptionEventHandler):
    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    async def on_publication(self, ctx) -> None:
        data = ctx.pub.data
        if isinstance(data, dict) and "probe" in data:
            self.probe.received(data["probe"], time.time() - data["t"])


@dataclass
class Probe:
    """A bystander: publications every ``every`` seconds, received by a healthy client."""

    node: Node
    every: float = 0.02
    sent: int = 0
    seen: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    _task: asyncio.Task | None = None
    _stopping: bool = False
    _client: Client | None = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def received(self, n: int, latency: float) -> None:
        self.seen.append(n)
        self.latencies.append(latency)
        self._arrived.set()

    async def start(self) -> None:
        self._client = Client(self.node.process.ws_url, token=token("probe"), events=Recorder())
        await self._client.connect()
        sub = self._client.new_subscription(PROBE, events=_ProbeEvents(self))
        await sub.subscribe()
        await sub.ready(timeout=5)
        self._task = asyncio.ensure_future(self._publish())

    async def _publish(self) -> None:
        while not self._stopping:
            reply = await self.node.api(
                "publish", {"channel": PROBE, "data": {"probe": self.sent, "t": time.time()}}
            )
            assert "result" in reply, reply
            self.sent += 1
            await asyncio.sleep(self.every)  # the publisher's own pace, not a wait for an event

    async def stop(self) -> dict:
        """Stop publishing (after MIN_PROBES at least: the attack's aftermath is measured
        too), wait for the last one, and say what the bystander saw."""
        assert self._task is not None and self._client is not None
        async with asyncio.timeout(30):
            while len(self.seen) < MIN_PROBES:
                self._arrived.clear()
                await self._arrived.wait()
        self._stopping = True  # the publisher ends after the publication under way
        await self._task
        async with asyncio.timeout(10):
            while len(self.seen) < self.sent:
                self._arrived.clear()
                await self._arrived.wait()
        await self._client.disconnect()
        assert len(self.seen) >= MIN_PROBES
        assert self.seen == list(range(self.sent)), "the bystander lost or reordered some"
        ordered = sorted(self.latencies)
        return {
            "publications": self.sent,
            "p50_ms": round(statistics.median(ordered) * 1000, 1),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 1),
        }


@pytest.fixture
async def node(tmp_path: Path):
    stomp_port = free_port()
    config = tmp_path / "pushgate.toml"
    config.write_text(CONFIG.replace("STOMP_PORT", str(stomp_port)))
    process = NodeProcess(config, tmp_path / "node.log")
    await process.start()
    session = aiohttp.ClientSession()
    try:
        yield Node(process, session, stomp_port)
    finally:
        await session.close()
        process.stop()


async def under_attack(node: Node, attack: Callable[[], Awaitable[str]], name: str) -> None:
    """Run ``attack`` while the probe measures; it returns what the attacker was told."""
    probe = Probe(node)
    await probe.start()
    outcome = await attack()
    figures = await probe.stop()
    assert node.alive(), node.process.log()
    print(f"\n[adversarial] {name}: {outcome}; bystander {figures}")
    assert figures["p99_ms"] < P99_BOUND * 1000, (name, figures)


# --- the attacks, in the order of the review ----------------------------------------------------
async def test_slow_reader_on_sse(node):
    """1. A reader that stops, on the probe's own channel: dropped once, nothing lost."""

    async def attack() -> str:
        stalled = await raw_clients.sse(node.port, token("slow", channels=[PROBE]), rcvbuf=4096)
        stalled.stop_reading()
        for n in range(100):
            reply = await node.api("publish", {"channel": PROBE, "data": {"n": n, "pad": BIG}})
            assert "result" in reply, reply
        stats = (await node.api("presence_stats", {"channel": PROBE}))["result"]
        assert stats["num_users"] == 1  # the slow reader was dropped, the probe stays
        return "slow reader dropped (3008), 100 x 60 KB publications all accepted"

    await under_attack(node, attack, "slow SSE reader")


async def test_a_closed_sse_tab_leaves_at_once(node):
    """2. A stream whose client vanished leaves presence within a second."""

    async def attack() -> str:
        watcher = Client(node.process.ws_url, token=token("watcher"), events=Recorder())
        await watcher.connect()
        _, recorder = await subscribed(watcher, "board:tab")
        raw = await raw_clients.sse(node.port, token("tab", channels=["board:tab"]))
        await recorder.wait_for("join", lambda ctx: ctx.info.user == "tab")
        started = time.monotonic()
        raw.abort()
        await recorder.wait_for("leave", lambda ctx: ctx.info.user == "tab", timeout=5)
        took = time.monotonic() - started
        await watcher.disconnect()
        assert took < 1.0
        return f"leave {took * 1000:.0f} ms after the tab closed"

    await under_attack(node, attack, "closed SSE tab")


async def test_stomp_transaction_flood(node):
    """3. 4000 x 60 KB SENDs in one transaction: ERROR at the byte bound, RSS flat."""

    async def attack() -> str:
        before = node.rss_mib()
        ws = await raw_clients.stomp_websocket(node.port, token("tx"), ("board:tx",))
        ws.send("BEGIN\ntransaction:t\n\n\x00")
        body = orjson.dumps(BIG).decode()
        error = b""
        for n in range(4000):  # each SEND waits for its answer: the attacker reads along
            ws.send(f"SEND\ndestination:/topic/board:tx\ntransaction:t\nreceipt:r{n}\n\n{body}\x00")
            answer = await ws.receive()
            if answer.startswith(b"ERROR"):
                error = answer
                break
        grew = node.rss_mib() - before
        assert b"limit exceeded" in error, error[:200]
        assert grew < 30, f"RSS grew {grew:.1f} MiB"
        said = error.split(b"message:")[1].split(b"\n")[0].decode()
        return f"ERROR {said!r}, RSS +{grew:.1f} MiB"

    await under_attack(node, attack, "STOMP transaction flood")


async def test_stomp_subscription_ids(node):
    """4. Thousands of ids on one channel: refused at client.max_subscriptions."""

    async def attack() -> str:
        ws = await raw_clients.stomp_websocket(node.port, token("ids"))
        frames = "".join(
            f"SUBSCRIBE\nid:s{n}\ndestination:/topic/board:ids\n\n\x00" for n in range(150)
        )
        ws.send(frames)
        async with asyncio.timeout(10):
            while not (payload := await ws.receive()).startswith(b"ERROR"):
                pass
        assert b"too many subscriptions" in payload
        return "ERROR 'limit exceeded: too many subscriptions' at id 129"

    await under_attack(node, attack, "STOMP subscription ids")


async def test_unknown_command_names_do_not_grow_metrics(node):
    """5. Client-chosen method names never become metric labels."""

    async def attack() -> str:
        async with node.session.get(node.url + "/metrics") as response:
            before = len(await response.read())
        for batch in range(20):
            ws = await raw_clients.centrifugo_websocket(node.port, token("m"))
            names = "\n".join(
                orjson.dumps({"id": n + 2, f"bogus_{batch}_{n}": {}}).decode() for n in range(150)
            )
            ws.send(names)
            await ws.receive_until(raw_clients.centrifugo_reply(151))
            ws.abort()
        async with node.session.get(node.url + "/metrics") as response:
            text = await response.text()
        assert "bogus" not in text
        assert len(text) < before + 20_000
        return f"3000 names: /metrics {before} → {len(text)} bytes"

    await under_attack(node, attack, "unknown command names")


async def test_secure_defaults(node):
    """6. Another site's page, a closed namespace's '#self' channel, a pipelined flood."""

    async def attack() -> str:
        async with node.session.get(
            node.process.ws_url.replace("ws://", "http://"),
            headers={
                "Origin": EVIL,
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode(),
                "Sec-WebSocket-Version": "13",
            },
        ) as response:
            assert response.status == 403
        ws = await raw_clients.centrifugo_websocket(node.port, token("me"))
        ws.send(orjson.dumps({"id": 9, "subscribe": {"channel": "closed:x#me"}}))
        reply = orjson.loads(await ws.receive_until(raw_clients.centrifugo_reply(9)))
        assert reply["error"]["code"] == 103
        ws.send("\n".join(orjson.dumps({"id": n, "ping": {}}).decode() for n in range(10, 5010)))
        with contextlib.suppress(ConnectionResetError):  # closed with our flood unread
            await ws.closed()
        return "cross-site handshake 403, closed:x#me 103, 5000 pipelined pings cut at the rate"

    await under_attack(node, attack, "secure defaults")


async def test_websocket_ping_frame_flood(node):
    """6b. A flood of WebSocket control pings costs their parsing, not a pong each."""

    async def attack() -> str:
        ws = await raw_clients.centrifugo_websocket(node.port, token("pinger"))
        for _ in range(50):
            for _ in range(200):
                ws.send(b"p", opcode=9)
            await ws.writer.drain()
        ws.abort()
        return "10,000 pings sent"

    await under_attack(node, attack, "WebSocket ping flood")


async def test_xmpp_chat_to_a_stranger(node):
    """7. XMPP chat reaches contacts only."""

    class Server:  # what the BOSH test client needs of a server
        url = node.url
        session = node.session

    async def attack() -> str:
        mallory = Bosh(Server)
        await mallory.login(token("mallory"), "mallory")
        victim = Bosh(Server)
        await victim.login(token("victim", channels=["team:1"]), "victim")
        await mallory.send(message(f"victim@{DOMAIN}", "spam", id_="m1"))
        stanza = await mallory.wait_for(lambda s: s.get("id") == "m1")
        assert error_of(stanza) == ("cancel", "service-unavailable"), stanza
        return "chat to a non-contact: service-unavailable"

    await under_attack(node, attack, "XMPP chat to a stranger")


async def test_admin_password_guessing(node):
    """8. Login throttled: guesses beyond the free few get 429 without a check."""

    async def attack() -> str:
        statuses = []
        for n in range(60):
            async with node.session.post(
                node.url + "/admin/login",
                json={"password": f"guess-{n}"},
                headers={"Origin": node.url},
            ) as response:
                statuses.append(response.status)
        assert statuses.count(429) >= 50, statuses
        return f"60 guesses: {statuses.count(401)} checked, {statuses.count(429)} refused (429)"

    await under_attack(node, attack, "admin password guessing")


async def test_log_injection(node):
    """9. A client-supplied string cannot forge a log line."""

    async def attack() -> str:
        forged = "x%0A2026-01-01 00:00:00,000 WARNING pushgate.admin: FORGED"
        async with node.session.post(f"{node.url}/api/{forged}", json={}) as response:
            assert response.status in (401, 404)
        ws = await raw_clients.centrifugo_websocket(node.port, token("inj"))
        ws.send('{"id": 2, "subscribe": {"channel": "nope\\nFORGED line:1"}}')
        await ws.receive_until(raw_clients.centrifugo_reply(2))
        lines = node.process.log_path.read_text(errors="replace").splitlines()
        assert not [line for line in lines if "FORGED" in line.split(" ", 3)[:3]]
        assert not [line for line in lines if line.startswith(("2026-01-01", "FORGED"))]
        return "newlines in an API path and a channel name logged as escapes"

    await under_attack(node, attack, "log injection")


async def test_deeply_nested_data(node):
    """10. 1000 levels of nesting: error 107, no traceback."""

    async def attack() -> str:
        body = b'{"channel": "board:deep", "data": ' + b"[" * 1000 + b"]" * 1000 + b"}"
        reply = await node.api("publish", body)
        assert reply["error"]["code"] == 107, reply
        assert "Traceback" not in node.process.log()
        return f"error {reply['error']['code']}: {reply['error']['message'][:60]}"

    await under_attack(node, attack, "deeply nested data")
