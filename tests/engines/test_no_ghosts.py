"""No ghosts: when a node dies, the cluster says its users left — once — and a node that
comes back does not bring them back.

Real processes over the real Redis: a node (``pushgate serve``) killed with SIGKILL,
one frozen with SIGSTOP and thawed, and a worker of ``pushgate serve --workers 2``
killed with SIGKILL. Bob is connected to the victim; the watchers are on a surviving
node: centrifuge-python (a leave push in ``team:7``), @stomp/stompjs in Node (bob's
status channel ``status:bob`` says offline), and strophe.js in chromium over BOSH (bob's
XMPP presence goes unavailable). Each must see bob go exactly once, within
``node_ttl`` + 2 s of the kill.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest

pytest.register_assert_rewrite("browser")
pytest_plugins = ["browser"]

from browser import html_page, js  # noqa: E402

from tests.centrifuge_helpers import (  # noqa: E402
    NodeProcess,
    Recorder,
    clients_fixture,  # noqa: F401
    subscribed,
    wait_until,
)
from tests.conftest import BASE_CONFIG, REDIS_URL  # noqa: E402
from tests.e2e.test_stompjs import StompJsClient  # noqa: E402
from tests.e2e.test_stompjs import stompjs as stompjs  # noqa: E402 (the fixture)
from tests.e2e.test_workers import Cluster, worker_pid  # noqa: E402

HEARTBEAT, NODE_TTL = 0.5, 2.0
DOMAIN = "pushgate.test"
TEAM = """
[[namespace]]
name = "team"
presence = true
join_leave = true
force_push_join_leave = true
allow_subscribe_for_client = true
[[namespace]]
name = "status"
allow_subscribe_for_client = true
[xmpp]
domain = "pushgate.test"
"""


def cluster_config(tmp_path: Path, prefix: str, origin: str = "") -> Path:
    """BASE_CONFIG on the redis engine, with the team and status namespaces."""
    engine = (
        "[engine]\n"
        'type = "redis"\n'
        f'redis_url = "{REDIS_URL}"\n'
        f'redis_prefix = "{prefix}"\n'
        f'node_heartbeat = "{HEARTBEAT}s"\n'
        f'node_ttl = "{NODE_TTL}s"\n'
    )
    text = BASE_CONFIG.replace('[engine]\ntype = "memory"\n', engine)
    text = text.replace(
        "offline_delay = 0\n", 'offline_delay = "0.3s"\nstatus_namespace = "status"\n'
    )
    if origin:
        text = f"[server]\nallowed_origins = [{json.dumps(origin)}]\n" + text
    path = tmp_path / "cluster.toml"
    path.write_text(text + TEAM)
    return path


class Node(NodeProcess):
    """A node process the test can also freeze (SIGSTOP) and thaw (SIGCONT)."""

    def token(self, user: str, **claims: object) -> str:
        from pushgate.auth import mint_connection_token
        from tests.conftest import SECRET

        return mint_connection_token(SECRET, user, ttl=3600, **claims)

    def freeze(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


def leaves_of(recorder: Recorder, client_id: str) -> list:
    return [ctx for ctx in recorder.of("leave") if ctx.info.client == client_id]


STROPHE = """
const S = globalThis.Strophe;
window.login = (who, token) => {
  const conn = new S.Connection(SERVICE, {mechanisms: [S.SASLPlain]});
  conn.addHandler(p => {
    report("presence", {from: p.getAttribute("from"), ptype: p.getAttribute("type")});
    return true;
  }, null, "presence");
  conn.connect(`${who}@${DOMAIN}/web`, token, status => {
    if (status === S.Status.CONNECTED) { report("connected", {}); conn.send(globalThis.$pres()); }
  });
};
"""


async def test_a_killed_node_s_users_leave_once_for_every_kind_of_watcher(
    tmp_path, redis_prefix, make_server, clients, stompjs, pages, page
):
    from pushgate.config import load_config

    config_path = cluster_config(tmp_path, redis_prefix, origin=pages.origin)
    survivor = await make_server(load_config(str(config_path), env={}))
    victim = Node(config_path, tmp_path / "victim.log")
    await victim.start()
    try:
        # the watchers, on the surviving node
        watcher, _ = clients(survivor, "alice")
        await watcher.connect()
        _, seen = await subscribed(watcher, "team:7", join_leave=True)
        stomp: StompJsClient = await stompjs("carol")
        ws_url = survivor.url.replace("http://", "ws://") + "/stomp"
        assert (await stomp.stomp_connect(ws_url, survivor.token("carol")))["event"] == "connected"
        await stomp.stomp_subscribe("/topic/status:bob", "status")
        consts = (
            f"const SERVICE = {js(survivor.url + '/http-bind')};\nconst DOMAIN = {js(DOMAIN)};\n"
        )
        pages.add("/xmpp.html", html_page(consts + STROPHE, scripts=["/strophe.js"]))
        await page.goto(pages.url("/xmpp.html"))
        await page.evaluate(
            f"window.login('dave', {js(survivor.token('dave', channels=['team:7']))})"
        )
        await page.wait_for_report("connected")

        # bob, on the node that will die: a Centrifugo client in team:7
        bob, _ = clients(victim, "bob", token=victim.token("bob"))
        await bob.connect()
        await subscribed(bob, "team:7")
        joined = await seen.wait_for("join", lambda c: c.info.user == "bob")
        bob_client = joined.info.client
        bob_jid = f"bob@{DOMAIN}"
        await page.wait_for_report(
            "presence", where=lambda e: e["from"].startswith(bob_jid) and e["ptype"] is None
        )
        await stomp.wait(
            lambda e: e["event"] == "message" and json.loads(e["body"])["status"] == "active"
        )

        victim.kill()
        killed = time.monotonic()
        left = await seen.wait_for("leave", lambda c: c.info.client == bob_client, timeout=10)
        assert left.info.user == "bob"
        assert time.monotonic() - killed <= NODE_TTL + 2
        gone = await page.wait_for_report(
            "presence",
            where=lambda e: e["from"].startswith(bob_jid) and e["ptype"] == "unavailable",
        )
        assert gone
        offline = await stomp.wait(
            lambda e: e["event"] == "message" and json.loads(e["body"])["status"] == "offline"
        )
        assert json.loads(offline["body"])["user"] == "bob"
        assert time.monotonic() - killed <= NODE_TTL + 2
        status = (await survivor.api("user_status", {"users": ["bob"]}))["result"]["statuses"][0]
        assert status["online"] is False
        presence = (await survivor.api("presence", {"channel": "team:7"}))["result"]["presence"]
        assert bob_client not in presence

        # the same port again: a new node (new id); nothing of the old one comes back
        await victim.start()
        await asyncio.sleep(NODE_TTL)  # a resurrection would have shown by now
        assert len(leaves_of(seen, bob_client)) == 1
        unavailable = [
            e
            for e in page.reports_of("presence")
            if e["from"].startswith(bob_jid) and e["ptype"] == "unavailable"
        ]
        assert len(unavailable) == 1
        presence = (await survivor.api("presence", {"channel": "team:7"}))["result"]["presence"]
        assert bob_client not in presence
        offline_messages = stomp.matching(
            lambda e: e["event"] == "message" and json.loads(e["body"])["status"] == "offline"
        )
        assert len(offline_messages) == 1
    finally:
        victim.stop()


async def test_a_frozen_node_that_comes_back_does_not_resurrect_its_users(
    tmp_path, redis_prefix, make_server, clients
):
    from pushgate.config import load_config

    config_path = cluster_config(tmp_path, redis_prefix)
    survivor = await make_server(load_config(str(config_path), env={}))
    victim = Node(config_path, tmp_path / "victim.log")
    await victim.start()
    try:
        watcher, _ = clients(survivor, "alice")
        await watcher.connect()
        _, seen = await subscribed(watcher, "team:7", join_leave=True)
        bob, bob_events = clients(victim, "bob", token=victim.token("bob"))
        await bob.connect()
        await subscribed(bob, "team:7")
        first = (await seen.wait_for("join", lambda c: c.info.user == "bob")).info.client

        victim.freeze()  # as a node stuck in a long pause or cut off by the network
        frozen = time.monotonic()
        await seen.wait_for("leave", lambda c: c.info.client == first, timeout=10)
        assert time.monotonic() - frozen <= NODE_TTL + 2
        victim.thaw()
        # it finds itself declared dead: its connections are closed (3020) and come
        # back as new ones, announced afresh — the old one is never announced again
        closed = await bob_events.wait_for("connecting", lambda c: c.code == 3020, timeout=10)
        assert closed.reason == "node lost"
        again = await seen.wait_for(
            "join", lambda c: c.info.user == "bob" and c.info.client != first, timeout=10
        )
        await asyncio.sleep(HEARTBEAT * 2)
        assert len(leaves_of(seen, first)) == 1
        presence = (await survivor.api("presence", {"channel": "team:7"}))["result"]["presence"]
        assert set(presence) == {again.info.client, next(iter(_own(presence, "alice")))}
        status = (await survivor.api("user_status", {"users": ["bob"]}))["result"]["statuses"][0]
        assert status["online"] is True
        assert "was found dead" in victim.log()
    finally:
        victim.stop()


def _own(presence: dict, user: str) -> list[str]:
    return [client for client, info in presence.items() if info["user"] == user]


class Endpoint:
    """What the ``clients`` fixture needs of a server: its WebSocket URL and tokens."""

    def __init__(self, url: str) -> None:
        self.ws_url = url.replace("http", "ws", 1) + "/connection/websocket"

    def token(self, user: str) -> str:
        return Node.token(None, user)  # type: ignore[arg-type]


async def test_a_killed_worker_s_users_leave_once(tmp_path, redis_prefix, clients):
    cluster = Cluster(cluster_config(tmp_path, redis_prefix), 2, tmp_path / "serve.log")
    try:
        nodes = await cluster.wait_nodes(lambda nodes: len(nodes) == 2)
        bob_ws, bob_node = await cluster.connect("bob")  # raw: its connect reply names its worker
        other = next(node["uid"] for node in nodes if node["uid"] != bob_node)
        # watchers until one lands on the other worker (SO_REUSEPORT spreads them); the
        # ones before it are on bob's
        for n in range(30):
            watcher, events = clients(Endpoint(cluster.url), f"watcher{n}")
            await watcher.connect()
            _, seen = await subscribed(watcher, "team:7", join_leave=True)
            counts = await cluster.wait_nodes(
                lambda nodes, n=n: sum(node["num_clients"] for node in nodes) == n + 2, timeout=5
            )
            if next(node["num_clients"] for node in counts if node["uid"] == other):
                break
        else:
            raise AssertionError("no watcher reached the other worker")
        await bob_ws.send_str(json.dumps({"id": 3, "subscribe": {"channel": "team:7"}}))
        bob_client = (await seen.wait_for("join", lambda c: c.info.user == "bob")).info.client

        victim = next(node for node in nodes if node["uid"] == bob_node)
        os.kill(worker_pid(victim), signal.SIGKILL)
        killed = time.monotonic()
        await seen.wait_for("leave", lambda c: c.info.client == bob_client, timeout=10)
        assert time.monotonic() - killed <= NODE_TTL + 2

        async def offline() -> bool:
            status = await cluster.api("user_status", {"users": ["bob"]})
            return status["statuses"][0]["online"] is False

        await wait_until(offline, NODE_TTL + 2 - (time.monotonic() - killed), "bob offline")
        await asyncio.sleep(HEARTBEAT * 2)  # a second leave would have come by now
        assert len(leaves_of(seen, bob_client)) == 1
        assert not events.of("disconnected") and len(events.of("connecting")) == 1
    finally:
        await cluster.close()
