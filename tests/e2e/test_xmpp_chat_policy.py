"""Who an XMPP user may reach, and as whom: chat only to online contacts (one node and
two nodes over Redis), the chat rate limit and the flood that ends the stream, room
nicks locked to the user name as every reader sees them (XMPP and centrifuge-python),
and chat kept out of the recipient's web app (centrifuge-js) unless the option lets it in.
"""

from __future__ import annotations

import logging

import pytest

from pushgate.metrics import LIMIT_HITS
from tests.centrifuge_helpers import clients_fixture, subscribed  # noqa: F401
from tests.e2e.test_centrifuge_js import NODE, TESTS, JsClient
from tests.xmpp_helpers import DOMAIN, Bosh, chat_from, error_of, message

MUC = f"conference.{DOMAIN}"
CONFIG = f"""
[[namespace]]
name = "team"
presence = true
join_leave = true
[[namespace]]
name = "room"
allow_subscribe_for_client = true
allow_publish_for_subscriber = true
[xmpp]
domain = "{DOMAIN}"
bosh_wait = "1s"
"""


def hits(limit: str) -> float:
    return LIMIT_HITS.labels(limit)._value.get()


def with_id(msg_id: str):
    return lambda s: s.get("id") == msg_id


def presence_from(jid: str, ptype: str = ""):
    return lambda s: s.name == "presence" and s.get("from") == jid and s.get("type") == ptype


async def online(
    server, user: str, channels: list[str], resource: str = "r1", available: bool = True
) -> Bosh:
    """A logged-in XMPP user who sent initial presence (unless not ``available``: then
    the session has seen no contact online, and its chats are checked in presence)."""
    client = Bosh(server)
    await client.login(server.token(user, channels=channels), user, resource)
    if available:
        await client.available()
    return client


@pytest.fixture
async def xserver(make_server, server_config):
    return await make_server(server_config(CONFIG))


@pytest.fixture
async def web_app():
    """A centrifuge-js client in Node: what the user's web app runs."""
    client = JsClient("web-app")
    await client.start()
    yield client
    await client.close()


async def test_chat_goes_only_to_online_contacts(xserver, caplog):
    caplog.set_level(logging.INFO, logger="pushgate.xmpp")
    alice = await online(xserver, "alice", ["team:7"])
    bob = await online(xserver, "bob", ["team:7"], resource="phone")
    mallory = await online(xserver, "mallory", ["team:9"])

    # mallory shares no team with alice: refused, as for a user who is not there
    await mallory.send(message(f"alice@{DOMAIN}", "buy now", id_="m1"))
    refused = await mallory.wait_for(with_id("m1"))
    assert error_of(refused) == ("cancel", "service-unavailable")
    assert refused.get("from") == f"alice@{DOMAIN}"
    assert f"chat to alice@{DOMAIN} refused" in caplog.text

    # teammates chat both ways
    await bob.send(message(f"alice@{DOMAIN}", "hi alice"))
    await alice.wait_for(chat_from(f"bob@{DOMAIN}/phone", "hi alice"))
    await alice.send(message(f"bob@{DOMAIN}", "hi bob"))
    await bob.wait_for(chat_from(f"alice@{DOMAIN}/r1", "hi bob"))
    # (mallory's message was sent before bob's: had it been delivered, it would be here)
    assert not alice.received(lambda s: s.find_text("body") == "buy now")
    # teammates whose clients have not sent presence (nor seen anyone online) too
    carol = await online(xserver, "carol", ["team:7"], available=False)
    await carol.send(message(f"bob@{DOMAIN}", "hi from carol"))
    await bob.wait_for(chat_from(f"carol@{DOMAIN}/r1", "hi from carol"))
    erin = await online(xserver, "erin", ["team:7"], available=False)
    await carol.send(message(f"erin@{DOMAIN}", "hi erin"))
    await erin.wait_for(chat_from(f"carol@{DOMAIN}/r1", "hi erin"))

    # a full JID of a resource bob does not have: a chat goes to his bare JID, a
    # normal message is not delivered (RFC 6121 §8.5.3.2.1)
    await alice.send(message(f"bob@{DOMAIN}/laptop", "to the laptop"))
    await bob.wait_for(chat_from(f"alice@{DOMAIN}/r1", "to the laptop"))
    await alice.send(message(f"bob@{DOMAIN}/laptop", "note", type_="normal", id_="n1"))
    assert error_of(await alice.wait_for(with_id("n1"))) == ("cancel", "service-unavailable")

    # bob goes offline: nothing is stored, alice is told so
    await bob.send('<presence xmlns="jabber:client" type="unavailable"/>', type="terminate")
    await alice.wait_for(presence_from(f"bob@{DOMAIN}/phone", "unavailable"))
    await alice.send(message(f"bob@{DOMAIN}", "are you there?", id_="m2"))
    assert error_of(await alice.wait_for(with_id("m2"))) == ("cancel", "service-unavailable")


async def test_chat_rate_limit_and_flood(make_server, server_config):
    xserver = await make_server(server_config(CONFIG + "chat_per_second = 1\nchat_burst = 3\n"))
    alice = await online(xserver, "alice", ["team:7"])
    bob = await online(xserver, "bob", ["team:7"])
    before = hits("xmpp_chat")

    # five at once: the bucket holds three
    await alice.send("".join(message(f"bob@{DOMAIN}", f"n{n}", id_=f"c{n}") for n in range(5)))
    for n in (3, 4):
        refused = await alice.wait_for(with_id(f"c{n}"))
        assert error_of(refused) == ("wait", "resource-constraint")
    await bob.wait_for(chat_from(f"alice@{DOMAIN}/r1", "n2"))
    got = [s.find_text("body") for s in bob.received(chat_from(f"alice@{DOMAIN}/r1"))]
    assert got == ["n0", "n1", "n2"]
    assert hits("xmpp_chat") - before == 2

    # a flood (ten refusals in a row) ends the stream; the server goes on
    await alice.send("".join(message(f"bob@{DOMAIN}", f"f{n}") for n in range(15)))
    if alice.terminated is None:
        await alice.send()
    assert alice.terminated == "remote-stream-error"
    stream_error = alice.received(lambda s: s.name == "error")[-1]
    assert stream_error.find("policy-violation") is not None
    carol = await online(xserver, "carol", ["team:7"])
    await carol.send(message(f"bob@{DOMAIN}", "still here"))
    await bob.wait_for(chat_from(f"carol@{DOMAIN}/r1", "still here"))


async def test_room_nick_is_the_user_name_for_every_reader(xserver, clients):
    room = f"board1@{MUC}"
    alice = await online(xserver, "alice", [])
    carol = await online(xserver, "carol", [])
    dave, _ = clients(xserver, "dave")
    await dave.connect()
    dave_sub, dave_events = await subscribed(dave, "room:board1")

    # alice asks to be "bob" in the room: she is alice, and told so (status 210)
    await alice.send(
        f'<presence xmlns="jabber:client" to="{room}/bob">'
        '<x xmlns="http://jabber.org/protocol/muc"/></presence>'
    )
    joined = await alice.wait_for(lambda s: s.name == "presence" and room in s.get("from"))
    assert joined.get("from") == f"{room}/alice"
    codes = {c.get("code") for c in joined.find("x").children if c.name == "status"}
    assert codes == {"110", "210"}
    await carol.send(f'<presence xmlns="jabber:client" to="{room}/carol"/>')
    await carol.wait_for(presence_from(f"{room}/carol"))

    # what she writes comes from alice, for XMPP readers and for centrifuge ones
    await alice.send(message(room, "I am bob", type_="groupchat"))
    said = await carol.wait_for(lambda s: s.find_text("body") == "I am bob")
    assert (said.get("type"), said.get("from")) == ("groupchat", f"{room}/alice")
    pub = await dave_events.wait_for("publication", lambda c: c.pub.data["body"] == "I am bob")
    assert pub.pub.info.user == "alice"
    assert (pub.pub.data["from"], pub.pub.data["nick"]) == ("alice", "alice")

    # nor can she become bob later
    await alice.send(f'<presence xmlns="jabber:client" to="{room}/bob" id="p2"/>')
    refused = await alice.wait_for(with_id("p2"))
    assert refused.name == "presence"
    assert error_of(refused) == ("cancel", "not-acceptable")

    # a centrifuge publisher's "nick" is not what XMPP readers see either
    await dave_sub.publish({"body": "I am bob too", "nick": "bob", "from": "bob"})
    said = await carol.wait_for(lambda s: s.find_text("body") == "I am bob too")
    assert said.get("from") == f"{room}/dave"


@pytest.mark.skipif(
    NODE is None or not (TESTS / "node_modules" / "centrifuge").is_dir(),
    reason="needs node and tests/node_modules (make tests/node_modules/.stamp-install)",
)
@pytest.mark.parametrize("forward", [False, True], ids=["default", "chat_to_other_dialects"])
async def test_chat_reaches_the_web_app_only_when_allowed(
    make_server, server_config, web_app, forward
):
    option = "chat_to_other_dialects = true\n" if forward else ""  # off by default
    server = await make_server(server_config(CONFIG + option))
    web = web_app
    await web.connect(server.ws_url, token=server.token("bob", channels=["team:7"]))
    alice = await online(server, "alice", ["team:7"])
    alice_jid = f"alice@{DOMAIN}/r1"

    if not forward:
        # bob is online only in the web app: XMPP chat cannot reach him
        await alice.send(message(f"bob@{DOMAIN}", "anyone?", id_="w1"))
        assert error_of(await alice.wait_for(with_id("w1"))) == ("cancel", "service-unavailable")

    bob = await online(server, "bob", ["team:7"], resource="phone")
    # the 'from' alice writes is ignored: the session knows who she is
    await alice.send(
        f'<message xmlns="jabber:client" to="bob@{DOMAIN}" from="ceo@{DOMAIN}/x" '
        'type="chat" id="m1"><body>hello</body></message>'
    )
    await bob.wait_for(chat_from(alice_jid, "hello"))
    # a chat to bob's XMPP resource is for that resource only
    await alice.send(message(f"bob@{DOMAIN}/phone", "phone only"))
    await bob.wait_for(chat_from(alice_jid, "phone only"))

    # the backend's own message comes after: what the web app got before it is all
    await server.api("send", {"user": "bob", "data": {"from": "backend"}})
    await web.wait(lambda e: e["event"] == "message" and e["data"] == {"from": "backend"})
    chats = [e["data"] for e in web.events if e["event"] == "message"][:-1]
    if forward:
        assert chats == [
            {
                "xmpp": "chat",
                "type": "chat",
                "from": alice_jid,
                "user": "alice",
                "body": "hello",
                "id": "m1",
            }
        ]
    else:
        assert chats == []


async def test_contacts_are_checked_across_nodes(redis_config, make_server):
    node_a = await make_server(redis_config(CONFIG))
    node_b = await make_server(redis_config(CONFIG))
    alice = await online(node_a, "alice", ["team:7"])
    bob = await online(node_b, "bob", ["team:7"])
    mallory = await online(node_b, "mallory", ["team:9"])

    await alice.send(message(f"bob@{DOMAIN}", "across nodes"))
    await bob.wait_for(chat_from(f"alice@{DOMAIN}/r1", "across nodes"))
    await mallory.send(message(f"alice@{DOMAIN}", "buy now", id_="m1"))
    assert error_of(await mallory.wait_for(with_id("m1"))) == ("cancel", "service-unavailable")
    await bob.send(message(f"alice@{DOMAIN}", "back"))
    await alice.wait_for(chat_from(f"bob@{DOMAIN}/r1", "back"))
    assert not alice.received(lambda s: s.find_text("body") == "buy now")
    # a sender who has seen no contact online: the check reads node B's presence
    dave = await online(node_a, "dave", ["team:7"], available=False)
    await dave.send(message(f"bob@{DOMAIN}", "from dave"))
    await bob.wait_for(chat_from(f"dave@{DOMAIN}/r1", "from dave"))

    # bob leaves node B: node A knows he is offline
    await bob.send('<presence xmlns="jabber:client" type="unavailable"/>', type="terminate")
    await alice.wait_for(presence_from(f"bob@{DOMAIN}/r1", "unavailable"))
    await alice.send(message(f"bob@{DOMAIN}", "gone?", id_="m2"))
    assert error_of(await alice.wait_for(with_id("m2"))) == ("cancel", "service-unavailable")
    await dave.send(message(f"bob@{DOMAIN}", "gone?", id_="m3"))
    assert error_of(await dave.wait_for(with_id("m3"))) == ("cancel", "service-unavailable")
